//! `aloft agent`: runs the agent in the foreground until SIGINT/SIGTERM.
//!
//! Prints the API URL and where the token is; machines keep running across an agent restart
//! (the next start reaps their processes and relaunches the ones that should run).
//!
//! Its hidden helpers run without an agent: `aloft agent connect-info` is what an `ssh://`
//! client runs on the server (see `aloft_client::ConnectInfo`).

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::AgentHelper;
use crate::commands::Context;
use crate::settings;

/// Runs the agent of `config` (resolved by `settings::agent_config`).
pub fn run(config: aloft_agent::AgentConfig, ctx: &Context) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let insecure = config.insecure_listen && config.plain_http_off_loopback();
    rt.block_on(async move {
        let handle = aloft_agent::Agent::start(config).await?;
        ctx.printer.note(format_args!(
            "aloft agent listening on {} (data dir {}, token in {})",
            handle.url(),
            handle.data_dir.display(),
            handle.data_dir.join(aloft_api::local::TOKEN_FILE).display()
        ));
        if let Some(fingerprint) = &handle.tls_fingerprint {
            ctx.printer.note(format_args!(
                "API certificate fingerprint: {fingerprint} (clients pin it on first use; \
                 compare, or give it to `aloft context add … --fingerprint`)"
            ));
        }
        if insecure {
            ctx.printer.warn(format_args!(
                "the API is served over plain HTTP on {} (--insecure-listen): the token and \
                 secrets cross the network in clear text; prefer --tls",
                handle.addr
            ));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        ctx.printer
            .note("aloft agent stopping; machines keep running until the next start reaps them");
        handle.shutdown().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// Runs a hidden helper of `aloft agent`.
pub fn helper(helper: AgentHelper, ctx: &Context) -> anyhow::Result<ExitCode> {
    match helper {
        AgentHelper::ConnectInfo {
            data_dir,
            wait_stdin,
        } => {
            let info = connect_info(&settings::data_dir(data_dir.as_deref(), ctx.env));
            // One line (flushed): the client reads the first JSON line.
            ctx.printer.try_line(serde_json::to_string(&info)?)?;
            if wait_stdin {
                // Returns at EOF, or an error once the client's connection is gone.
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How to reach the agent of `data_dir` from this host, by its files and a connection attempt.
fn connect_info(data_dir: &Path) -> aloft_client::ConnectInfo {
    let api = std::fs::read_to_string(data_dir.join(aloft_api::local::ADDR_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        .map(|mut addr| {
            // An agent listening on every address answers on loopback.
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            addr
        });
    let listening = api.is_some_and(|a| answers(&a));
    let token_file = data_dir.join(aloft_api::local::TOKEN_FILE);
    let (token, token_error) = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => (Some(t.trim().to_string()), None),
        Ok(_) => (None, Some(format!("{} is empty", token_file.display()))),
        Err(e) => (None, Some(format!("{}: {e}", token_file.display()))),
    };
    aloft_client::ConnectInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir: data_dir.display().to_string(),
        api: api.map(|a| a.to_string()),
        listening,
        token,
        token_error,
    }
}

/// Whether something accepts TCP connections at `addr` (within 2 s).
fn answers(addr: &SocketAddr) -> bool {
    TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok()
}
