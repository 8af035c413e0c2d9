//! `aloft agent`: runs the agent in the foreground until SIGINT/SIGTERM.
//!
//! Prints the API URL and where the token is; machines keep running across an agent restart
//! (the next start reaps their processes and relaunches the ones that should run).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::AgentArgs;

/// The proxy settings of `aloft agent`'s flags, over the proxy's defaults.
fn aloft_proxy_config(args: &AgentArgs) -> aloft_agent::ProxyConfig {
    aloft_agent::ProxyConfig {
        bind_ip: args.proxy_bind,
        port_map: args.port_map.iter().copied().collect(),
        idle_window: args.idle_window,
        // A pass every quarter of the idle window (1 s to 60 s): a machine idle for the window
        // is stopped soon after, whatever the window.
        autostop_interval: (args.idle_window / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        ),
        region: args
            .regions
            .first()
            .cloned()
            .unwrap_or_else(|| aloft_agent::ProxyConfig::default().region),
        ..aloft_agent::ProxyConfig::default()
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let mut config = aloft_agent::AgentConfig::new(
        args.data_dir
            .clone()
            .unwrap_or_else(aloft_client::default_data_dir),
    );
    config.listen = args.listen;
    config.proxy = (!args.no_proxy).then(|| aloft_proxy_config(&args));
    config.regions = args.regions;
    config.logs = aloft_agent::LogLimits {
        total_bytes: args.log_budget_mb << 20,
        min_free_bytes: args.log_min_free_mb << 20,
        ..config.logs
    };
    config.limits = aloft_agent::settings::Limits {
        max_group_count: args.max_group_count,
        memory_overcommit: args.memory_overcommit,
        max_api_connections: args.max_api_connections,
        api_header_timeout: args.api_header_timeout,
        ..aloft_agent::settings::Limits::default()
    };
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
            handle.data_dir.join(aloft_api::local::TOKEN_FILE).display()
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
