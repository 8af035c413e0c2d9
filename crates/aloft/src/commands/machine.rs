//! `aloft machine list|status|run|clone|start|stop|destroy|update|exec|ps|cp` (flyctl-behaviour §5;
//! `cp` is `commands::copy`).
//! Every id is looked up before anything is changed, so an unknown id changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use aloft_api::metadata::{PROCESS_GROUP, RESERVED_GROUPS, ROLE};
use aloft_api::{CreateMachineRequest, Machine, MachineState, StopRequest};
use anyhow::{anyhow, bail, Context as _};

use crate::cli::MachineCommand;
use crate::commands::{clone_volume, Context};
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
                    let mut headers = vec![
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
                    ];
                    let mut rows: Vec<Vec<String>> = machines.iter().map(list_row).collect();
                    // Only apps with scheduled machines get the column.
                    if machines
                        .iter()
                        .any(|m| m.config.schedule.as_deref().is_some_and(|s| !s.is_empty()))
                    {
                        headers.push("SCHEDULE");
                        let now = now_ms();
                        for (row, m) in rows.iter_mut().zip(&machines) {
                            row.push(schedule_summary(m, now).unwrap_or_default());
                        }
                    }
                    printer.table(
                        Some(&format!(
                            "{} machines have been retrieved from app {app}.",
                            machines.len()
                        )),
                        &headers,
                        &rows,
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
                if let Some(schedule) = schedule_summary(&m, now_ms()) {
                    printer.line(format_args!("  {:<14} = {schedule}", "Schedule"));
                }
                if !m.events.is_empty() {
                    printer.line("");
                    printer.table(
                        Some("Event Logs"),
                        &["STATE", "EVENT", "SOURCE", "TIMESTAMP", "INFO"],
                        &crate::commands::status::event_rows(&m.events),
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        MachineCommand::Run {
            image,
            command,
            schedule,
            env,
            metadata,
            name,
            region,
            restart,
            rm,
            detach,
            app,
        } => {
            let app = ctx.app(&app)?;
            let req = run_request(RunFlags {
                image,
                command,
                schedule,
                env,
                metadata,
                name,
                region,
                restart,
                rm,
            })?;
            block_on(run_machine(&client, printer, &app, req, detach))
        }
        MachineCommand::Clone {
            id,
            region,
            attach_volume,
            detach,
            standby_for,
            app,
        } => {
            if let Some(r) = &region {
                aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
            }
            let app = ctx.app(&app)?;
            block_on(async {
                let src = get(&client, &app, &id).await?;
                let attach = attach_volume.as_deref();
                let (region, attached) =
                    clone_volume::clone_region(&client, &app, &src, region, attach).await?;
                let mut config = src.config.clone();
                if !standby_for.is_empty() {
                    config.set_standby_for(standby_ids(&standby_for, &src.id)?);
                }
                let attach = attach.zip(attached);
                let volume = clone_volume::prepare(
                    &client,
                    &app,
                    &src,
                    &region,
                    attach,
                    &mut config,
                    printer,
                )
                .await?;
                let req = CreateMachineRequest {
                    skip_launch: config.is_standby(),
                    config,
                    region: Some(region),
                    ..CreateMachineRequest::default()
                };
                let m = match client.create_machine(&app, &req).await {
                    Ok(m) => m,
                    Err(e) => {
                        volume.undo(&client, &app, printer).await;
                        return Err(e.context(format!("cloning machine {id}")));
                    }
                };
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
                    if let Some(v) = m.config.mounts.first().filter(|v| !v.volume.is_empty()) {
                        printer.note(format_args!(
                            "its volume {} '{}' is kept, unattached (`aloft volumes destroy {}` \
                             removes it; a new machine of the group takes it)",
                            v.volume, v.name, v.volume
                        ));
                    }
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
/// The machines `--standby-for` names, `source` standing for the cloned machine's id (as
/// flyctl); blanks are an error, repeats are dropped.
fn standby_ids(given: &[String], source: &str) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for id in given.iter().map(|s| s.trim()) {
        let id = match id {
            "" => anyhow::bail!(
                "--standby-for: empty machine id; give ids separated by commas, or `source` for the machine being cloned"
            ),
            "source" => source,
            id => id,
        };
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

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

/// `aloft machine run`'s flags that make the machine.
struct RunFlags {
    image: String,
    command: Vec<String>,
    schedule: Option<String>,
    env: Vec<String>,
    metadata: Vec<String>,
    name: Option<String>,
    region: Option<String>,
    restart: Option<String>,
    rm: bool,
}

/// The create request of `aloft machine run`, with flyctl's defaults: restart policy `always`,
/// `on-failure` for a scheduled machine, `no` with `--rm`.
fn run_request(flags: RunFlags) -> anyhow::Result<CreateMachineRequest> {
    if flags.image.trim().is_empty() {
        bail!("the image argument cannot be empty: name an image of the app or a directory");
    }
    let mut config = aloft_api::MachineConfig {
        image: flags.image,
        auto_destroy: flags.rm,
        schedule: flags.schedule,
        ..Default::default()
    };
    if !flags.command.is_empty() {
        config.init.cmd = Some(flags.command);
    }
    for item in &flags.env {
        let Some((k, v)) = item.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--env {item:?} is not NAME=VALUE");
        };
        config.env.insert(k.to_string(), v.to_string());
    }
    config.metadata.extend(parse_metadata(&flags.metadata)?);
    let policy = match flags.restart.as_deref() {
        Some("on-fail") | Some("on-failure") => "on-failure",
        Some(other) => other,
        None if config.schedule.is_some() => "on-failure",
        None if flags.rm => "no",
        None => "always",
    };
    config.restart = Some(aloft_api::MachineRestart {
        policy: policy.to_string(),
        max_retries: None,
    });
    Ok(CreateMachineRequest {
        config,
        name: flags.name,
        region: flags.region,
        ..CreateMachineRequest::default()
    })
}

/// Creates the machine, then (unless `detach`) waits until it started — or already ran and
/// stopped, as a short scheduled job does.
async fn run_machine(
    client: &Client,
    printer: &crate::printer::Printer,
    app: &str,
    req: CreateMachineRequest,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let m = client
        .create_machine(app, &req)
        .await
        .with_context(|| format!("creating a machine in app {app}"))?;
    if printer.json() && detach {
        printer.json_value(&m)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !printer.json() {
        printer.line(format_args!(
            "Success! A machine has been successfully launched in app {app}"
        ));
        printer.line(format_args!(" Machine ID: {}", m.id));
        printer.line(format_args!(" Instance ID: {}", m.instance_id));
        printer.line(format_args!(" State: {}", m.state));
        if let Some(schedule) = schedule_summary(&m, now_ms()) {
            printer.line(format_args!(" Schedule: {schedule}"));
        }
    }
    if detach {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let m = loop {
        let m = get(client, app, &m.id).await?;
        let ran = m.events.iter().any(|e| e.kind == "start");
        if ran || !matches!(m.state, MachineState::Created | MachineState::Starting) {
            break m;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "machine {} did not start within 5 minutes; see `aloft machine status {}`",
                m.id,
                m.id
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if printer.json() {
        printer.json_value(&m)?;
    } else if m.state == MachineState::Failed {
        let why = m
            .events
            .iter()
            .find(|e| e.kind == "launch" && e.status == "failed")
            .and_then(|e| e.request.as_ref()?["error"].as_str().map(String::from))
            .unwrap_or_default();
        bail!("machine {} failed to start: {why}", m.id);
    } else if m.state == MachineState::Started {
        printer.line(format_args!("Machine {} started", m.id));
    } else {
        printer.line(format_args!("Machine {} ran and is {}", m.id, m.state));
    }
    Ok(ExitCode::SUCCESS)
}

/// `daily, next run 2026-03-11T14:25:07Z`: the schedule and the next period after `now_ms`
/// (periods count from the machine's creation, `aloft_api::schedule`).
fn schedule_summary(m: &Machine, now_ms: i64) -> Option<String> {
    use aloft_api::schedule::{ms_rfc3339, rfc3339_ms, PeriodUnit, Periods, Schedule};
    let name = m.config.schedule.as_deref().filter(|s| !s.is_empty())?;
    let Some(schedule) = Schedule::parse(name) else {
        return Some(name.to_string());
    };
    let anchor = rfc3339_ms(&m.created_at)?;
    let (_, next) = Periods::new(schedule, anchor, PeriodUnit::Real).next_after(now_ms);
    Some(format!("{schedule}, next run {}", ms_rfc3339(next)))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
    #[test]
    fn standby_for_names_source_and_refuses_blanks() {
        let ids = super::standby_ids(&["source".into(), "m2".into(), "m1".into()], "m1").unwrap();
        assert_eq!(ids, ["m1", "m2"]);
        let err = super::standby_ids(&["m1".into(), " ".into()], "m1").unwrap_err();
        assert!(err.to_string().contains("--standby-for"), "{err}");
    }

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

    fn flags(schedule: Option<&str>, restart: Option<&str>, rm: bool) -> RunFlags {
        RunFlags {
            image: "dir:///srv/job".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            schedule: schedule.map(String::from),
            env: vec!["A=1".into(), "B=x=y".into()],
            metadata: vec![],
            name: None,
            region: None,
            restart: restart.map(String::from),
            rm,
        }
    }

    #[test]
    fn run_requests_take_flyctls_restart_defaults() {
        let policy = |f| run_request(f).unwrap().config.restart.unwrap().policy;
        assert_eq!(policy(flags(None, None, false)), "always");
        assert_eq!(policy(flags(Some("daily"), None, false)), "on-failure");
        assert_eq!(policy(flags(None, None, true)), "no");
        assert_eq!(policy(flags(Some("daily"), Some("no"), false)), "no");
        assert_eq!(policy(flags(None, Some("on-fail"), false)), "on-failure");
        let req = run_request(flags(Some("weekly"), None, false)).unwrap();
        assert_eq!(req.config.schedule.as_deref(), Some("weekly"));
        assert_eq!(req.config.init.cmd.as_ref().unwrap()[2], "echo hi");
        assert_eq!(req.config.env["B"], "x=y");
        assert!(!req.skip_launch, "started at creation, as flyctl does");
        let mut bad = flags(None, None, false);
        bad.env = vec!["NOEQUALS".into()];
        assert!(run_request(bad).is_err());
    }

    #[test]
    fn schedule_summary_names_the_next_period() {
        let m: Machine = serde_json::from_value(serde_json::json!({
            "id": "m", "name": "n", "state": "stopped", "region": "ams", "instance_id": "v",
            "created_at": "2026-01-31T10:00:00Z", "updated_at": "2026-01-31T10:00:00Z",
            "config": {"image": "x", "schedule": "monthly"},
        }))
        .unwrap();
        let feb_1 = aloft_api::schedule::rfc3339_ms("2026-02-01T00:00:00Z").unwrap();
        assert_eq!(
            schedule_summary(&m, feb_1).unwrap(),
            "monthly, next run 2026-02-28T10:00:00Z"
        );
    }

    #[test]
    fn force_rules() {
        assert!(needs_force(MachineState::Started));
        assert!(!needs_force(MachineState::Stopped));
    }
}
