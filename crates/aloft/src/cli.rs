//! The command line: clap structs only. Behaviour lives in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aloft",
    version,
    about = "Run fly.toml apps with process groups on machines you own"
)]
pub struct Cli {
    /// More log output (-v, -vv); ALOFT_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and inspect fly.toml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Platform information: VM sizes, regions.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Run the agent: the Machines API, state store and process supervisor of this host.
    Agent(AgentArgs),
}

/// `aloft agent`.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Where state, the API token and machine logs live [default: $XDG_STATE_HOME/aloft or ~/.local/state/aloft].
    #[arg(long, env = "ALOFT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the API; port 0 picks a free port (written to <data-dir>/agent.addr).
    #[arg(long, default_value = "127.0.0.1:4280")]
    pub listen: std::net::SocketAddr,
    /// A region this agent hosts (repeatable) [default: every Fly region code].
    #[arg(long = "region", value_name = "CODE")]
    pub regions: Vec<String>,
}

/// `-c/--config`, shared by every command that reads fly.toml.
#[derive(Debug, Args, Clone)]
pub struct ConfigPath {
    /// Path to the app config (fly.toml, fly.json or fly.yaml).
    #[arg(short = 'c', long = "config", default_value = "fly.toml")]
    pub path: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check fly.toml; exit 0 when valid, 1 when not. Diagnostics go to stderr.
    Validate {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Show process groups, the default group and each group's machine config.
    Show {
        #[command(flatten)]
        config: ConfigPath,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlatformCommand {
    /// The VM size presets.
    VmSizes {
        #[arg(long)]
        json: bool,
    },
}
