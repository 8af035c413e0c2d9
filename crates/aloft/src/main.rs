//! `aloft`: the CLI and the agent daemon in one binary.
//!
//! Layering (as uv does it): `cli` holds the clap structs and nothing else; `settings` reads
//! the environment (once) and resolves flags > environment > fly.toml > defaults into one
//! struct per command family; `printer` is the one way commands print (plain or `--json`,
//! colour only on a terminal); each module of `commands` runs one command family. Exit codes:
//! 0 success, 1 failure the user can fix (invalid config, refused action), 2 usage error
//! (clap's own).

mod build;
mod cli;
mod commands;
mod contexts;
mod printer;
mod settings;
mod terminal;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// mimalloc: the agent's API (long machine lists) and proxy (per-request buffers) allocate and
/// free many small blocks across threads, where it is markedly cheaper than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // `aloft shim <dir>`: the agent's per-container shim (internal, not a user command). It
    // forks first thing, so it runs before clap, tracing or any thread.
    let mut args = std::env::args_os();
    if let (Some(_), Some(cmd), Some(dir), None) =
        (args.next(), args.next(), args.next(), args.next())
    {
        if cmd == "shim" {
            aloft_agent::shim_main(std::path::Path::new(&dir));
        }
    }
    let cli = parse_cli();
    let env = settings::Env::from_process();
    // Colour codes only for a terminal: the agent's log is often a file (`aloft agent 2>log`,
    // a service manager's journal), where they would be noise.
    let log_colour = settings::output_mode(false, &env, std::io::stderr().is_terminal()).colour;
    init_tracing(settings::log_filter(cli.verbose, &env), log_colour);
    if cli.json && !settings::has_json_output(&cli) {
        cli::Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "this command has no JSON output; run it without --json (JSON is printed by \
                 config show, platform, apps create|list, status, releases, scale show, \
                 machine list|status)",
            )
            .exit();
    }
    let printer = printer::Printer::new(settings::output_mode(
        cli.json,
        &env,
        std::io::stdout().is_terminal(),
    ));
    let ctx = commands::Context {
        printer: &printer,
        env: &env,
        context: cli.context.clone(),
    };
    match commands::run(cli, &ctx) {
        Ok(code) => code,
        Err(err) => {
            printer.error(&err);
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the environment variables in `aloft --help` (`-h` names the
/// main ones).
fn parse_cli() -> cli::Cli {
    let matches = cli::Cli::command()
        .after_help(settings::ENV_HELP_SHORT)
        .after_long_help(settings::env_help())
        .get_matches();
    cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `ALOFT_LOG` when it parses, else the level of `-v` (see `settings::log_filter`); ANSI
/// colours when `colour`.
fn init_tracing((from_env, default): (Option<String>, &'static str), colour: bool) {
    let filter = from_env
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}
