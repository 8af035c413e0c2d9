//! `aloft ssh console`: a shell (or `--command`) on a terminal in a running machine, over the
//! agent's console WebSocket (`aloft_client::console`).
//!
//! The machine: `--machine ID`, else one chosen from a list (`-s`), else the first started
//! machine of the app (of `-g GROUP` when given; machines of the reserved groups —
//! release command, console — are never picked). The local terminal goes raw for the session
//! ([`crate::terminal::RawMode`], restored however the session ends), its size is sent at the
//! start and on every SIGWINCH, and the CLI exits with the command's exit code.
//!
//! Without a terminal on stdin there is nothing to make raw: `--command` then runs as
//! `aloft machine exec` runs it (output when it ends, its exit code), and a shell is refused.
//!
//! `aloft console` (fly console): a new machine with the config of a machine of the group
//! (`-g`, else `app`, else the first group; the newest release's machine: the current image),
//! in group `fly_app_console` — which deploys, scale and status leave alone — with no
//! services, checks or restarts, running `/bin/sleep inf` (as flyctl's); the session runs
//! `--command`, else fly.toml's `console_command`, else /bin/sh, on it. The machine is
//! destroyed when the session ends: by the agent (also when this CLI is killed), by this
//! command on its way out, and by an agent that restarts and finds it left.

use std::process::ExitCode;

use aloft_api::console::{ConsoleParams, DEFAULT_TERMINAL_SIZE};
use aloft_api::metadata::{CONSOLE_GROUP, PROCESS_GROUP, RELEASE_VERSION, RESERVED_GROUPS};
use aloft_api::{Machine, MachineState};
use aloft_client::console::ConsoleEvent;
use aloft_client::{block_on, Client};
use anyhow::{anyhow, bail, Context as _};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{ConsoleArgs, SshCommand, SshConsoleArgs};
use crate::commands::Context;
use crate::printer::Printer;
use crate::terminal;

pub fn run_ssh(cmd: SshCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        SshCommand::Console(args) => ssh_console(args, ctx),
    }
}

fn ssh_console(args: SshConsoleArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let app = ctx.app(&args.app)?;
    let client = ctx.client()?;
    let tty = terminal::stdin_is_terminal();
    if !tty && args.command.is_none() {
        bail!(
            "stdin is not a terminal, so there is no shell to attach: run one command with \
             `aloft ssh console --command CMD` (or `aloft machine exec`), or run this in a terminal"
        );
    }
    if !tty && args.select {
        bail!("--select asks on the terminal, and stdin is not one: give --machine ID");
    }
    let term = crate::settings::terminal_type(ctx.env);
    block_on(async {
        let id = pick_machine(&client, ctx.printer, &app, &args).await?;
        match (tty, args.command) {
            (true, command) => attach(&client, ctx.printer, &app, &id, command, term).await,
            (false, Some(command)) => {
                super::machine::exec(&client, ctx.printer, &app, &id, vec![command], None).await
            }
            (false, None) => unreachable!("refused above"),
        }
    })
}

pub fn run_console(args: ConsoleArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let app = ctx.app(&args.app)?;
    let client = ctx.client()?;
    let tty = terminal::stdin_is_terminal();
    // fly.toml's console_command, when the config file is there.
    let configured = if args.app.config.exists() {
        super::common::load_config(&args.app.config, ctx.printer)?
            .config
            .console_command
    } else {
        None
    };
    let command = args.command.clone().or(configured);
    if !tty && command.is_none() {
        bail!(
            "stdin is not a terminal, so there is no shell to attach: give the command with \
             --command (or console_command in fly.toml), or run this in a terminal"
        );
    }
    let guest = match &args.vm_size {
        Some(size) => Some(aloft_api::Guest::from_preset(size).ok_or_else(|| {
            anyhow!("--vm-size {size:?} is not a VM size; see `aloft platform vm-sizes`")
        })?),
        None => None,
    };
    let term = crate::settings::terminal_type(ctx.env);
    block_on(async {
        let machines = client.list_machines(&app).await?;
        let template =
            console_template(&machines, args.process_group.as_deref()).ok_or_else(|| {
                anyhow!(
                    "app {app} has no machine{} to take the console's config and image from: \
                 deploy it first (`aloft deploy`)",
                    args.process_group
                        .as_deref()
                        .map(|g| format!(" in process group {g}"))
                        .unwrap_or_default()
                )
            })?;
        let mut config = template.config.clone();
        config
            .metadata
            .retain(|k, _| k.starts_with("fly_release") || k == "fly_platform_version");
        config
            .metadata
            .insert(PROCESS_GROUP.into(), CONSOLE_GROUP.into());
        config.services.clear();
        config.checks.clear();
        config.statics.clear();
        config.schedule = None;
        config.standbys.clear();
        config.restart = Some(aloft_api::MachineRestart {
            policy: "no".into(),
            max_retries: None,
        });
        config.init.exec = Some(vec!["/bin/sleep".into(), "inf".into()]);
        if let Some(g) = guest {
            config.guest = Some(g);
        }
        let req = aloft_api::CreateMachineRequest {
            config,
            region: Some(template.region.clone()),
            ..Default::default()
        };
        let m = client
            .create_machine(&app, &req)
            .await
            .context("could not create the console machine")?;
        ctx.printer.note(format_args!(
            "Created an ephemeral machine {} to run the console",
            m.id
        ));
        let session = async {
            client
                .wait_machine(
                    &app,
                    &m.id,
                    MachineState::Started,
                    std::time::Duration::from_secs(60),
                )
                .await
                .with_context(|| format!("the console machine {} did not start", m.id))?;
            if tty {
                attach(&client, ctx.printer, &app, &m.id, command, term).await
            } else {
                let command = command.unwrap_or_default();
                super::machine::exec(&client, ctx.printer, &app, &m.id, vec![command], None).await
            }
        }
        .await;
        // The agent destroys it when a session ends; this covers a session that never began.
        if let Err(e) = client.destroy_machine(&app, &m.id, true).await {
            if !aloft_client::is_not_found(&e) {
                ctx.printer.warn(format_args!(
                    "could not destroy the console machine {}: {e:#}; destroy it with \
                     `aloft machine destroy --force {} -a {app}`",
                    m.id, m.id
                ));
            }
        }
        session
    })
}

/// The machine whose config a console machine copies (see the module doc).
fn console_template<'a>(machines: &'a [Machine], group: Option<&str>) -> Option<&'a Machine> {
    let group_of = |m: &Machine| {
        m.config
            .metadata
            .get(PROCESS_GROUP)
            .cloned()
            .unwrap_or_else(|| "app".to_string())
    };
    let candidates: Vec<&Machine> = machines
        .iter()
        .filter(|m| !RESERVED_GROUPS.contains(&group_of(m).as_str()))
        .collect();
    let wanted = match group {
        Some(g) => g.to_string(),
        None if candidates.iter().any(|m| group_of(m) == "app") => "app".to_string(),
        None => candidates.iter().map(|m| group_of(m)).min()?,
    };
    let version = |m: &Machine| {
        m.config
            .metadata
            .get(RELEASE_VERSION)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    candidates
        .into_iter()
        .filter(|m| group_of(m) == wanted)
        .max_by_key(|m| version(m))
}

/// The machine to connect to (see the module doc).
async fn pick_machine(
    client: &Client,
    printer: &Printer,
    app: &str,
    args: &SshConsoleArgs,
) -> anyhow::Result<String> {
    if let Some(id) = &args.machine {
        return Ok(id.clone());
    }
    let machines = client.list_machines(app).await?;
    let started: Vec<&Machine> = machines
        .iter()
        .filter(|m| m.state == MachineState::Started)
        .filter(|m| {
            let group = m.config.metadata.get(PROCESS_GROUP).map(String::as_str);
            !group.is_some_and(|g| RESERVED_GROUPS.contains(&g))
                && args
                    .process_group
                    .as_deref()
                    .is_none_or(|want| group.unwrap_or("app") == want)
        })
        .collect();
    let Some(first) = started.first() else {
        let group = args
            .process_group
            .as_deref()
            .map(|g| format!(" in process group {g}"))
            .unwrap_or_default();
        bail!(
            "app {app} has no started machine{group} to connect to (`aloft machine list -a {app}`; \
             start one with `aloft machine start ID`)"
        );
    };
    if !args.select {
        return Ok(first.id.clone());
    }
    for (i, m) in started.iter().enumerate() {
        let group = m.config.metadata.get(PROCESS_GROUP).map(String::as_str);
        printer.note(format_args!(
            "{:>3}) {} {} ({}, {})",
            i + 1,
            m.id,
            m.name,
            group.unwrap_or("app"),
            m.region
        ));
    }
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .context("reading the choice")??;
    let n: usize = answer
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=started.len()).contains(n))
        .ok_or_else(|| {
            anyhow!(
                "{:?} is not one of the numbers 1 to {}",
                answer.trim(),
                started.len()
            )
        })?;
    Ok(started[n - 1].id.clone())
}

/// Runs the session on the local terminal; the command's exit code.
pub(crate) async fn attach(
    client: &Client,
    printer: &Printer,
    app: &str,
    id: &str,
    command: Option<String>,
    term: String,
) -> anyhow::Result<ExitCode> {
    let (cols, rows) = terminal::size().unwrap_or(DEFAULT_TERMINAL_SIZE);
    let params = ConsoleParams {
        cmd: command,
        cols,
        rows,
        term,
    };
    let (mut writer, mut reader) = client
        .console(app, id, &params)
        .await
        .map_err(|e| super::machine::not_found_hint(e, app, id))
        .with_context(|| format!("could not open a console on machine {id}"))?;
    let mut winch = signal(SignalKind::window_change()).context("watching the terminal size")?;
    let _raw = terminal::RawMode::enable()?;
    let mut keys = stdin_chunks();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            event = reader.next() => match event? {
                ConsoleEvent::Output(bytes) => {
                    if printer.raw(&bytes).is_err() {
                        // Nowhere to show the session any more: end it.
                        writer.close().await;
                        bail!("stdout closed: the console session was ended");
                    }
                }
                ConsoleEvent::Exit(code) => {
                    return Ok(ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)));
                }
            },
            typed = keys.recv(), if stdin_open => match typed {
                Some(bytes) => writer.input(&bytes).await?,
                None => stdin_open = false,
            },
            _ = winch.recv() => {
                if let Some((cols, rows)) = terminal::size() {
                    writer.resize(cols, rows).await?;
                }
            }
        }
    }
}

/// What is typed, read on a thread of its own (a blocking read of stdin would keep a
/// runtime's blocking pool, and so the CLI, from ending with the session).
fn stdin_chunks() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}
