//! One module per command family; `run` resolves each family's settings (`crate::settings`)
//! and dispatches. Every command gets a [`Context`]: the printer and the environment snapshot.

mod agent;
mod apps;
mod certs;
mod clone_volume;
mod common;
mod config;
mod console;
mod context;
mod copy;
mod deploy;
mod images;
mod logs;
mod machine;
mod network;
mod platform;
mod scale;
mod secrets;
mod status;
mod tokens;
mod up;
mod volumes;

use std::process::ExitCode;

use crate::cli::{AppArgs, Cli, Command};
use crate::printer::Printer;
use crate::settings::{self, ApiSettings, DeploySettings, Env, LogsSettings, UpSettings};
use aloft_client::Client;

/// What every command is given.
pub struct Context<'a> {
    /// The only way commands print.
    pub printer: &'a Printer,
    /// The environment, read once in `main`; resolved through `settings` only.
    pub env: &'a Env,
    /// `-C/--context`.
    pub context: Option<String>,
}

impl Context<'_> {
    /// The app of `-a`/`ALOFT_APP`/fly.toml (see [`settings::app_name`]).
    pub fn app(&self, args: &AppArgs) -> anyhow::Result<String> {
        settings::app_name(args, self.env)
    }

    /// How to reach the agent (see [`ApiSettings::resolve_with_context`]).
    pub fn api(&self) -> anyhow::Result<ApiSettings> {
        ApiSettings::resolve_with_context(self.env, self.context.as_deref())
    }

    /// A client of the agent of [`Context::api`].
    pub fn client(&self) -> anyhow::Result<Client> {
        self.api()?.client(Some(pin_notes(self.printer)))
    }
}

/// Prints a certificate pinned on first use as a note.
pub fn pin_notes(printer: &crate::printer::Printer) -> aloft_client::OnPin {
    let notes = printer.notes();
    aloft_client::OnPin(std::sync::Arc::new(move |pin| notes.note(pin)))
}

pub fn run(cli: Cli, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(cmd) => config::run(cmd, ctx),
        Command::Platform(cmd) => platform::run(cmd, ctx),
        Command::Context(cmd) => context::run(cmd, ctx),
        Command::Agent(args) => match args.helper.clone() {
            Some(helper) => agent::helper(helper, ctx),
            None => agent::run(settings::agent_config(*args, ctx.env), ctx),
        },
        Command::Apps(cmd) => apps::run(cmd, ctx),
        Command::Deploy(args) => {
            let loaded = common::load_config(&args.app.config, ctx.printer)?;
            deploy::run(DeploySettings::resolve(args, ctx.env, loaded)?, ctx)
        }
        Command::Up(args) => {
            let loaded = common::load_config(&args.app.config, ctx.printer)?;
            up::run(UpSettings::resolve(args, ctx.env, loaded)?, ctx)
        }
        Command::Status(args) => status::run(&ctx.app(&args.app)?, ctx),
        Command::Releases(args) => match args.command {
            None => status::releases(&ctx.app(&args.app)?, ctx),
            Some(crate::cli::ReleasesCommand::Rollback {
                version,
                app,
                yes,
                detach,
            }) => deploy::rollback(&ctx.app(&app)?, version, yes, detach, ctx),
        },
        Command::Logs(args) => logs::run(LogsSettings::resolve(args, ctx.env)?, ctx),
        Command::Scale(cmd) => scale::run(cmd, ctx),
        Command::Machine(cmd) => machine::run(cmd, ctx),
        Command::Images(cmd) => images::run(cmd, ctx),
        Command::Ips(cmd) => network::run_ips(cmd, ctx),
        Command::Dig(args) => network::run_dig(args, ctx),
        Command::Certs(cmd) => certs::run(cmd, ctx),
        Command::Tokens(cmd) => tokens::run(cmd, ctx),
        Command::Secrets(cmd) => secrets::run(cmd, ctx),
        Command::Volumes(cmd) => volumes::run(cmd, ctx),
        Command::Ssh(cmd) => console::run_ssh(cmd, ctx),
        Command::Console(args) => console::run_console(args, ctx),
    }
}
