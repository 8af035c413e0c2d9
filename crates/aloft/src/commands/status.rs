//! `aloft status` (flyctl-behaviour §6.1) and `aloft releases`.

use std::process::ExitCode;

use aloft_api::metadata::{RELEASE_VERSION, ROLE};
use aloft_api::{ExitEvent, Machine, MachineEvent};
use aloft_deploy::plan::is_managed;
use serde::Serialize;

use crate::commands::Context;
use aloft_client::block_on;

/// `"N total, X passing, Y warning, Z critical"`; blank without checks.
pub fn checks_summary(m: &Machine) -> String {
    if m.checks.is_empty() {
        return String::new();
    }
    let count = |s: &str| m.checks.iter().filter(|c| c.status == s).count();
    let mut out = format!("{} total", m.checks.len());
    for s in ["passing", "warning", "critical"] {
        let n = count(s);
        if n > 0 {
            out.push_str(&format!(", {n} {s}"));
        }
    }
    out
}

/// Rows of the Machines table, sorted by the whole row (group, then id).
pub fn machine_rows(machines: &[Machine]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = machines
        .iter()
        .filter(|m| is_managed(m))
        .map(|m| {
            let group = match m.process_group() {
                "" => "<default>",
                g => g,
            };
            let group = if m.config.is_standby() {
                format!("{group}†")
            } else {
                group.to_string()
            };
            vec![
                group,
                m.id.clone(),
                m.config
                    .metadata
                    .get(RELEASE_VERSION)
                    .cloned()
                    .unwrap_or_default(),
                m.region.clone(),
                m.state.to_string(),
                m.config.metadata.get(ROLE).cloned().unwrap_or_default(),
                checks_summary(m),
                m.updated_at.clone(),
                m.private_ip.clone(),
            ]
        })
        .collect();
    rows.sort();
    rows
}

/// The app's status as `status` shows it: `deployed` once one of its releases completed, else
/// what the agent says (`pending` for an app never deployed).
pub fn app_status(agent_status: &str, has_complete_release: bool) -> &str {
    if has_complete_release {
        "deployed"
    } else {
        agent_status
    }
}

/// Rows of `machine status`'s event table, as flyctl shows them: state, event, source, the time
/// in RFC 3339 (UTC, milliseconds) and, for exits, `exit_code=…,oom_killed=…,requested_stop=…`.
pub fn event_rows(events: &[MachineEvent]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            let exit = e
                .request
                .as_ref()
                .and_then(|r| r.get("exit_event"))
                .and_then(|x| serde_json::from_value::<ExitEvent>(x.clone()).ok());
            vec![
                e.status.clone(),
                e.kind.clone(),
                e.source.clone(),
                event_time(e.timestamp),
                exit.map(|x| {
                    format!(
                        "exit_code={},oom_killed={},requested_stop={}",
                        x.exit_code, x.oom_killed, x.requested_stop
                    )
                })
                .unwrap_or_default(),
            ]
        })
        .collect()
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`); a time out
/// of range stays a number.
pub fn event_time(ms: i64) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// The notes under the Machines table explaining its marks (flyctl's words): `†` is a standby.
pub fn footer_notes(machines: &[Machine]) -> Option<String> {
    machines
        .iter()
        .any(|m| is_managed(m) && m.config.is_standby())
        .then(|| {
            "Notes:\n  † Standby machine (it will take over only in case of host hardware failure)"
                .to_string()
        })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    deployed: bool,
    status: String,
    hostname: String,
    version: u64,
    organization: aloft_api::Organization,
    platform_version: String,
    machines: Vec<Machine>,
}

/// `aloft status` of `app_name`.
pub fn run(app_name: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        let app = client.get_app(app_name).await?;
        let machines = client.list_machines(app_name).await?;
        // Deployed once a release completed (flyctl's `Status = deployed`); before that the
        // app's own status (`pending`).
        let release = client.current_release(app_name).await?;
        let status = app_status(&app.status, release.is_some());
        let version = machines
            .iter()
            .filter_map(|m| m.config.metadata.get(RELEASE_VERSION)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let image = machines
            .iter()
            .filter(|m| {
                m.config
                    .metadata
                    .get(RELEASE_VERSION)
                    .and_then(|v| v.parse::<u64>().ok())
                    == Some(version)
            })
            .map(|m| m.config.image.clone())
            .next()
            .unwrap_or_default();
        if printer.json() {
            let managed: Vec<Machine> = machines.into_iter().filter(is_managed).collect();
            return printer
                .json_value(&StatusJson {
                    id: app.id.clone(),
                    name: app.name.clone(),
                    deployed: release.is_some() || version > 0,
                    status: status.to_string(),
                    hostname: format!("{}.internal", app.name),
                    version,
                    organization: app.organization.clone(),
                    platform_version: "machines".into(),
                    machines: managed,
                })
                .map(|_| ExitCode::SUCCESS);
        }
        let info = vec![
            vec!["Name".to_string(), "=".into(), app.name.clone()],
            vec!["Owner".into(), "=".into(), app.organization.slug.clone()],
            vec!["Status".into(), "=".into(), status.to_string()],
            vec![
                "Hostname".into(),
                "=".into(),
                format!("{}.internal", app.name),
            ],
            vec![
                "Image".into(),
                "=".into(),
                if version > 0 {
                    format!("{image} (v{version})")
                } else {
                    "-".into()
                },
            ],
        ];
        printer.line("App");
        for row in info {
            printer.line(format_args!("  {:<9} {} {}", row[0], row[1], row[2]));
        }
        printer.line("");
        let rows = machine_rows(&machines);
        if rows.is_empty() {
            printer.line(format_args!(
                "No machines are available on this app {}",
                app.name
            ));
        } else {
            printer.table(
                Some("Machines"),
                &[
                    "PROCESS",
                    "ID",
                    "VERSION",
                    "REGION",
                    "STATE",
                    "ROLE",
                    "CHECKS",
                    "LAST UPDATED",
                    "PRIVATE IP",
                ],
                &rows,
            );
            if let Some(notes) = footer_notes(&machines) {
                printer.line(notes);
            }
        }
        if machines
            .iter()
            .any(|m| !is_managed(m) && m.state.is_active())
        {
            printer.line(
                "\nThere are machines not managed by deploy; see them with `aloft machine list`.",
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `aloft releases` of `app`.
pub fn releases(app: &str, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    block_on(async move {
        // Deploys only, as `fly releases`: scale operations are releases of the agent's API
        // (`scale` set, versions above SCALE_VERSION_BASE) but not of the app's history.
        let releases: Vec<_> = client
            .list_releases(app)
            .await?
            .into_iter()
            .filter(|r| r.is_deploy())
            .collect();
        if printer.json() {
            printer.json_value(&releases)?;
            return Ok(ExitCode::SUCCESS);
        }
        // The live release: the newest that completed.
        let live = releases
            .iter()
            .filter(|r| r.status == aloft_deploy::ReleaseStatus::Complete)
            .map(|r| r.version)
            .max();
        let rows: Vec<Vec<String>> = releases
            .iter()
            .map(|r| {
                let groups = r
                    .group_counts
                    .iter()
                    .map(|(g, n)| format!("{g}={n}"))
                    .collect::<Vec<_>>();
                let groups = if groups.is_empty() {
                    r.spec.group_names().join(",")
                } else {
                    groups.join(",")
                };
                let status = if Some(r.version) == live {
                    "live".to_string()
                } else {
                    r.status.as_str().to_string()
                };
                vec![
                    format!("v{}", r.version),
                    status,
                    r.description(),
                    r.created_by.clone().unwrap_or_else(|| "-".into()),
                    r.spec.deploy.strategy.as_str().to_string(),
                    r.phase.clone().unwrap_or_default(),
                    groups,
                    r.spec.image.clone(),
                    r.created_at.clone(),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        printer.table(
            None,
            &[
                "VERSION",
                "STATUS",
                "DESCRIPTION",
                "USER",
                "STRATEGY",
                "PHASE",
                "GROUPS",
                "IMAGE",
                "DATE",
                "ERROR",
            ],
            &rows,
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_api::{CheckStatus, MachineConfig, MachineState};

    fn machine(id: &str, group: &str) -> Machine {
        let mut config = MachineConfig::default();
        config
            .metadata
            .insert("fly_platform_version".into(), "v2".into());
        config
            .metadata
            .insert("fly_process_group".into(), group.into());
        config
            .metadata
            .insert("fly_release_version".into(), "3".into());
        Machine {
            instance_id: "v".into(),
            created_at: "t0".into(),
            updated_at: "t1".into(),
            ..Machine::new(id, "gru", MachineState::Started, config)
        }
    }

    #[test]
    fn event_times_are_rfc3339_and_exits_say_how() {
        assert_eq!(event_time(1_767_323_045_678), "2026-01-02T03:04:05.678Z");
        assert_eq!(event_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(event_time(i64::MAX), i64::MAX.to_string());
        let exit: MachineEvent = serde_json::from_value(serde_json::json!({
            "type": "exit", "status": "stopped", "source": "flyd", "timestamp": 1_767_323_045_678_i64,
            "request": {"exit_event": {"exit_code": 3, "oom_killed": true}}
        }))
        .unwrap();
        let start: MachineEvent = serde_json::from_value(serde_json::json!({
            "type": "start", "status": "started", "source": "user", "timestamp": 0
        }))
        .unwrap();
        assert_eq!(
            event_rows(&[exit, start]),
            vec![
                vec![
                    "stopped",
                    "exit",
                    "flyd",
                    "2026-01-02T03:04:05.678Z",
                    "exit_code=3,oom_killed=true,requested_stop=false"
                ],
                vec!["started", "start", "user", "1970-01-01T00:00:00.000Z", ""],
            ]
        );
    }

    #[test]
    fn rows_sorted_with_checks() {
        let mut a = machine("b1", "web");
        a.checks = vec![
            CheckStatus {
                name: "h".into(),
                status: "passing".into(),
                output: String::new(),
                updated_at: String::new(),
            },
            CheckStatus {
                name: "t".into(),
                status: "critical".into(),
                output: String::new(),
                updated_at: String::new(),
            },
        ];
        let rows = machine_rows(&[a, machine("a1", "web"), machine("z1", "cron")]);
        assert_eq!(rows[0][0], "cron");
        assert_eq!(rows[1][1], "a1");
        assert_eq!(rows[2][6], "2 total, 1 passing, 1 critical");
        assert_eq!(rows[2][2], "3");
    }

    #[test]
    fn standbys_are_marked_and_explained() {
        let mut standby = machine("c2", "cron");
        standby.config.set_standby_for(vec!["c1".into()]);
        let mut groupless = machine("c3", "");
        groupless.config.metadata.remove("fly_process_group");
        groupless.config.set_standby_for(vec!["c1".into()]);
        let plain = [machine("c1", "cron"), machine("w1", "web")];
        assert_eq!(footer_notes(&plain), None, "no standby, no note");
        let all = [plain[0].clone(), standby, groupless];
        let rows = machine_rows(&all);
        let groups: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(groups, ["<default>†", "cron", "cron†"]);
        assert_eq!(
            footer_notes(&all).unwrap(),
            "Notes:\n  † Standby machine (it will take over only in case of host hardware failure)"
        );
    }
}
