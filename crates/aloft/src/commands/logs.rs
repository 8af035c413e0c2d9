//! `aloft logs [-g GROUP] [--machine ID] [--region R] [--no-tail]`.

use std::io::IsTerminal;
use std::process::ExitCode;

use aloft_api::LogLine;
use aloft_client::{block_on, Client};

use crate::cli::LogsArgs;
use crate::commands::common::{colour_for, resolve_app};

/// One log line as printed: `timestamp group[machine] region message`, the prefix coloured per
/// group when `colour`.
pub fn format_line(l: &LogLine, colour: bool) -> String {
    let prefix = format!(
        "{}[{}] {}",
        if l.group.is_empty() { "-" } else { &l.group },
        l.machine_id,
        l.region
    );
    if colour {
        format!(
            "{} {}{prefix}\x1b[0m {}",
            l.timestamp,
            colour_for(&l.group),
            l.message
        )
    } else {
        format!("{} {prefix} {}", l.timestamp, l.message)
    }
}

/// Query of the agent's log route.
pub fn log_query(args: &LogsArgs) -> Vec<(&'static str, String)> {
    let mut q = vec![("follow", (!args.no_tail).to_string())];
    if let Some(g) = &args.group {
        q.push(("group", g.clone()));
    }
    if let Some(m) = &args.machine {
        q.push(("machine", m.clone()));
    }
    if let Some(r) = &args.region {
        q.push(("region", r.clone()));
    }
    q
}

/// A group or machine filter that matches nothing the app has would follow silence forever:
/// refuse it and name what exists.
async fn check_filters(client: &Client, app: &str, args: &LogsArgs) -> anyhow::Result<()> {
    if args.group.is_none() && args.machine.is_none() {
        return Ok(());
    }
    let machines = client.list_machines(app).await?;
    if let Some(g) = &args.group {
        let mut groups: Vec<String> = machines
            .iter()
            .map(|m| m.process_group().to_string())
            .collect();
        if let Ok(Some(release)) = client.current_release(app).await {
            groups.extend(release.spec.group_names());
        }
        groups.sort();
        groups.dedup();
        if !groups.contains(g) {
            anyhow::bail!(
                "app {app} has no process group {g:?}; its groups: {}",
                if groups.is_empty() {
                    "none yet (deploy first)".to_string()
                } else {
                    groups.join(", ")
                }
            );
        }
    }
    if let Some(id) = &args.machine {
        if !machines.iter().any(|m| &m.id == id) {
            anyhow::bail!("machine {id} not found in app {app}; see `aloft machine list -a {app}`");
        }
    }
    Ok(())
}

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let app = resolve_app(&args.app)?;
    if let Some(r) = &args.region {
        aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
    }
    let client = Client::from_env();
    let colour = std::io::stdout().is_terminal();
    let query = log_query(&args);
    block_on(async move {
        check_filters(&client, &app, &args).await?;
        let follow = client.logs(&app, &query, |l| {
            println!("{}", format_line(&l, colour));
            true
        });
        tokio::select! {
            r = follow => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}
