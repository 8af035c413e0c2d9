//! `aloft config validate|show`.

use std::process::ExitCode;

use crate::cli::ConfigCommand;

pub fn run(_cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("config commands are being implemented")
}
