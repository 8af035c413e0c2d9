//! Settings of the proxy itself (per agent, not per app).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::tls::TlsSource;

/// Settings of the proxy itself (per agent, not per app).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Address the listeners bind (default `0.0.0.0`).
    pub bind_ip: IpAddr,
    /// External port → local port to listen on instead (`--port-map 80=8080`); 0 asks the OS
    /// for a free port (see [`ProxyHandle::bound_ports`]).
    pub port_map: BTreeMap<u16, u16>,
    /// This agent's region, sent upstream as `Fly-Region`.
    pub region: String,
    /// The domain apps answer at on the shared HTTP ports, `<app>.<domain>` (agent flag
    /// `--domain`, default `localhost`). The agent names apps' hostnames with it
    /// ([`crate::AppRoutes::hostnames`]); the proxy itself routes by those.
    pub domain: String,
    /// Certificates for the `tls` handler.
    pub tls: TlsSource,
    /// How long a request waits for a machine with capacity (or a start) before 503 / close.
    pub queue_timeout: Duration,
    /// How long autostart may take, including the app's boot until it accepts connections.
    pub start_timeout: Duration,
    /// After starting a machine, how long to wait for the agent's table to confirm it.
    pub table_confirm_timeout: Duration,
    /// Attempts per request/connection across machines (refused, reset before sending…).
    pub max_attempts: usize,
    /// Timeout of one upstream connect.
    pub upstream_connect_timeout: Duration,
    /// Idle upstream keep-alive connections are dropped after this (Fly: about 4 s).
    pub upstream_idle_timeout: Duration,
    /// Clients must send a request's headers within this (slowloris); per-port
    /// `http_options.headers_read_timeout` overrides it.
    pub header_read_timeout: Duration,
    /// Maximum size of a request's headers; larger gets 431.
    pub max_header_bytes: usize,
    /// How often the autostop loop runs.
    pub autostop_interval: Duration,
    /// How long a machine must have had no load before autostop stops it.
    pub idle_window: Duration,
    /// Apply `min_machines_running` in every region (Aloft default) rather than only in the
    /// app's primary region (Fly).
    pub min_running_all_regions: bool,
    /// Proxy worker threads, each with its own single-threaded runtime and its own listener
    /// per port (SO_REUSEPORT), so a connection and its upstream connections stay on one
    /// thread, as nginx workers do. 0 runs everything on the caller's runtime.
    pub workers: usize,
    /// Serve plain HTTP/1.1 requests on the fast path (`h1`), handing anything else to hyper;
    /// off, hyper serves every request (kept for comparison: `bench/proxy.sh`).
    pub h1_fast_path: bool,
    /// Where container machines' root filesystems are mounted, `<dir>/<machine id>/rootfs` (the
    /// runtime's layout, passed by the agent): `[[statics]]` are served from there. `None`
    /// sends every request to the app.
    pub machine_roots: Option<std::path::PathBuf>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_map: BTreeMap::new(),
            region: "local".into(),
            domain: "localhost".into(),
            tls: TlsSource::default(),
            queue_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(30),
            table_confirm_timeout: Duration::from_secs(1),
            max_attempts: 10,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(4),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            autostop_interval: Duration::from_secs(60),
            idle_window: Duration::from_secs(5 * 60),
            min_running_all_regions: true,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            h1_fast_path: true,
            machine_roots: None,
        }
    }
}
