//! `aloft logs [-g GROUP] [--machine ID] [--region R] [--no-tail]`.

use std::io::IsTerminal;
use std::process::ExitCode;

use aloft_deploy::wire::LogLine;

use crate::cli::LogsArgs;
use crate::client::{block_on, Client};
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

pub fn run(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let app = resolve_app(&args.app)?;
    if let Some(r) = &args.region {
        aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
    }
    let client = Client::from_env();
    let colour = std::io::stdout().is_terminal();
    let query = log_query(&args);
    block_on(async move {
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
