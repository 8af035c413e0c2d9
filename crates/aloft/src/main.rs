//! `aloft`: the CLI and the agent daemon in one binary.
//!
//! Layering (as uv does it): `cli` holds the clap structs and nothing else; each module of
//! `commands` resolves its arguments into settings and runs one command; `output` holds the
//! table/JSON printing shared by commands. Exit codes: 0 success, 1 failure the user can fix
//! (invalid config, refused action), 2 usage error (clap's own).

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the agent's API (long machine lists) and proxy (per-request buffers) allocate and
/// free many small blocks across threads, where it is markedly cheaper than glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            // Library errors often repeat their source in their own message: print a cause
            // only when it adds something.
            let mut said = err.to_string();
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if !said.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                said.push_str(&text);
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,aloft=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALOFT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
