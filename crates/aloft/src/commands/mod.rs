//! One module per command family; `run` dispatches.

mod agent;
mod config;
mod platform;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Config(cmd) => config::run(cmd),
        Command::Platform(cmd) => platform::run(cmd),
        Command::Agent(args) => agent::run(args),
    }
}
