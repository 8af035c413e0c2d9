//! `aloft up`: the main job on a laptop. Uses a running agent if one answers, else starts an
//! embedded one (data dir under the user's state dir); creates the app if needed; deploys the
//! config's directory; starts the app's machines a previous `up` stopped; prints each service's
//! local URL; follows the logs of every group (prefixed by group and machine, coloured) until
//! Ctrl-C or SIGTERM, which stops the app's machines (a second one quits without waiting).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use aloft_api::{Machine, MachineState, ProxyPort, StopRequest};
use anyhow::{bail, Context as _};
use futures_util::future::join_all;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::commands::deploy::deploy;
use crate::commands::logs::format_line;
use crate::commands::Context;
use crate::printer::Printer;
use crate::settings::{ApiSettings, UpSettings};
use aloft_client::{is_not_found, status_error, Client, StatusCode};

/// Exit code after a second Ctrl-C (128 + SIGINT, what a shell reports for an interrupted job).
const INTERRUPTED: u8 = 130;
/// How long `up` waits for the proxy to bind the app's service ports before printing URLs.
const PORTS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `up` waits for machines it starts or stops.
const MACHINE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(settings: UpSettings, ctx: &Context) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async move {
        let ports = service_ports(&settings.deploy.loaded.config);
        let privileged: Vec<u16> = ports.iter().copied().filter(|p| *p < 1024).collect();
        let (client, embedded) = connect(&settings, &privileged, printer).await?;
        let result = up(&client, &settings, &ports, printer).await;
        if let Some(handle) = embedded {
            // Machines are stopped by now (or die with this process: PR_SET_PDEATHSIG).
            handle.shutdown().await;
        }
        result
    })
}

/// Everything after the agent is known: app, deploy, start, URLs, logs, stop.
async fn up(
    client: &Client,
    settings: &UpSettings,
    ports: &[u16],
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let app = settings.deploy.app.as_str();
    if let Err(e) = client.get_app(app).await {
        if !is_not_found(&e) {
            return Err(e);
        }
        client.create_app(app, "personal").await?;
        printer.line(format_args!("Created app {app}"));
    }
    // Lines logged before this run (a previous `up`) are not shown again.
    let since = last_log_timestamp(client, app).await;
    if deploy(client, &settings.deploy, printer).await?.is_none() {
        return Ok(ExitCode::FAILURE);
    }
    if settings.detach {
        start_stopped(client, app, printer).await?;
        print_urls(client, app, ports, printer).await?;
        return Ok(ExitCode::SUCCESS);
    }

    // From here on Ctrl-C (and SIGTERM) stop the app's machines instead of killing `up`.
    let mut interrupts = Interrupts::new()?;
    let query = vec![
        ("follow", "true".to_string()),
        // The newest lines, enough to hold every line since `since` (the start of this run).
        ("limit", "10000".to_string()),
    ];
    // A closed stdout (`aloft up | head`) ends the logs like Ctrl-C, instead of a panic.
    let stdout_closed = std::cell::Cell::new(false);
    let logs = client.logs(app, &query, |l| {
        if since.as_deref().is_none_or(|t| l.timestamp.as_str() > t)
            && printer.try_line(format_line(&l, printer)).is_err()
        {
            stdout_closed.set(true);
            return false;
        }
        true
    });
    tokio::pin!(logs);

    let ready = async {
        start_stopped(client, app, printer).await?;
        print_urls(client, app, ports, printer).await?;
        printer.line("Following logs of every group; Ctrl-C stops the app's machines.");
        anyhow::Ok(())
    };
    let interrupted = tokio::select! {
        r = ready => {
            r?;
            false
        }
        () = interrupts.recv() => true,
    };
    let mut logs_open = true;
    if !interrupted {
        tokio::select! {
            r = &mut logs => {
                logs_open = false;
                r.context("following the app's logs")?;
                if !stdout_closed.get() {
                    bail!(
                        "the agent at {} closed the log stream; the app's machines keep running there",
                        client.base_url()
                    );
                }
            }
            () = interrupts.recv() => {}
        }
    }

    printer.line(format_args!(
        "\nStopping the machines of {app} (Ctrl-C again to quit without waiting)"
    ));
    // Keep printing logs while the machines stop: their last words are worth seeing.
    let stop = stop_all(client, app, printer);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => {
                r?;
                return Ok(ExitCode::SUCCESS);
            }
            _ = &mut logs, if logs_open => logs_open = false,
            () = interrupts.recv() => {
                printer.note("Interrupted again: quitting without waiting for the machines to stop");
                return Ok(ExitCode::from(INTERRUPTED));
            }
        }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct Interrupts {
    int: Signal,
    term: Signal,
}

impl Interrupts {
    fn new() -> anyhow::Result<Interrupts> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// A client of the running agent, or of an embedded one started now.
async fn connect(
    settings: &UpSettings,
    map_to_free: &[u16],
    printer: &Printer,
) -> anyhow::Result<(Client, Option<aloft_agent::AgentHandle>)> {
    let api: &ApiSettings = &settings.api;
    let data_dir = api.data_dir.clone();
    let client = api.client(Some(super::pin_notes(printer)))?;
    if answers(&client).await? {
        printer.line(format_args!("Using the agent at {}", client.base_url()));
        return Ok((client, None));
    }
    // A second agent on a data dir would reap the machines of the agent already running on it.
    if let Some(own) = agent_of_data_dir(&data_dir) {
        if own.base_url() != client.base_url() && answers(&own).await.unwrap_or(true) {
            bail!(
                "no agent answers at {}, but one runs on the data dir {} at {}; unset \
                 ALOFT_API_URL to use it, or pass --data-dir to start an embedded agent elsewhere",
                client.base_url(),
                data_dir.display(),
                own.base_url()
            );
        }
    }
    if settings.detach {
        bail!(
            "no agent answers at {}; `aloft up --detach` needs a running agent (start one with \
             `aloft agent`): an embedded agent and its machines stop when `aloft up` exits",
            client.base_url()
        );
    }
    if api.url_from_env {
        printer.line(format_args!(
            "No agent answers at {}; starting an embedded one",
            client.base_url()
        ));
    }
    let mut config = aloft_agent::AgentConfig::new(&data_dir);
    config.listen = "127.0.0.1:0".parse().expect("constant address");
    config.network = settings.network.clone();
    config.secrets_key = settings.secrets_key.clone();
    if let Some(proxy) = config.proxy.as_mut() {
        // A laptop: serve on loopback, and put ports below 1024 (80, 443) on free local ports.
        proxy.bind_ip = std::net::Ipv4Addr::LOCALHOST.into();
        proxy.port_map = map_to_free.iter().map(|p| (*p, 0)).collect();
        proxy.domain = settings.domain.clone();
    }
    let handle = aloft_agent::Agent::start(config).await.with_context(|| {
        format!(
            "starting an embedded agent (data dir {})",
            data_dir.display()
        )
    })?;
    printer.line(format_args!(
        "Started an embedded agent at {} (data dir {})",
        handle.url(),
        data_dir.display()
    ));
    let client = Client::new(handle.url(), Some(handle.token.clone()));
    Ok((client, Some(handle)))
}

/// A client of the address in `<data-dir>/agent.addr` (the last agent started on that data dir).
fn agent_of_data_dir(data_dir: &Path) -> Option<Client> {
    use aloft_api::local::{ADDR_FILE, TOKEN_FILE};
    let read = |f: &str| {
        std::fs::read_to_string(data_dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let addr = read(ADDR_FILE)?;
    Some(Client::new(format!("http://{addr}"), read(TOKEN_FILE)))
}

/// Whether an agent answers at the client's URL. An agent that refuses the token is an error:
/// starting another agent on the same data dir would fight over its machines.
async fn answers(client: &Client) -> anyhow::Result<bool> {
    match tokio::time::timeout(Duration::from_secs(2), client.list_apps()).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => match status_error(&e).map(|a| a.status) {
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(e.context(format!(
                "an agent answers at {} but refuses the token; set ALOFT_API_TOKEN (the agent's \
                 token is in <data-dir>/token)",
                client.base_url()
            ))),
            _ => Ok(false),
        },
        Err(_) => Ok(false),
    }
}

/// External service ports of every process group of the app.
fn service_ports(config: &aloft_config::AppConfig) -> Vec<u16> {
    let mut ports: Vec<u16> = config
        .process_names()
        .iter()
        .flat_map(|g| config.machine_config_for(g).services)
        .flat_map(|s| s.ports.into_iter().flat_map(|p| p.external_ports()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The timestamp of the app's newest log line, if any.
async fn last_log_timestamp(client: &Client, app: &str) -> Option<String> {
    let mut last = None;
    let query = [("limit", "1".to_string())];
    client
        .logs(app, &query, |l| {
            last = Some(l.timestamp);
            true
        })
        .await
        .ok()?;
    last
}

/// Starts the app's stopped machines (a previous `up` stopped them on Ctrl-C; a deploy leaves
/// stopped machines stopped) and waits until they run and pass their checks.
async fn start_stopped(client: &Client, app: &str, printer: &Printer) -> anyhow::Result<()> {
    let machines = client.list_machines(app).await?;
    let stopped: Vec<&Machine> = machines
        .iter()
        .filter(|m| {
            matches!(
                m.state,
                MachineState::Stopped | MachineState::Suspended | MachineState::Created
            ) && m.config.standbys.is_empty()
        })
        .collect();
    if stopped.is_empty() {
        return Ok(());
    }
    printer.line(format_args!(
        "Starting {} stopped machine(s)",
        stopped.len()
    ));
    let results = join_all(stopped.iter().map(|m| async move {
        client.start_machine(app, &m.id).await?;
        client
            .wait_machine(app, &m.id, MachineState::Started, MACHINE_TIMEOUT)
            .await?;
        if let Err(e) = client.wait_healthy(app, &m.id, MACHINE_TIMEOUT).await {
            // It runs; the checks may pass later (the logs that follow will tell).
            printer.warn(format_args!("{e:#}"));
        }
        printer.line(format_args!(
            "  Machine {} [{}] is started",
            m.id,
            m.process_group()
        ));
        anyhow::Ok(())
    }))
    .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    if !failed.is_empty() {
        bail!("some machines did not start: {}", failed.join("; "));
    }
    Ok(())
}

/// The proxy's ports of the app, once every expected service port is bound or has failed
/// (or after [`PORTS_TIMEOUT`]). None when the agent runs without a proxy.
async fn proxy_ports_of(
    client: &Client,
    app: &str,
    expected: &[u16],
) -> anyhow::Result<Option<Vec<ProxyPort>>> {
    let deadline = tokio::time::Instant::now() + PORTS_TIMEOUT;
    loop {
        let ports: Vec<ProxyPort> = match client.proxy_ports().await {
            Ok(ports) => ports.into_iter().filter(|p| p.app == app).collect(),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let settled = |want: &u16| {
            ports.iter().any(|p| {
                p.port == *want
                    && (p.listen.is_some() || p.error.as_deref() != Some("not bound yet"))
            })
        };
        if expected.iter().all(settled) || tokio::time::Instant::now() >= deadline {
            return Ok(Some(ports));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `scheme://host:port` of a proxy port: the address it listens on, or the agent's host when
/// it listens on every address.
fn url_of(p: &ProxyPort, listen: &str, agent_url: &str) -> String {
    let has = |h: &str| p.handlers.iter().any(|x| x == h);
    let scheme = match (has("http"), has("tls")) {
        (true, true) => "https",
        (true, false) => "http",
        (false, true) => "tls",
        (false, false) => "tcp",
    };
    let host = match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let agent_host = aloft_client::Url::parse(agent_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_else(|| "127.0.0.1".to_string());
            if agent_host.contains(':') && !agent_host.starts_with('[') {
                format!("[{agent_host}]:{}", addr.port())
            } else {
                format!("{agent_host}:{}", addr.port())
            }
        }
        Ok(addr) => addr.to_string(),
        Err(_) => listen.to_string(),
    };
    format!("{scheme}://{host}")
}

/// The app's service URLs through the proxy, and the machines behind each group.
async fn print_urls(
    client: &Client,
    app: &str,
    expected: &[u16],
    printer: &Printer,
) -> anyhow::Result<()> {
    let ports = proxy_ports_of(client, app, expected).await?;
    let mut lines = Vec::new();
    match &ports {
        None if !expected.is_empty() => {
            lines.push("  (the agent runs without a proxy: service ports are not served)".into())
        }
        None => {}
        Some(ports) => {
            for p in ports {
                match (&p.listen, &p.error) {
                    (Some(listen), _) => lines.push(format!(
                        "  {}  (service port {})",
                        url_of(p, listen, client.base_url()),
                        p.port
                    )),
                    (None, Some(err)) => {
                        lines.push(format!("  port {}: not served: {err}", p.port))
                    }
                    (None, None) => {}
                }
            }
            for want in expected {
                if !ports.iter().any(|p| p.port == *want) {
                    lines.push(format!("  port {want}: not served (yet) by the proxy"));
                }
            }
        }
    }
    if !lines.is_empty() {
        printer.line(format_args!("Services:\n{}", lines.join("\n")));
    }
    let machines = client.list_machines(app).await?;
    let mut groups: Vec<String> = machines
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .map(|m| format!("  {:<10} {}", m.process_group(), m.id))
        .collect();
    groups.sort();
    if !groups.is_empty() {
        printer.line(format_args!("Machines:\n{}", groups.join("\n")));
    }
    Ok(())
}

/// Stops every running machine of the app and waits until they are stopped.
async fn stop_all(client: &Client, app: &str, printer: &Printer) -> anyhow::Result<()> {
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
            .wait_machine(app, &m.id, MachineState::Stopped, MACHINE_TIMEOUT)
            .await
    }))
    .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    printer.line(format_args!(
        "Stopped {} machine(s) of {app}",
        running.len() - failed.len()
    ));
    if !failed.is_empty() {
        bail!("some machines did not stop: {}", failed.join("; "));
    }
    Ok(())
}
