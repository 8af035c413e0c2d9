//! `aloft agent`: runs the agent in the foreground until SIGINT/SIGTERM.
//!
//! Prints the API URL and where the token is; machines keep running across an agent restart
//! (the next start reaps their processes and relaunches the ones that should run).

use std::process::ExitCode;

use anyhow::Context as _;

use crate::commands::Context;

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
