//! `aloft up`: the main job on a laptop. Uses a running agent if one answers, else starts an
//! embedded one (data dir under the user's state dir); creates the app if needed; deploys the
//! config's directory; prints each service's local URL; follows the logs of every group
//! (prefixed by group and machine, coloured) until Ctrl-C, which stops the app's machines.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use aloft_api::{Machine, MachineState, StopRequest};
use anyhow::{bail, Context};
use futures_util::future::join_all;

use crate::cli::UpArgs;
use crate::client::{is_not_found, Client};
use crate::commands::common::{load_config, DeployFlags};
use crate::commands::deploy::{deploy, DeployInput};
use crate::commands::logs::format_line;

pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_config(&args.app.config)?;
    let app = args
        .app
        .app
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| loaded.config.app.clone());
    if app.is_empty() {
        bail!(
            "{} has no `app` name; add `app = \"my-app\"` or pass -a APP",
            args.app.config.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async move {
        let (client, embedded) = connect(&args, &privileged_ports(&loaded.config)).await?;
        if let Err(e) = client.get_app(&app).await {
            if !is_not_found(&e) {
                return Err(e);
            }
            client.create_app(&app, "personal").await?;
            println!("Created app {app}");
        }
        let input = DeployInput {
            config_path: args.app.config.clone(),
            loaded,
            app: app.clone(),
            flags: DeployFlags { ha: false, ..DeployFlags::default() },
            process_groups: Vec::new(),
            yes: args.yes,
            detach: false,
            image: None,
        };
        let deployed = deploy(&client, &input).await;
        let code = match deployed {
            Ok(Some(_)) => {
                print_urls(&client, &app).await?;
                if args.detach {
                    if embedded.is_some() {
                        eprintln!("note: the embedded agent stops with this command; run `aloft agent` to keep machines supervised");
                    }
                    ExitCode::SUCCESS
                } else {
                    follow_logs(&client, &app).await?;
                    stop_all(&client, &app).await?;
                    ExitCode::SUCCESS
                }
            }
            Ok(None) => ExitCode::FAILURE,
            Err(e) => {
                if let Some(handle) = embedded {
                    handle.shutdown().await;
                }
                return Err(e);
            }
        };
        if let Some(handle) = embedded {
            handle.shutdown().await;
        }
        Ok(code)
    })
}

/// A client of the running agent, or of an embedded one started now.
async fn connect(
    args: &UpArgs,
    map_to_free: &[u16],
) -> anyhow::Result<(Client, Option<aloft_agent::AgentHandle>)> {
    let client = Client::from_env();
    if tokio::time::timeout(Duration::from_secs(2), client.list_apps())
        .await
        .is_ok_and(|r| r.is_ok())
    {
        println!("Using the agent at {}", client.base_url());
        return Ok((client, None));
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(aloft_agent::default_data_dir);
    let mut config = aloft_agent::AgentConfig::new(&data_dir);
    config.listen = "127.0.0.1:0".parse().expect("constant address");
    if let Some(proxy) = config.proxy.as_mut() {
        // A laptop: serve on loopback, and put ports below 1024 (80, 443) on free local ports.
        proxy.bind_ip = std::net::Ipv4Addr::LOCALHOST.into();
        proxy.port_map = map_to_free.iter().map(|p| (*p, 0)).collect();
    }
    let handle = aloft_agent::Agent::start(config)
        .await
        .context("starting an embedded agent")?;
    println!(
        "Started an embedded agent at {} (data dir {})",
        handle.url(),
        data_dir.display()
    );
    let client = Client::new(handle.url(), Some(handle.token.clone()));
    Ok((client, Some(handle)))
}

/// External service ports of the app below 1024: `aloft up` serves them on free local ports.
fn privileged_ports(config: &aloft_config::AppConfig) -> Vec<u16> {
    let mut ports: Vec<u16> = config
        .process_names()
        .iter()
        .flat_map(|g| config.machine_config_for(g).services)
        .flat_map(|s| s.ports.into_iter().flat_map(|p| p.external_ports()))
        .filter(|p| *p < 1024)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The app's service URLs through the proxy, and the machines behind each group.
async fn print_urls(client: &Client, app: &str) -> anyhow::Result<()> {
    let ports = match client.proxy_ports().await {
        Ok(ports) => ports,
        Err(e) if is_not_found(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    for p in ports.iter().filter(|p| p.app == app) {
        let has = |h: &str| p.handlers.iter().any(|x| x == h);
        let scheme = match (has("http"), has("tls")) {
            (true, true) => "https",
            (true, false) => "http",
            (false, true) => "tls",
            (false, false) => "tcp",
        };
        match (&p.listen, &p.error) {
            (Some(addr), _) => {
                let local = addr.rsplit(':').next().unwrap_or(addr);
                lines.push(format!(
                    "  {scheme}://127.0.0.1:{local}  (service port {})",
                    p.port
                ));
            }
            (None, Some(err)) => lines.push(format!("  port {}: not served: {err}", p.port)),
            (None, None) => {}
        }
    }
    if !lines.is_empty() {
        println!("Services:\n{}", lines.join("\n"));
    }
    let machines = client.list_machines(app).await?;
    let mut groups: Vec<String> = machines
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .map(|m| format!("  {:<10} {}", m.process_group(), m.id))
        .collect();
    groups.sort();
    if !groups.is_empty() {
        println!("Machines:\n{}", groups.join("\n"));
    }
    Ok(())
}

async fn follow_logs(client: &Client, app: &str) -> anyhow::Result<()> {
    println!("Following logs of every group; Ctrl-C stops the app's machines.");
    let colour = std::io::stdout().is_terminal();
    let query = vec![("follow", "true".to_string())];
    let logs = client.logs(app, &query, |l| {
        println!("{}", format_line(&l, colour));
        true
    });
    tokio::select! {
        r = logs => r?,
        _ = tokio::signal::ctrl_c() => println!(),
    }
    Ok(())
}

/// Stops every started machine of the app and waits until they are stopped.
async fn stop_all(client: &Client, app: &str) -> anyhow::Result<()> {
    let machines = client.list_machines(app).await?;
    let running: Vec<&Machine> = machines
        .iter()
        .filter(|m| {
            matches!(
                m.state,
                MachineState::Started | MachineState::Starting | MachineState::Restarting
            )
        })
        .collect();
    let results = join_all(running.iter().map(|m| async move {
        client
            .stop_machine(app, &m.id, &StopRequest::default())
            .await?;
        client
            .wait_machine(app, &m.id, MachineState::Stopped, Duration::from_secs(60))
            .await
    }))
    .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    println!(
        "Stopped {} machine(s) of {app}",
        running.len() - failed.len()
    );
    if !failed.is_empty() {
        bail!("some machines did not stop: {}", failed.join("; "));
    }
    Ok(())
}
