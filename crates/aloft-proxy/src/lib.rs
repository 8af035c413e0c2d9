//! The Aloft proxy: the data plane in front of the machines an agent hosts.
//!
//! It listens on every external port of every service of every app (`[http_service]` → 80 and
//! 443, `[[services.ports]]`, port ranges), and sends each connection or request to a machine
//! that carries the service, is started, not cordoned and passes its service checks
//! (machines-api §4). It balances by load bands (§4.3), retries refused connections on another
//! machine, terminates TLS, speaks HTTP/1.1 and HTTP/2 to clients, starts stopped machines on
//! demand and stops idle ones (§4.4), runs health checks (§4.5) and counts everything for
//! Prometheus.
//!
//! Many apps share the HTTP ports: apps whose services on a port all have the `http` handler
//! (and agree on `tls`: `[http_service]`'s 80 and 443) are served there together, each
//! request routed by its `Host` (after TLS termination on 443) to the app answering at that
//! hostname ([`AppRoutes::hostnames`]: `<app>.<domain>`, custom ones), the certificate picked
//! by SNI. One app on a port takes every host (a laptop with one app just works); with
//! several, an unknown host gets a 404 naming the hostnames served there. Raw TCP and other
//! services keep ports of their own ([`port_conflicts`]). An app's Flycast addresses
//! ([`AppRoutes::flycast`]) get a listener per service port that serves that app alone; a
//! private app ([`AppRoutes::public`] false) is served there only.
//!
//! # How the agent drives it
//!
//! ```no_run
//! # async fn demo(apps: Vec<aloft_proxy::AppRoutes>, control: std::sync::Arc<dyn aloft_proxy::MachineControl>) {
//! use aloft_proxy::{Proxy, ProxyConfig, RouteTable};
//! // 1. Build the table from the store, on start and after every machine, hostname or
//! //    address change: per app its machines, hostnames, Flycast addresses, publicness.
//! let (tx, rx) = tokio::sync::watch::channel(RouteTable::from_machines(&apps));
//! // 2. Start the proxy once. `port_map` maps external ports to local ones (`--port-map 80=8080`).
//! let proxy = Proxy::spawn(ProxyConfig::default(), rx, control).expect("TLS certificates load");
//! // 3. Push new tables; listeners follow. Before a deploy, refuse clashes and UDP:
//! //    aloft_proxy::port_conflicts(&tx.borrow(), "app", &services) and
//! //    aloft_proxy::reject_udp_services(&services).
//! tx.send_replace(RouteTable::from_machines(&apps));
//! // 4. Read back where ports listen (or why not), check results and metrics.
//! let _bound = proxy.bound_ports();
//! let _flycast = proxy.bound_flycast();
//! let _checks = proxy.checks(); // watch of machine id → Vec<CheckStatus>
//! let _text = proxy.render_metrics();
//! // 5. Certificates (`aloft certs`, ACME) replace the self-signed ones at run time, and
//! //    ACME challenges are answered while an issuance runs.
//! # let (chain_pem, key_pem) = (String::new(), String::new());
//! let _ = proxy.set_certificate("www.example.com", &chain_pem, &key_pem);
//! proxy.challenges().set_http01("token", "token.key-authorization");
//! # }
//! ```
//!
//! [`MachineControl`] is how the proxy starts (autostart) and stops (autostop) machines; see
//! its contract. Health results come out as `aloft_api::CheckStatus` per machine through
//! [`ProxyHandle::checks`]; the agent stores them in `Machine.checks` and deploy waits on them.
//!
//! # Behaviour worth knowing
//!
//! * Routing: a machine is routable when started (or just autostarted by the proxy), it has a
//!   host port for the service, and none of its service checks is `critical`. A check that has
//!   not run yet is reported `warning` and does not block routing (a refused connection is
//!   retried elsewhere anyway); deploys wait for `passing` through [`ProxyHandle::checks`].
//! * Regions (§4.3 steps 2–4): machines in the proxy's own region ([`ProxyConfig::region`])
//!   take all traffic while any of them can; soft limits shift load only within a region.
//!   Another region is used only when every machine of the closer one is unhealthy, stopped
//!   with autostart off, or at `hard_limit`; autostart wakes a machine of the closest region
//!   first. Deliberate difference from Fly, which ranks by measured RTT: Aloft measures none,
//!   so all regions other than the preferred ones and its own are equally far and balanced as
//!   one (see [`balance`]).
//! * Client hints (§4.2, http handler; see [`hints`]). The headers reach the app unchanged.
//!   `Fly-Prefer-Region: iad,ord` ranks those regions, in order, before the proxy's own (the
//!   first 8 count; an alias — `us`, `na`, `sa`, `eu`, `ap`, `af` — ranks all its regions
//!   alike; Fly groups regions by measured RTT, Aloft by location).
//!   `Fly-Prefer-Instance-Id` takes that machine when it is routable and under its hard
//!   limit (it is not autostarted for the hint); otherwise the request is routed as usual
//!   and the app gets `Fly-Preferred-Instance-Unavailable: <id>`. `Fly-Force-Instance-Id`
//!   routes only to that machine: autostarted when stopped and autostart applies, queued at
//!   its hard limit like any request, else a 503 naming the machine and why — never another
//!   machine. On a `connections` keep-alive connection an instance hint naming another
//!   machine moves the connection there; a region hint applies when the connection picks
//!   its machine.
//! * `fly-replay` (§4.2; see [`replay`]): a machine's response with a `fly-replay` header is
//!   never shown to the client; the proxy sends the same request again to the target it names
//!   and answers with that response. `region=ord[,iad]` takes a machine of those regions only
//!   (in order; none there: 503), `instance=<id>` exactly that machine (like
//!   `Fly-Force-Instance-Id`, 503 naming it and why), `prefer_instance=<id>` that machine when
//!   it can, `elsewhere=true` any machine but the one that replied, `timeout=2s` bounds the
//!   search for a machine; `state=…` reaches the target in
//!   `fly-replay-src: instance=<id>;region=<r>;t=<unix µs>;state=…` (a client's own
//!   `fly-replay-src` is removed). Client hints do not apply to a replay, and a replay
//!   neither uses nor moves a `connections` client connection's sticky machine: it takes a
//!   slot of its own until its response is read. At most 10 replays per request, then 502. Requests are replayable when they
//!   have no body or a `Content-Length` of at most 1 MiB: such bodies are read in full before
//!   the first send (only requests with a body pay for this); larger bodies and bodies of
//!   unknown length are streamed, and a `fly-replay` answer to them reaches the client
//!   unchanged (logged as a warning), as does a header that cannot be parsed (unknown field,
//!   no target, empty value). Deliberate differences from Fly: `app=<other app>` is answered
//!   with a 502 (a replay stays within the request's app; `app=` naming the request's own app
//!   is accepted);
//!   `fallback=` is accepted but ignored (a target that cannot be reached gives the error,
//!   not a route back to the replying machine); the JSON replay body form and
//!   `fly-replay-cache` are not supported; region aliases work as in `Fly-Prefer-Region`;
//!   replayable bodies are capped at 1 MiB as in Fly's current docs (the
//!   spec's older figure is 10 MB), since the buffer is held per in-flight request.
//! * Load: `concurrency.type = "requests"` counts in-flight requests (upstream connections are
//!   pooled for `upstream_idle_timeout`); `"connections"` (the default) counts client
//!   connections, and with the http handler a client connection sticks to its machine.
//! * Retries: a refused connect, or a pooled connection found dead before the request was
//!   sent, is retried on another machine (up to `max_attempts`); a body-less request is also
//!   replayed after the machine fails mid-answer. A machine that refused is avoided for 2 s.
//! * Autostart holds the request (up to `start_timeout`) and polls the booting app's port
//!   every 5 ms; concurrent requests share one start. A machine counts as booting from the
//!   start request until its first accepted connection (a refusal of an attempt begun before
//!   that still counts), so requests that see the agent's `started` early wait for the app
//!   instead of failing over. The proxy trusts its own start/stop
//!   of a machine until the next table reports a new state for it (or 30 s pass).
//! * `http_options.h2_backend = true`: requests go to the machines over HTTP/2 (h2c with prior
//!   knowledge, one connection per machine and proxy worker thread, shared by its requests), as
//!   gRPC servers need;
//!   response trailers reach HTTP/2 clients. Such ports are served by hyper only.
//! * `http_options.compress = true`: responses of text-like types (text/* but event streams,
//!   JSON, JavaScript, XML, SVG, wasm) of unknown or ≥ 1 KiB length are gzipped (streamed) for
//!   clients whose `Accept-Encoding` allows gzip, unless the app set `Content-Encoding` or
//!   `Cache-Control: no-transform`, or answered 204/206/304 or a HEAD; `Vary: accept-encoding`
//!   is added and a strong `ETag` made weak. Such ports are served by hyper only.
//! * HTTP/1.1 fast path (`h1`): plain HTTP/1.1 requests skip hyper (see the module docs);
//!   what the machine and the client see is the same either way, except that header names
//!   keep the case the client or machine wrote (hyper lower-cases them), and a request whose
//!   sending to the machine failed part-way is sent again even with a body (the machine
//!   cannot have had all of it; hyper cannot tell, and answers 502). On the fast path a
//!   client connection may idle `http_options.idle_timeout` (default 60 s) between requests,
//!   and a request's head must arrive within the header read timeout of its first byte;
//!   connections hyper serves (HTTP/2, or after a hand-over) count idle time against the
//!   header read timeout, as hyper does.
//! * Threads: with `workers > 0` every port has one listener per worker thread
//!   (SO_REUSEPORT), each on its own single-threaded runtime with its own upstream pool.
//!
//! Architecture invariant: the proxy knows nothing of the store, the runtime or the API server.
//! It depends on `aloft-api` types only and acts on machines only through [`MachineControl`].

pub mod balance;
pub mod challenges;
mod compress;
mod config;
pub mod control;
mod core;
mod counted;
mod h1;
mod headers;
pub mod health;
pub mod hints;
mod http;
mod hyper_path;
mod lifecycle;
pub mod listeners;
mod machines;
pub mod metrics;
pub mod options;
mod pool;
pub mod proxy_proto;
pub mod replay;
mod select;
pub mod statics;
pub mod table;
mod tasks;
mod tcp;
pub mod tls;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use challenges::Challenges;
pub use config::ProxyConfig;
pub use control::{BoxFuture, ControlError, MachineControl, NoControl};
pub use health::CheckReport;
pub use listeners::{BoundFlycast, BoundPorts};
pub use table::{
    claimed_ports, host_name, port_conflicts, reject_udp_services, AppName, AppRoutes, Backend,
    BackendState, Bind, ConcurrencyKind, Listener, MachineEntry, PortConflict, PortRoute,
    PrimaryRegion, RouteTable, ServicePolicy, UnsupportedService,
};
pub use tls::{CertFiles, TlsError, TlsSource};

/// Entry point: see [`Proxy::spawn`].
pub struct Proxy;

impl Proxy {
    /// Starts the proxy on the current tokio runtime: listeners following `table`, health
    /// checks, the autostop loop. Fails only when TLS certificates cannot be loaded; ports that
    /// cannot be bound are reported through [`ProxyHandle::bound_ports`] instead.
    pub fn spawn(
        config: ProxyConfig,
        table: watch::Receiver<RouteTable>,
        control: Arc<dyn MachineControl>,
    ) -> Result<ProxyHandle, TlsError> {
        let challenges = Arc::new(Challenges::default());
        let tls = tls::TlsStore::load_with(&config.tls, Some(table.clone()), challenges.clone())?;
        let (workers, stop_workers) = tasks::start_workers(config.workers)?;
        let (bound_tx, bound_rx) = watch::channel(BoundPorts::new());
        let (flycast_tx, flycast_rx) = watch::channel(BoundFlycast::new());
        let (checks_tx, checks_rx) = watch::channel(CheckReport::new());
        let core = core::Core::new(
            config,
            table.clone(),
            control,
            tls,
            challenges.clone(),
            bound_rx.clone(),
            workers,
        );
        let tasks = vec![
            tokio::spawn(listeners::manage(
                core.clone(),
                table.clone(),
                bound_tx,
                flycast_tx,
            )),
            tokio::spawn(health::supervise(table, core.health().clone(), checks_tx)),
            tokio::spawn(core::run_autostop(core.clone())),
        ];
        Ok(ProxyHandle {
            core,
            challenges,
            bound: bound_rx,
            flycast: flycast_rx,
            checks: checks_rx,
            tasks,
            _stop_workers: stop_workers,
        })
    }
}

/// The running proxy. Dropping it stops listeners, checks and autostop (connections in
/// flight finish on their own).
pub struct ProxyHandle {
    core: Arc<core::Core>,
    challenges: Arc<Challenges>,
    bound: watch::Receiver<BoundPorts>,
    flycast: watch::Receiver<BoundFlycast>,
    checks: watch::Receiver<CheckReport>,
    tasks: Vec<JoinHandle<()>>,
    /// Dropped with the handle: stops the worker threads.
    _stop_workers: Option<watch::Sender<()>>,
}

impl ProxyHandle {
    /// Where each external port listens, or the message saying why it cannot.
    pub fn bound_ports(&self) -> BoundPorts {
        self.bound.borrow().clone()
    }

    /// A watch of [`ProxyHandle::bound_ports`], to wait for ports to come up.
    pub fn bound_watch(&self) -> watch::Receiver<BoundPorts> {
        self.bound.clone()
    }

    /// Where each Flycast listener (address, external port) listens, or why it cannot.
    pub fn bound_flycast(&self) -> watch::Receiver<BoundFlycast> {
        self.flycast.clone()
    }

    /// The ACME challenge registry: set HTTP-01 tokens and TLS-ALPN-01 certificates there
    /// while an issuance runs (see [`challenges`]).
    pub fn challenges(&self) -> Arc<Challenges> {
        self.challenges.clone()
    }

    /// Serves this certificate (PEM chain, PEM key) for `hostname` (or `*.domain`) from the
    /// next TLS handshake on, in place of any earlier one: after `aloft certs add`, an ACME
    /// issuance or renewal. Listeners and open connections are untouched.
    pub fn set_certificate(
        &self,
        hostname: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), TlsError> {
        self.core
            .tls()
            .set_certificate(hostname, chain_pem, key_pem)
    }

    /// Stops serving the certificate set for `hostname`; it gets a self-signed one again.
    pub fn remove_certificate(&self, hostname: &str) {
        self.core.tls().remove_certificate(hostname)
    }

    /// Check results per machine id, updated whenever a status or output changes.
    pub fn checks(&self) -> watch::Receiver<CheckReport> {
        self.checks.clone()
    }

    /// Whether machine `id` currently fails a service check (is out of rotation).
    pub fn failing(&self, machine_id: &str) -> bool {
        self.core.health().failing(machine_id)
    }

    /// Metrics in the Prometheus text exposition format.
    pub fn render_metrics(&self) -> String {
        let services = self.core.selector().registry().services();
        let per_backend: Vec<(String, u16, String, Arc<balance::BackendLoad>)> = services
            .iter()
            .flat_map(|((app, port), svc)| {
                svc.snapshot()
                    .into_iter()
                    .map(move |(m, load)| (app.clone(), *port, m, load))
            })
            .collect();
        let sources: Vec<metrics::MetricSource<'_>> = per_backend
            .iter()
            .map(|(app, port, m, load)| metrics::MetricSource {
                app,
                service: *port,
                machine: m,
                metrics: &load.metrics,
            })
            .collect();
        let unavailable = self.core.selector().unavailable();
        metrics::render(&sources, &unavailable)
    }

    /// Runs one autostop pass now (normally every `autostop_interval`); returns stopped ids.
    pub async fn autostop_now(&self) -> Vec<String> {
        self.core.autostop_pass().await
    }

    /// Stops everything the proxy runs.
    pub fn shutdown(self) {}
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
