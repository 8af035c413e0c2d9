//! `aloft logs [-g GROUP] [--machine ID] [--region R] [--no-tail]`.

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

/// A group or machine filter that matches nothing the app has would follow silence forever:
/// refuse it and name what exists.
async fn check_filters(client: &Client, s: &LogsSettings) -> anyhow::Result<()> {
    if s.group.is_none() && s.machine.is_none() {
        return Ok(());
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
            anyhow::bail!("machine {id} not found in app {app}; see `aloft machine list -a {app}`");
        }
    }
    Ok(())
}

pub fn run(settings: LogsSettings, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let query = log_query(&settings);
    let printer = ctx.printer;
    block_on(async move {
        check_filters(&client, &settings).await?;
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
