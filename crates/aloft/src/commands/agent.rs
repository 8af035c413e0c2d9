//! `aloft agent`: runs the agent in the foreground until SIGINT/SIGTERM.
//!
//! Prints the API URL and where the token is; machines keep running across an agent restart
//! (the next start reaps their processes and relaunches the ones that should run).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::AgentArgs;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let mut config =
        aloft_agent::AgentConfig::new(args.data_dir.unwrap_or_else(aloft_agent::default_data_dir));
    config.listen = args.listen;
    config.regions = args.regions;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async move {
        let handle = aloft_agent::Agent::start(config).await?;
        eprintln!(
            "aloft agent listening on {} (data dir {}, token in {})",
            handle.url(),
            handle.data_dir.display(),
            handle
                .data_dir
                .join(aloft_agent::settings::TOKEN_FILE)
                .display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("aloft agent stopping; machines keep running until the next start reaps them");
        handle.shutdown().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
