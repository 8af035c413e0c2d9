//! `aloft machine list|status|clone|start|stop|destroy|update|exec|ps|cp` (flyctl-behaviour §5;
//! `cp` is `commands::copy`).
//! Every id is looked up before anything is changed, so an unknown id changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use aloft_api::metadata::{PROCESS_GROUP, RESERVED_GROUPS, ROLE};
use aloft_api::{CreateMachineRequest, Machine, MachineState, StopRequest};
use anyhow::{anyhow, bail, Context as _};

use crate::cli::MachineCommand;
use crate::commands::Context;
use aloft_client::{block_on, is_not_found, Client};

pub fn run(cmd: MachineCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let printer = ctx.printer;
    match cmd {
        MachineCommand::Exec {
            id,
            command,
            timeout,
            app,
        } => {
            let app = ctx.app(&app)?;
            block_on(exec(&client, printer, &app, &id, command, timeout))
        }
        MachineCommand::Cp { src, dst, app } => {
            let app = ctx.app(&app)?;
            crate::commands::copy::run(&src, &dst, &app, &client, ctx)
        }
        MachineCommand::Ps {
            id,
            sort_by,
            order,
            app,
        } => {
            let app = ctx.app(&app)?;
            block_on(ps(&client, printer, &app, &id, &sort_by, &order))
        }
        MachineCommand::List(args) => {
            let app = ctx.app(&args.app)?;
            block_on(async {
                let machines = client.list_machines(&app).await?;
                if printer.json() {
                    printer.json_value(&machines)?;
                } else if machines.is_empty() {
                    printer.line(format_args!("No machines are available on this app {app}"));
                } else {
                    printer.table(
                        Some(&format!(
                            "{} machines have been retrieved from app {app}.",
                            machines.len()
                        )),
                        &[
                            "ID",
                            "NAME",
                            "STATE",
                            "CHECKS",
                            "REGION",
                            "ROLE",
                            "IMAGE",
                            "IP ADDRESS",
                            "CREATED",
                            "LAST UPDATED",
                            "PROCESS GROUP",
                            "SIZE",
                        ],
                        &machines.iter().map(list_row).collect::<Vec<_>>(),
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Status { id, app } => {
            let app = ctx.app(&app)?;
            block_on(async {
                let m = get(&client, &app, &id).await?;
                if printer.json() {
                    printer.json_value(&m)?;
                    return Ok(ExitCode::SUCCESS);
                }
                let guest = m.config.guest.clone().unwrap_or_default();
                printer.line(format_args!("Machine ID: {}", m.id));
                printer.line(format_args!("Instance ID: {}", m.instance_id));
                printer.line(format_args!("State: {}\n", m.state));
                for (k, v) in [
                    ("Name", m.name.clone()),
                    ("Process group", m.process_group().to_string()),
                    ("Region", m.region.clone()),
                    ("Image", m.config.image.clone()),
                    (
                        "Size",
                        format!("{} ({} MB)", guest.size_name(), guest.memory_mb),
                    ),
                    ("Checks", crate::commands::status::checks_summary(&m)),
                    ("Created", m.created_at.clone()),
                    ("Updated", m.updated_at.clone()),
                ] {
                    printer.line(format_args!("  {k:<14} = {v}"));
                }
                if !m.events.is_empty() {
                    printer.line("");
                    let rows: Vec<Vec<String>> = m
                        .events
                        .iter()
                        .map(|e| {
                            vec![
                                e.status.clone(),
                                e.kind.clone(),
                                e.source.clone(),
                                e.timestamp.to_string(),
                            ]
                        })
                        .collect();
                    printer.table(
                        Some("Event Logs"),
                        &["STATE", "EVENT", "SOURCE", "TIMESTAMP"],
                        &rows,
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Clone {
            id,
            region,
            detach,
            app,
        } => {
            if let Some(r) = &region {
                aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
            }
            let app = ctx.app(&app)?;
            block_on(async {
                let src = get(&client, &app, &id).await?;
                let req = CreateMachineRequest {
                    config: src.config.clone(),
                    region: Some(region.unwrap_or_else(|| src.region.clone())),
                    skip_launch: !src.config.standbys.is_empty(),
                    ..CreateMachineRequest::default()
                };
                let m = client
                    .create_machine(&app, &req)
                    .await
                    .with_context(|| format!("cloning machine {id}"))?;
                printer.line(format_args!(
                    "Cloned {id} into {} [{}] region:{}",
                    m.id,
                    m.process_group(),
                    m.region
                ));
                if !detach && !req.skip_launch {
                    client
                        .wait_machine(&app, &m.id, MachineState::Started, Duration::from_secs(300))
                        .await?;
                    printer.line(format_args!("Machine {} is started", m.id));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Start { ids, app } => {
            let app = ctx.app(&app)?;
            block_on(async {
                let machines = get_all(&client, &app, &ids).await?;
                for m in machines {
                    client
                        .start_machine(&app, &m.id)
                        .await
                        .with_context(|| format!("starting machine {}", m.id))?;
                    printer.line(format_args!("{} has been started", m.id));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Stop {
            ids,
            signal,
            timeout,
            app,
        } => {
            if let Some(s) = &signal {
                if aloft_api::signal_number(s).is_none() {
                    bail!("unknown signal {s:?}: use e.g. SIGINT, SIGTERM or SIGKILL");
                }
            }
            let app = ctx.app(&app)?;
            let req = StopRequest {
                signal: signal.map(|s| {
                    let s = s.to_ascii_uppercase();
                    if s.starts_with("SIG") {
                        s
                    } else {
                        format!("SIG{s}")
                    }
                }),
                timeout: timeout.map(aloft_api::GoDuration::from_secs),
            };
            block_on(async {
                let machines = get_all(&client, &app, &ids).await?;
                for m in machines {
                    client
                        .stop_machine(&app, &m.id, &req)
                        .await
                        .with_context(|| format!("stopping machine {}", m.id))?;
                    client
                        .wait_machine(&app, &m.id, MachineState::Stopped, Duration::from_secs(300))
                        .await?;
                    printer.line(format_args!("{} has been stopped", m.id));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Destroy { ids, force, app } => {
            let app = ctx.app(&app)?;
            block_on(async {
                let machines = get_all(&client, &app, &ids).await?;
                if !force {
                    if let Some(m) = machines.iter().find(|m| needs_force(m.state)) {
                        bail!(
                            "machine {} is {}: stop it first (`aloft machine stop {}`) or destroy it with --force; nothing was destroyed",
                            m.id, m.state, m.id
                        );
                    }
                }
                for m in machines {
                    client
                        .destroy_machine(&app, &m.id, force)
                        .await
                        .with_context(|| format!("destroying machine {}", m.id))?;
                    printer.line(format_args!("{} has been destroyed", m.id));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Update {
            id,
            metadata,
            yes,
            app,
        } => {
            let pairs = parse_metadata(&metadata)?;
            let app = ctx.app(&app)?;
            block_on(async {
                let m = get(&client, &app, &id).await?;
                let mut changes = Vec::new();
                for (k, v) in &pairs {
                    let old = m.config.metadata.get(k).cloned().unwrap_or_default();
                    if &old != v {
                        changes.push(format!("  metadata.{k}: {old:?} → {v:?}"));
                    }
                }
                if changes.is_empty() {
                    printer.line(format_args!("No changes to apply to machine {id}"));
                    return Ok(ExitCode::SUCCESS);
                }
                printer.line(format_args!("Machine {id}:\n{}", changes.join("\n")));
                if pairs.iter().any(|(k, _)| k == PROCESS_GROUP) {
                    printer.line("The next `aloft deploy` applies the group's command, services and checks to it (and destroys it if the group is not in fly.toml, after asking).");
                }
                if !printer.confirm(&format!("Update machine {id}?"), yes)? {
                    printer.note("Nothing changed.");
                    return Ok(ExitCode::FAILURE);
                }
                for (k, v) in &pairs {
                    client
                        .set_metadata(&app, &id, k, v)
                        .await
                        .with_context(|| format!("setting metadata {k} on machine {id}"))?;
                }
                printer.line(format_args!("Machine {id} updated"));
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

/// States in which `destroy` without `--force` is refused.
fn needs_force(state: MachineState) -> bool {
    !matches!(
        state,
        MachineState::Stopped
            | MachineState::Suspended
            | MachineState::Created
            | MachineState::Failed
    )
}

/// `K=V` pairs; `K=` stores an empty value (§5.5). Reserved group names are refused.
pub fn parse_metadata(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = item.split_once('=').ok_or_else(|| {
                anyhow!(
                    "invalid --metadata {item:?}: expected KEY=VALUE, e.g. fly_process_group=app"
                )
            })?;
            let k = k.trim();
            if k.is_empty() {
                bail!("invalid --metadata {item:?}: the key is empty");
            }
            if k == PROCESS_GROUP && RESERVED_GROUPS.contains(&v) {
                bail!("{v:?} is reserved for platform machines; pick another group name");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `aloft machine exec`: stdout and stderr as the command wrote them, its exit code as ours
/// (flyctl prints "Exit code: N" and exits 0; a script wants the code).
pub(crate) async fn exec(
    client: &Client,
    printer: &crate::printer::Printer,
    app: &str,
    id: &str,
    command: Vec<String>,
    timeout: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let req = aloft_api::exec::MachineExecRequest {
        // One word: split as a shell would (flyctl's `fly machine exec ID "ls -l"`).
        cmd: (command.len() == 1).then(|| command[0].clone()),
        command: (command.len() > 1).then_some(command),
        timeout,
        ..Default::default()
    };
    let answer = client
        .exec_machine(app, id, &req)
        .await
        .map_err(|e| not_found_hint(e, app, id))
        .with_context(|| format!("could not run the command in machine {id}"))?;
    if printer.json() {
        printer.json_value(&answer)?;
    } else {
        printer.text(&answer.stdout);
        printer.note_text(&answer.stderr);
    }
    Ok(ExitCode::from(
        u8::try_from(answer.exit_code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// `aloft machine ps`: a table of the machine's processes.
async fn ps(
    client: &Client,
    printer: &crate::printer::Printer,
    app: &str,
    id: &str,
    sort_by: &str,
    order: &str,
) -> anyhow::Result<ExitCode> {
    let list = client
        .machine_processes(app, id, sort_by, order)
        .await
        .map_err(|e| not_found_hint(e, app, id))?;
    if printer.json() {
        printer.json_value(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.pid.to_string(),
                format!("{:.1}s", p.cpu as f64 / 1000.0),
                format!("{:.1} MB", p.rss as f64 / 1e6),
                format!("{}s", p.rtime),
                p.listen_sockets
                    .iter()
                    .map(|s| format!("{} {}", s.proto, s.address))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.command.clone(),
            ]
        })
        .collect();
    printer.table(
        None,
        &["PID", "CPU", "RSS", "RUNNING", "LISTENING", "COMMAND"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// A 404 of a machine route, as a hint to list the app's machines.
pub(crate) fn not_found_hint(e: anyhow::Error, app: &str, id: &str) -> anyhow::Error {
    if is_not_found(&e) {
        anyhow!("machine {id} not found in app {app}; see `aloft machine list -a {app}`")
    } else {
        e
    }
}

async fn get(client: &Client, app: &str, id: &str) -> anyhow::Result<Machine> {
    client.get_machine(app, id).await.map_err(|e| {
        if is_not_found(&e) {
            anyhow!("machine {id} not found in app {app}; see `aloft machine list -a {app}`")
        } else {
            e
        }
    })
}

async fn get_all(client: &Client, app: &str, ids: &[String]) -> anyhow::Result<Vec<Machine>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(get(client, app, id).await?);
    }
    Ok(out)
}

fn list_row(m: &Machine) -> Vec<String> {
    let passing = m.checks.iter().filter(|c| c.status == "passing").count();
    let checks = if m.checks.is_empty() {
        String::new()
    } else {
        format!("{passing}/{}", m.checks.len())
    };
    vec![
        m.id.clone(),
        m.name.clone(),
        m.state.to_string(),
        checks,
        m.region.clone(),
        m.config.metadata.get(ROLE).cloned().unwrap_or_default(),
        m.config.image.clone(),
        m.private_ip.clone(),
        m.created_at.clone(),
        m.updated_at.clone(),
        m.process_group().to_string(),
        m.config
            .guest
            .as_ref()
            .map(|g| g.size_name())
            .unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let p = parse_metadata(&["fly_process_group=app".into(), "note=".into()]).unwrap();
        assert_eq!(
            p,
            vec![
                ("fly_process_group".into(), "app".into()),
                ("note".into(), String::new())
            ]
        );
        assert!(parse_metadata(&["novalue".into()]).is_err());
        assert!(parse_metadata(&["=x".into()]).is_err());
        assert!(parse_metadata(&["fly_process_group=fly_app_console".into()]).is_err());
    }

    #[test]
    fn force_rules() {
        assert!(needs_force(MachineState::Started));
        assert!(!needs_force(MachineState::Stopped));
    }
}
