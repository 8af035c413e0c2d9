//! `aloft logs [-g GROUP] [--machine ID] [--region R] [--no-tail]`. A destroyed machine's
//! lines stay readable by its id while the agent keeps them.

use std::process::ExitCode;

use aloft_api::LogLine;
use anstyle::{AnsiColor, Style};

use crate::commands::Context;
use crate::printer::Printer;
use crate::settings::LogsSettings;
use aloft_client::{block_on, Client};

/// One log line as printed: `timestamp group[machine] region message`, the prefix coloured per
/// group when the printer colours.
pub fn format_line(l: &LogLine, printer: &Printer) -> String {
    let prefix = format!(
        "{}[{}] {}",
        if l.group.is_empty() { "-" } else { &l.group },
        l.machine_id,
        l.region
    );
    format!(
        "{} {} {}",
        l.timestamp,
        printer.paint(group_style(&l.group), &prefix),
        l.message
    )
}

/// A colour per group name, stable across runs.
fn group_style(name: &str) -> Style {
    const COLOURS: &[AnsiColor] = &[
        AnsiColor::Cyan,
        AnsiColor::Yellow,
        AnsiColor::Magenta,
        AnsiColor::Green,
        AnsiColor::Blue,
        AnsiColor::Red,
    ];
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    Style::new().fg_color(Some(COLOURS[h as usize % COLOURS.len()].into()))
}

/// Query of the agent's log route.
pub fn log_query(s: &LogsSettings) -> Vec<(&'static str, String)> {
    let mut q = vec![("follow", s.follow.to_string())];
    if let Some(g) = &s.group {
        q.push(("group", g.clone()));
    }
    if let Some(m) = &s.machine {
        q.push(("machine", m.clone()));
    }
    if let Some(r) = &s.region {
        q.push(("region", r.clone()));
    }
    q
}

/// What the filters of a logs command name.
#[derive(Debug, PartialEq, Eq)]
enum Filters {
    /// Things the app has (or no filter).
    Live,
    /// A machine that is gone (destroyed) but whose lines the agent still keeps: they are
    /// printed, not followed (it writes no more).
    GoneMachine,
}

/// A group or machine filter that matches nothing the app has would follow silence forever:
/// refuse it and name what exists. A destroyed machine's id is taken while its lines are kept
/// (until the agent's log retention removes them).
async fn check_filters(client: &Client, s: &LogsSettings) -> anyhow::Result<Filters> {
    if s.group.is_none() && s.machine.is_none() {
        return Ok(Filters::Live);
    }
    let app = &s.app;
    let machines = client.list_machines(app).await?;
    if let Some(g) = &s.group {
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
    if let Some(id) = &s.machine {
        if !machines.iter().any(|m| &m.id == id) {
            if has_kept_lines(client, app, id).await? {
                return Ok(Filters::GoneMachine);
            }
            anyhow::bail!(
                "machine {id} not found in app {app}, and no logs of it are kept; see `aloft machine list -a {app}`"
            );
        }
    }
    Ok(Filters::Live)
}

/// Whether the agent keeps log lines of machine `id` of `app`.
async fn has_kept_lines(client: &Client, app: &str, id: &str) -> anyhow::Result<bool> {
    let query = [
        ("follow", "false".to_string()),
        ("machine", id.to_string()),
        ("limit", "1".to_string()),
    ];
    let mut found = false;
    client
        .logs(app, &query, |_| {
            found = true;
            false
        })
        .await?;
    Ok(found)
}

pub fn run(mut settings: LogsSettings, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        if check_filters(&client, &settings).await? == Filters::GoneMachine {
            settings.follow = false;
        }
        let query = log_query(&settings);
        // A closed stdout (`aloft logs | head`) ends the logs.
        let follow = client.logs(&settings.app, &query, |l| {
            printer.try_line(format_line(&l, printer)).is_ok()
        });
        tokio::select! {
            r = follow => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::{capture, Mode};

    fn line(group: &str) -> LogLine {
        serde_json::from_value(serde_json::json!({
            "timestamp": "2026-01-01T00:00:00Z",
            "group": group,
            "machine_id": "m1",
            "region": "gru",
            "message": "hello",
        }))
        .unwrap()
    }

    #[test]
    fn lines_are_coloured_only_when_the_printer_colours() {
        let (plain, _, _) = capture::printer(Mode::default());
        assert_eq!(
            format_line(&line("web"), &plain),
            "2026-01-01T00:00:00Z web[m1] gru hello"
        );
        assert_eq!(
            format_line(&line(""), &plain),
            "2026-01-01T00:00:00Z -[m1] gru hello"
        );
        let (colour, _, _) = capture::printer(Mode {
            json: false,
            colour: true,
        });
        let text = format_line(&line("web"), &colour);
        assert!(text.starts_with("2026-01-01T00:00:00Z \x1b["), "{text:?}");
        assert!(text.ends_with("web[m1] gru\x1b[0m hello"), "{text:?}");
    }
}
