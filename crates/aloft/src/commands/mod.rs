//! One module per command family; `run` dispatches.

mod agent;
mod apps;
mod common;
mod config;
mod deploy;
mod logs;
mod machine;
mod platform;
mod scale;
mod status;
mod up;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(cmd) => config::run(cmd),
        Command::Platform(cmd) => platform::run(cmd),
        Command::Agent(args) => agent::run(args),
        Command::Apps(cmd) => apps::run(cmd),
        Command::Deploy(args) => deploy::run(args),
        Command::Up(args) => up::run(args),
        Command::Status(args) => status::run(args),
        Command::Releases(args) => status::releases(args),
        Command::Logs(args) => logs::run(args),
        Command::Scale(cmd) => scale::run(cmd),
        Command::Machine(cmd) => machine::run(cmd),
    }
}
