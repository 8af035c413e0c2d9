//! The routing table: what the proxy listens on and where each port's traffic may go.
//!
//! Built by a pure function, [`RouteTable::from_machines`], from the machines the agent stores,
//! grouped by app (machines-api §4.1): an app's routing table is the union of the `services` of
//! its machines; the candidates for an external port are the machines whose config has a `tcp`
//! service with a `ports` entry covering that port. Cordoned and destroyed machines are never
//! candidates; stopped/suspended ones are kept as candidates for autostart only.
//!
//! Architecture invariant: no IO here. The agent builds a table on every state change and pushes
//! it through a `tokio::sync::watch` channel to the running proxy.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aloft_api::{AutostopMode, Machine, MachineCheck, MachinePort, MachineService, MachineState};

use crate::options::PortOptions;

/// An app's name.
pub type AppName = String;
/// An app's primary region (`primary_region` of its fly.toml).
pub type PrimaryRegion = String;

/// One app's part of the table's input: its machines and where it is served.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppRoutes {
    pub app: AppName,
    pub primary_region: PrimaryRegion,
    pub machines: Vec<Machine>,
    /// Hostnames the app answers at on shared HTTP ports (`<app>.<domain>`, its custom
    /// hostnames): requests are routed there by `Host`, certificates chosen by SNI.
    pub hostnames: Vec<String>,
    /// Flycast (private service) addresses: every service port of the app is served on each
    /// of them, for this app only.
    pub flycast: Vec<IpAddr>,
    /// Whether the app's services are served on the public (wildcard) listeners. A private
    /// app is reached through its Flycast addresses only.
    pub public: bool,
}

impl AppRoutes {
    /// A public app without hostnames or Flycast addresses.
    pub fn new(
        app: impl Into<AppName>,
        primary_region: impl Into<PrimaryRegion>,
        machines: Vec<Machine>,
    ) -> AppRoutes {
        AppRoutes {
            app: app.into(),
            primary_region: primary_region.into(),
            machines,
            hostnames: Vec::new(),
            flycast: Vec::new(),
            public: true,
        }
    }
}

/// Everything the proxy needs, for every app the agent hosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTable {
    /// Public listeners (the proxy's bind address): external TCP port → who is served there.
    /// One app per port, except HTTP ports, which apps share by `Host` (see [`Listener`]).
    pub ports: BTreeMap<u16, Arc<Listener>>,
    /// Flycast listeners: (Flycast address, external port) → the one app served there.
    pub flycast: BTreeMap<SocketAddr, Arc<Listener>>,
    /// Every served route by app and external port (the same route on public and Flycast
    /// listeners: load, checks and autostop are per app and port).
    pub routes: BTreeMap<AppName, BTreeMap<u16, Arc<PortRoute>>>,
    /// Every app's hostnames (lowercase) → the app.
    pub hostnames: BTreeMap<String, AppName>,
    /// Every live machine (cordoned ones included: their checks still run, so a deploy can wait
    /// for a cordoned green machine to become healthy), by machine id.
    pub machines: BTreeMap<String, Arc<MachineEntry>>,
    /// Ports claimed by more than one app that cannot share them. Such ports are left out of
    /// [`RouteTable::ports`] (the proxy serves neither app there) and reported here so the
    /// agent can log them.
    pub conflicts: Vec<PortConflict>,
    /// Things the agent should log: oversized port ranges, unsupported handlers.
    pub warnings: Vec<String>,
}

/// Where a listener binds: a public port (on the proxy's bind address) or a Flycast address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bind {
    Public(u16),
    Flycast(SocketAddr),
}

impl Bind {
    /// The external port.
    pub fn port(&self) -> u16 {
        match self {
            Bind::Public(p) => *p,
            Bind::Flycast(a) => a.port(),
        }
    }
}

/// Who is served on one listener: one app (every connection and request is its), or several
/// apps whose services there are all HTTP, routed by `Host`.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    pub port: u16,
    /// The apps' routes, sorted by app.
    pub routes: Vec<Arc<PortRoute>>,
    /// With several apps: lowercase hostname → its app's route.
    by_host: HashMap<String, Arc<PortRoute>>,
}

impl Listener {
    fn single(route: Arc<PortRoute>) -> Listener {
        Listener {
            port: route.port,
            routes: vec![route],
            by_host: HashMap::new(),
        }
    }

    /// The only app's route, when one app is served here.
    pub fn only(&self) -> Option<&Arc<PortRoute>> {
        match self.routes.as_slice() {
            [r] => Some(r),
            _ => None,
        }
    }

    /// The route of a request for `host` (a `Host` header or `:authority`, port and trailing
    /// dot allowed, any case). With one app, every host is its; with several, an unknown or
    /// missing host has none.
    pub fn route_for(&self, host: Option<&str>) -> Option<&Arc<PortRoute>> {
        if let Some(r) = self.only() {
            return Some(r);
        }
        let host = host?;
        let name = host_name(host);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.by_host.get(name).or_else(|| {
            // A wildcard hostname (`*.example.com`) answers for one label more.
            let (_, parent) = name.split_once('.')?;
            self.by_host.get(&format!("*.{parent}"))
        })
    }

    /// The hostnames served here, sorted (for the 404 of an unknown host).
    pub fn hostnames(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_host.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The body of the 404 for a request whose host no app here answers at.
    pub fn unknown_host(&self, host: Option<&str>) -> String {
        let asked = match host {
            Some(h) => format!("no app answers at host {:?}", host_name(h)),
            None => "the request names no host".to_string(),
        };
        let names = self.hostnames();
        if names.is_empty() {
            format!("{asked} on port {} of this agent\n", self.port)
        } else {
            format!(
                "{asked} on port {} of this agent; it serves: {}\n",
                self.port,
                names.join(", ")
            )
        }
    }
}

/// The name part of a `Host` value: without `:port` and a trailing dot (`[v6]` kept whole).
pub fn host_name(host: &str) -> &str {
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// At most this many ports are served from one `start_port`..`end_port` range (a missing bound
/// means 0 or 65535, which would otherwise open tens of thousands of listeners).
pub const MAX_RANGE_PORTS: usize = 1024;

/// How one external port is served.
#[derive(Clone, Debug, PartialEq)]
pub struct PortRoute {
    pub app: String,
    pub primary_region: String,
    pub port: u16,
    pub options: PortOptions,
    /// Balancing and autostop settings of the service that owns the port.
    pub policy: ServicePolicy,
    /// Every machine carrying a service on this port, sorted by machine id. Includes stopped
    /// machines (autostart candidates) and machines in transient states (not routable).
    pub backends: Vec<Backend>,
    /// `[[statics]]` of the app (from its newest machine), served by the proxy on http ports.
    pub statics: Vec<crate::statics::StaticRule>,
}

/// `concurrency`, `autostop`, `autostart` and `min_machines_running` of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePolicy {
    pub concurrency: ConcurrencyKind,
    /// Below this load a machine is preferred (default 20).
    pub soft_limit: u32,
    /// At this load a machine takes nothing more (default: unlimited).
    pub hard_limit: Option<u32>,
    pub autostop: AutostopMode,
    /// Absent in the config means enabled (machines-api §2.5).
    pub autostart: bool,
    pub min_machines_running: u32,
}

impl Default for ServicePolicy {
    fn default() -> Self {
        ServicePolicy {
            concurrency: ConcurrencyKind::Connections,
            soft_limit: DEFAULT_SOFT_LIMIT,
            hard_limit: None,
            autostop: AutostopMode::Off,
            autostart: true,
            min_machines_running: 0,
        }
    }
}

/// Fly's default `soft_limit`.
pub const DEFAULT_SOFT_LIMIT: u32 = 20;

/// What a service's load counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConcurrencyKind {
    /// Open client connections (the default).
    Connections,
    /// In-flight HTTP requests (upstream connections are pooled).
    Requests,
}

/// One machine as a candidate for one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub machine_id: String,
    pub region: String,
    /// The service's `internal_port` inside the machine.
    pub internal_port: u16,
    /// `127.0.0.1:<host port>`; `None` when the runtime has not assigned a host port (yet).
    pub addr: Option<SocketAddr>,
    pub state: BackendState,
    /// Whether the machine's service defines checks that gate routing.
    pub has_checks: bool,
}

/// The part of a machine's state routing cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    Started,
    /// Stopped or created: cold start on autostart.
    Stopped,
    /// Suspended: resumed on autostart.
    Suspended,
    /// Anything transient (`starting`, `stopping`, `replacing`…) or failed: not routable.
    Other,
}

impl BackendState {
    pub fn from_machine(state: MachineState) -> Self {
        match state {
            MachineState::Started => BackendState::Started,
            MachineState::Stopped | MachineState::Created => BackendState::Stopped,
            MachineState::Suspended => BackendState::Suspended,
            _ => BackendState::Other,
        }
    }
    /// Whether autostart may start a machine in this state.
    pub fn startable(self) -> bool {
        matches!(self, BackendState::Stopped | BackendState::Suspended)
    }
}

/// A machine, for the health checker.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineEntry {
    pub app: String,
    pub machine_id: String,
    /// Changes on every update: check state restarts with a new version.
    pub instance_id: String,
    pub region: String,
    pub state: MachineState,
    pub cordoned: bool,
    /// Unix milliseconds of the latest `start` event, if any (grace periods count from it).
    pub started_at_ms: Option<i64>,
    /// internal port → host port (machines on the host network).
    pub host_ports: BTreeMap<u16, u16>,
    /// The machine's own address (containers): it listens on its internal ports there.
    pub private_ip: Option<IpAddr>,
    /// The internal ports its services listen on.
    pub internal_ports: Vec<u16>,
    /// Service checks (gate routing), named as Fly does: `servicecheck-00-http-8080`.
    pub service_checks: Vec<NamedCheck>,
    /// Top-level `checks` (informational: reported, never routing).
    pub machine_checks: Vec<NamedCheck>,
}

/// A check with its reported name and the internal port it probes.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedCheck {
    pub name: String,
    /// Internal port the check probes (the check's `port`, else the service's internal port).
    pub port: Option<u16>,
    pub check: MachineCheck,
}

impl MachineEntry {
    /// Address to probe for internal port `port`.
    pub fn upstream(&self, port: u16) -> Option<SocketAddr> {
        match self.private_ip {
            Some(ip) => Some(SocketAddr::new(ip, port)),
            None => self
                .host_ports
                .get(&port)
                .map(|hp| SocketAddr::from((Ipv4Addr::LOCALHOST, *hp))),
        }
    }

    /// Every address the proxy may hold connections to for this machine.
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        match self.private_ip {
            Some(ip) => self
                .internal_ports
                .iter()
                .map(|p| SocketAddr::new(ip, *p))
                .collect(),
            None => self
                .host_ports
                .values()
                .map(|hp| SocketAddr::from((Ipv4Addr::LOCALHOST, *hp)))
                .collect(),
        }
    }
}

/// Two apps want the same external port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConflict {
    pub port: u16,
    pub apps: Vec<String>,
}

impl fmt::Display for PortConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "port {} is claimed by apps {}: apps share a port only when all of them serve it \
             with the http handler and the same tls setting ([http_service]'s 80 and 443, routed \
             by Host); other services need a port of their own: change the port in one app's fly.toml",
            self.port,
            self.apps.join(", ")
        )
    }
}

impl RouteTable {
    /// Builds the table from every app's machines and addresses.
    ///
    /// Only `tcp` services are routed (UDP is refused at deploy, see [`reject_udp_services`]).
    /// Port settings (handlers, TLS, concurrency…) are taken from the newest machine (highest
    /// `instance_id`, a ULID) that carries the port, so a rolling deploy switches settings as soon
    /// as the first updated machine exists.
    ///
    /// Public ports: a port claimed by one public app is its; a port claimed by several is
    /// shared when every one of them serves it with the `http` handler and the same `tls`
    /// setting (requests routed by `Host`, see [`Listener`]), else a [`PortConflict`] and not
    /// served. Every service port of an app is also served on each of its Flycast addresses.
    pub fn from_machines(apps: &[AppRoutes]) -> RouteTable {
        let mut table = RouteTable::default();
        // port → app → route
        let mut public: BTreeMap<u16, Vec<Arc<PortRoute>>> = BTreeMap::new();
        for a in apps {
            for name in &a.hostnames {
                let name = name.to_ascii_lowercase();
                match table.hostnames.get(&name) {
                    Some(other) if *other != a.app => table.warnings.push(format!(
                        "hostname {name} is claimed by apps {other} and {}; it stays with {other}",
                        a.app
                    )),
                    Some(_) => {}
                    None => {
                        table.hostnames.insert(name, a.app.clone());
                    }
                }
            }
            let routes = app_routes(a, &mut table);
            if routes.is_empty() {
                continue;
            }
            for (port, route) in &routes {
                if a.public {
                    public.entry(*port).or_default().push(route.clone());
                }
                for ip in &a.flycast {
                    table.flycast.insert(
                        SocketAddr::new(*ip, *port),
                        Arc::new(Listener::single(route.clone())),
                    );
                }
            }
            let served = a.public || !a.flycast.is_empty();
            if served {
                table.routes.insert(a.app.clone(), routes);
            }
        }
        for (port, mut routes) in public {
            if routes.len() == 1 {
                let route = routes.pop().expect("one route");
                table.ports.insert(port, Arc::new(Listener::single(route)));
                continue;
            }
            let first = &routes[0].options;
            let shareable = routes
                .iter()
                .all(|r| r.options.http && r.options.tls == first.tls);
            if !shareable {
                table.conflicts.push(PortConflict {
                    port,
                    apps: routes.iter().map(|r| r.app.clone()).collect(),
                });
                for r in &routes {
                    if let Some(ports) = table.routes.get_mut(&r.app) {
                        ports.remove(&port);
                    }
                }
                continue;
            }
            let mut by_host = HashMap::new();
            for (name, app) in &table.hostnames {
                if let Some(r) = routes.iter().find(|r| r.app == *app) {
                    by_host.insert(name.clone(), r.clone());
                }
            }
            table.ports.insert(
                port,
                Arc::new(Listener {
                    port,
                    routes,
                    by_host,
                }),
            );
        }
        table
    }

    /// The route of `app` on external port `port`, wherever it is served.
    pub fn route(&self, app: &str, port: u16) -> Option<&Arc<PortRoute>> {
        self.routes.get(app).and_then(|ports| ports.get(&port))
    }

    /// The listener bound at `bind`.
    pub fn listener(&self, bind: Bind) -> Option<&Arc<Listener>> {
        match bind {
            Bind::Public(port) => self.ports.get(&port),
            Bind::Flycast(addr) => self.flycast.get(&addr),
        }
    }
}

/// One app's route per external port; its machines go into `table.machines`.
fn app_routes(a: &AppRoutes, table: &mut RouteTable) -> BTreeMap<u16, Arc<PortRoute>> {
    let app = &a.app;
    let mut drafts: BTreeMap<u16, PortDraft> = BTreeMap::new();
    for m in a.machines.iter().filter(|m| m.state.is_active()) {
        table
            .machines
            .insert(m.id.clone(), Arc::new(machine_entry(app, m)));
        if m.cordoned {
            continue;
        }
        for svc in m.config.services.iter().filter(|s| s.protocol == "tcp") {
            for mp in &svc.ports {
                let range = mp.external_ports();
                if range.clone().count() > MAX_RANGE_PORTS {
                    table.warnings.push(format!(
                        "app {app}, machine {}: port range {}-{} has more than {MAX_RANGE_PORTS} ports; \
                         only the first {MAX_RANGE_PORTS} are served",
                        m.id,
                        range.start(),
                        range.end()
                    ));
                }
                for port in range.filter(|p| *p != 0).take(MAX_RANGE_PORTS) {
                    let draft = drafts.entry(port).or_insert_with(|| PortDraft {
                        newest: String::new(),
                        port_cfg: mp.clone(),
                        service: svc.clone(),
                        backends: BTreeMap::new(),
                        statics: Vec::new(),
                    });
                    if m.instance_id >= draft.newest {
                        draft.newest = m.instance_id.clone();
                        draft.port_cfg = mp.clone();
                        draft.service = svc.clone();
                        draft.statics = static_rules(m);
                    }
                    draft
                        .backends
                        .entry((m.id.clone(), svc.internal_port))
                        .or_insert_with(|| Backend {
                            machine_id: m.id.clone(),
                            region: m.region.clone(),
                            internal_port: svc.internal_port,
                            addr: upstream_of(m, svc.internal_port),
                            state: BackendState::from_machine(m.state),
                            has_checks: !svc.checks.is_empty(),
                        });
                }
            }
        }
    }
    drafts
        .into_iter()
        .map(|(port, draft)| {
            let route = PortRoute {
                app: app.clone(),
                primary_region: a.primary_region.clone(),
                port,
                options: PortOptions::from_port(&draft.port_cfg),
                policy: ServicePolicy::from_service(&draft.service),
                backends: draft.backends.into_values().collect(),
                statics: if draft.port_cfg.handlers.iter().any(|h| h == "http") {
                    draft.statics
                } else {
                    Vec::new()
                },
            };
            (port, Arc::new(route))
        })
        .collect()
}

struct PortDraft {
    newest: String,
    port_cfg: MachinePort,
    service: MachineService,
    backends: BTreeMap<(String, u16), Backend>,
    statics: Vec<crate::statics::StaticRule>,
}

/// A machine's `[[statics]]` the proxy serves (those of a Tigris bucket are refused by the
/// agent before they get here).
fn static_rules(m: &Machine) -> Vec<crate::statics::StaticRule> {
    m.config
        .statics
        .iter()
        .filter(|s| s.tigris_bucket.is_none())
        .map(|s| {
            crate::statics::StaticRule::new(
                &s.url_prefix,
                &s.guest_path,
                s.index_document.as_deref(),
            )
        })
        .collect()
}

impl ServicePolicy {
    /// Reads a service's settings with Fly's defaults.
    pub fn from_service(svc: &MachineService) -> ServicePolicy {
        let mut p = ServicePolicy::default();
        if let Some(c) = &svc.concurrency {
            p.concurrency = if c.kind == "requests" {
                ConcurrencyKind::Requests
            } else {
                ConcurrencyKind::Connections
            };
            if let Some(s) = c.soft_limit {
                p.soft_limit = s;
            }
            p.hard_limit = c.hard_limit.filter(|h| *h > 0);
            if let Some(h) = p.hard_limit {
                p.soft_limit = p.soft_limit.min(h);
            }
        }
        p.autostop = svc.autostop.unwrap_or(AutostopMode::Off);
        p.autostart = svc.autostart.unwrap_or(true);
        p.min_machines_running = svc.min_machines_running.unwrap_or(0);
        p
    }
}

fn machine_entry(app: &str, m: &Machine) -> MachineEntry {
    let started_at_ms = m
        .events
        .iter()
        .filter(|e| e.kind == "start" && e.status == "started")
        .map(|e| e.timestamp)
        .max();
    let mut service_checks = Vec::new();
    let mut index = 0usize;
    for svc in &m.config.services {
        for check in &svc.checks {
            let kind = check.kind.clone().unwrap_or_else(|| "tcp".into());
            let port = check.port.unwrap_or(svc.internal_port);
            service_checks.push(NamedCheck {
                name: format!("servicecheck-{index:02}-{kind}-{}", svc.internal_port),
                port: Some(port),
                check: check.clone(),
            });
            index += 1;
        }
    }
    let machine_checks = m
        .config
        .checks
        .iter()
        .map(|(name, check)| NamedCheck {
            name: name.clone(),
            port: check.port,
            check: check.clone(),
        })
        .collect();
    MachineEntry {
        app: app.to_string(),
        machine_id: m.id.clone(),
        instance_id: m.instance_id.clone(),
        region: m.region.clone(),
        state: m.state,
        cordoned: m.cordoned,
        started_at_ms,
        host_ports: m.host_ports.clone(),
        private_ip: private_ip(m),
        internal_ports: m.config.services.iter().map(|s| s.internal_port).collect(),
        service_checks,
        machine_checks,
    }
}

/// A machine's private address, when it has its own (a container with a network namespace).
fn private_ip(m: &Machine) -> Option<IpAddr> {
    m.private_ip.parse().ok()
}

/// Where a machine listens for `internal_port`: its private address, or the host port it was
/// given on the host network.
fn upstream_of(m: &Machine, internal_port: u16) -> Option<SocketAddr> {
    match private_ip(m) {
        Some(ip) => Some(SocketAddr::new(ip, internal_port)),
        None => m
            .host_ports
            .get(&internal_port)
            .map(|hp| SocketAddr::from((Ipv4Addr::LOCALHOST, *hp))),
    }
}

/// External TCP ports the given service configs claim.
pub fn claimed_ports(services: &[MachineService]) -> std::collections::BTreeSet<u16> {
    services
        .iter()
        .filter(|s| s.protocol == "tcp")
        .flat_map(|s| s.ports.iter().flat_map(|p| p.external_ports()))
        .collect()
}

/// Ports that `app`, about to be deployed with `services`, would share with another app already
/// in `current` where they cannot be shared. Call before a deploy changes anything; an empty
/// result means no clash. Ports of `app` itself in `current` are ignored (a redeploy keeps its
/// own ports). HTTP ports are shared: no clash when `app` and every other app there serve the
/// port with the `http` handler and the same `tls` setting (`[http_service]`'s 80 and 443).
pub fn port_conflicts(
    current: &RouteTable,
    app: &str,
    services: &[MachineService],
) -> Vec<PortConflict> {
    let wanted = claimed_ports(services);
    let mut out = Vec::new();
    for port in wanted {
        let mut others: Vec<String> = Vec::new();
        if let Some(listener) = current.ports.get(&port) {
            let theirs: Vec<&Arc<PortRoute>> =
                listener.routes.iter().filter(|r| r.app != app).collect();
            let shared = match http_port(services, port) {
                Some(tls) => theirs
                    .iter()
                    .all(|r| r.options.http && r.options.tls == tls),
                None => false,
            };
            if !shared {
                others.extend(theirs.iter().map(|r| r.app.clone()));
            }
        }
        for c in current.conflicts.iter().filter(|c| c.port == port) {
            others.extend(c.apps.iter().filter(|a| *a != app).cloned());
        }
        if !others.is_empty() {
            others.sort();
            others.dedup();
            let mut apps = others;
            apps.push(app.to_string());
            out.push(PortConflict { port, apps });
        }
    }
    out
}

/// When every entry of `services` for external `port` has the `http` handler and they agree on
/// `tls`: that `tls` setting (the port can be shared with other HTTP apps).
fn http_port(services: &[MachineService], port: u16) -> Option<bool> {
    let mut tls = None;
    for p in services
        .iter()
        .filter(|s| s.protocol == "tcp")
        .flat_map(|s| s.ports.iter())
        .filter(|p| p.external_ports().contains(&port))
    {
        let has = |h: &str| p.handlers.iter().any(|x| x == h);
        if !has("http") || *tls.get_or_insert(has("tls")) != has("tls") {
            return None;
        }
    }
    tls
}

/// A service the proxy cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedService {
    #[error(
        "service on internal port {internal_port} uses protocol {protocol:?}: the Aloft proxy serves TCP services \
         only (raw, tls, http, proxy_proto handlers); UDP is not supported yet. Remove the service or set protocol = \"tcp\""
    )]
    Protocol {
        internal_port: u16,
        protocol: String,
    },
    #[error(
        "service on internal port {internal_port}, port {port}: handler {handler:?} is not supported by the Aloft proxy \
         (supported: \"tls\", \"http\", \"proxy_proto\"; none = raw TCP)"
    )]
    Handler {
        internal_port: u16,
        port: String,
        handler: String,
    },
}

/// Refuses services the proxy cannot route (UDP and other protocols, unknown handlers such as
/// `pg_tls`) so a deploy can fail with a clear message before anything changes.
pub fn reject_udp_services(services: &[MachineService]) -> Result<(), UnsupportedService> {
    for s in services {
        if s.protocol != "tcp" {
            return Err(UnsupportedService::Protocol {
                internal_port: s.internal_port,
                protocol: s.protocol.clone(),
            });
        }
        for p in &s.ports {
            if let Some(h) = p
                .handlers
                .iter()
                .find(|h| !matches!(h.as_str(), "tls" | "http" | "proxy_proto"))
            {
                let r = p.external_ports();
                let port = if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                };
                return Err(UnsupportedService::Handler {
                    internal_port: s.internal_port,
                    port,
                    handler: h.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Default interval/timeout of a check without one (flyctl's TCP check defaults).
pub(crate) fn check_timing(check: &MachineCheck) -> (Duration, Duration, Duration) {
    let d = |v: Option<aloft_api::GoDuration>, default: u64| {
        v.map(|g| g.as_duration())
            .unwrap_or(Duration::from_secs(default))
    };
    let interval = d(check.interval, 15).max(Duration::from_millis(100));
    let timeout = d(check.timeout, 2).max(Duration::from_millis(10));
    let grace = d(check.grace_period, 1);
    (grace, interval, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_api::{Concurrency, MachineConfig, MachineEvent};

    fn port(p: u16, handlers: &[&str]) -> MachinePort {
        MachinePort {
            port: Some(p),
            handlers: handlers.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        }
    }

    fn http_service(internal: u16) -> MachineService {
        MachineService {
            protocol: "tcp".into(),
            internal_port: internal,
            ports: vec![port(80, &["http"]), port(443, &["http", "tls"])],
            ..Default::default()
        }
    }

    fn machine(
        id: &str,
        group: &str,
        state: MachineState,
        services: Vec<MachineService>,
    ) -> Machine {
        let mut config = MachineConfig {
            image: "img".into(),
            services,
            ..Default::default()
        };
        config
            .metadata
            .insert("fly_process_group".into(), group.into());
        let host_ports = config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.internal_port, 40000 + i as u16))
            .collect();
        Machine {
            instance_id: "01A".into(),
            host_ports,
            ..Machine::new(id, "ams", state, config)
        }
    }

    fn build(apps: &[(String, String, Vec<Machine>)]) -> RouteTable {
        let apps: Vec<AppRoutes> = apps
            .iter()
            .map(|(a, r, ms)| AppRoutes::new(a.clone(), r.clone(), ms.clone()))
            .collect();
        RouteTable::from_machines(&apps)
    }

    /// The only app's route on public port `port`.
    fn route(t: &RouteTable, port: u16) -> &PortRoute {
        t.ports[&port].only().expect("one app on the port")
    }

    fn ids(route: &PortRoute) -> Vec<&str> {
        route
            .backends
            .iter()
            .map(|b| b.machine_id.as_str())
            .collect()
    }

    #[test]
    fn only_machines_carrying_the_port_are_candidates() {
        let web = machine("w1", "web", MachineState::Started, vec![http_service(8080)]);
        let worker = machine("k1", "worker", MachineState::Started, vec![]);
        let web2 = machine("w2", "web", MachineState::Stopped, vec![http_service(8080)]);
        let t = build(&[("app".into(), "ams".into(), vec![web, worker, web2])]);
        assert_eq!(t.ports.keys().copied().collect::<Vec<_>>(), vec![80, 443]);
        assert_eq!(ids(route(&t, 80)), vec!["w1", "w2"]);
        let w2 = &route(&t, 80).backends[1];
        assert_eq!(w2.state, BackendState::Stopped);
        assert_eq!(w2.addr, Some("127.0.0.1:40000".parse().unwrap()));
        assert!(route(&t, 443).options.tls && route(&t, 443).options.http);
        assert!(!route(&t, 80).options.tls);
        // The worker is still known to the health checker.
        assert!(t.machines.contains_key("k1"));
    }

    #[test]
    fn cordoned_and_destroyed_machines_are_excluded() {
        let mut c = machine("c1", "web", MachineState::Started, vec![http_service(8080)]);
        c.cordoned = true;
        let d = machine(
            "d1",
            "web",
            MachineState::Destroyed,
            vec![http_service(8080)],
        );
        let ok = machine("ok", "web", MachineState::Started, vec![http_service(8080)]);
        let t = build(&[("app".into(), "ams".into(), vec![c, d, ok])]);
        assert_eq!(ids(route(&t, 80)), vec!["ok"]);
        assert!(
            t.machines.contains_key("c1"),
            "cordoned machines keep their checks running"
        );
        assert!(!t.machines.contains_key("d1"));
    }

    #[test]
    fn port_ranges_udp_and_missing_host_ports() {
        let mut svc = MachineService {
            protocol: "tcp".into(),
            internal_port: 9000,
            ..Default::default()
        };
        svc.ports.push(MachinePort {
            start_port: Some(7000),
            end_port: Some(7002),
            ..Default::default()
        });
        let udp = MachineService {
            protocol: "udp".into(),
            internal_port: 53,
            ports: vec![port(53, &[])],
            ..Default::default()
        };
        let mut m = machine("m", "app", MachineState::Started, vec![svc, udp]);
        m.host_ports.clear();
        let t = build(&[("app".into(), "ams".into(), vec![m])]);
        assert_eq!(
            t.ports.keys().copied().collect::<Vec<_>>(),
            vec![7000, 7001, 7002]
        );
        assert_eq!(route(&t, 7001).backends[0].addr, None);
        assert!(!route(&t, 7001).options.http);
    }

    #[test]
    fn settings_come_from_the_newest_machine_and_defaults_apply() {
        let mut old = machine("a", "web", MachineState::Started, vec![http_service(8080)]);
        old.instance_id = "01A".into();
        let mut svc = http_service(8080);
        svc.concurrency = Some(Concurrency {
            kind: "requests".into(),
            soft_limit: Some(50),
            hard_limit: Some(10),
        });
        svc.autostop = Some(AutostopMode::Stop);
        svc.autostart = Some(false);
        svc.min_machines_running = Some(1);
        svc.ports[0].force_https = true;
        let mut new = machine("b", "web", MachineState::Started, vec![svc]);
        new.instance_id = "01B".into();
        let t = build(&[("app".into(), "fra".into(), vec![new, old.clone()])]);
        let r = &route(&t, 80);
        assert_eq!(r.policy.concurrency, ConcurrencyKind::Requests);
        assert_eq!(r.policy.hard_limit, Some(10));
        assert_eq!(r.policy.soft_limit, 10, "soft limit never above hard");
        assert_eq!(r.policy.autostop, AutostopMode::Stop);
        assert!(!r.policy.autostart);
        assert_eq!(r.policy.min_machines_running, 1);
        assert!(r.options.force_https);
        assert_eq!(r.primary_region, "fra");
        let t = build(&[("app".into(), "fra".into(), vec![old])]);
        assert_eq!(route(&t, 80).policy, ServicePolicy::default());
        assert!(
            route(&t, 80).policy.autostart,
            "absent autostart means enabled"
        );
    }

    #[test]
    fn clashing_apps_are_reported_and_not_served() {
        let a = machine("a", "app", MachineState::Started, vec![http_service(8080)]);
        // Raw TCP on port 80: it cannot share the port with an HTTP service.
        let mut other = http_service(3000);
        other.ports = vec![port(80, &[])];
        let b = machine("b", "app", MachineState::Started, vec![other]);
        let t = build(&[
            ("one".into(), "ams".into(), vec![a]),
            ("two".into(), "ams".into(), vec![b]),
        ]);
        assert_eq!(
            t.conflicts,
            vec![PortConflict {
                port: 80,
                apps: vec!["one".into(), "two".into()]
            }]
        );
        assert!(!t.ports.contains_key(&80));
        assert_eq!(route(&t, 443).app, "one");
        assert!(t.conflicts[0]
            .to_string()
            .contains("port 80 is claimed by apps one, two"));
    }

    #[test]
    fn port_conflicts_before_deploy() {
        let a = machine("a", "app", MachineState::Started, vec![http_service(8080)]);
        let t = build(&[("one".into(), "ams".into(), vec![a])]);
        // Redeploying the same app is fine.
        assert!(port_conflicts(&t, "one", &[http_service(9090)]).is_empty());
        // Another app's HTTP service shares 80 and 443; raw TCP or plain HTTP on 443 cannot.
        assert!(port_conflicts(&t, "two", &[http_service(9090)]).is_empty());
        let mut raw = http_service(9090);
        raw.ports = vec![port(80, &[]), port(443, &["http"])];
        let c = port_conflicts(&t, "two", &[raw]);
        assert_eq!(c.iter().map(|c| c.port).collect::<Vec<_>>(), vec![80, 443]);
        assert_eq!(c[0].apps, vec!["one", "two"]);
        let mut free = http_service(1);
        free.ports = vec![port(8443, &[])];
        assert!(port_conflicts(&t, "two", &[free]).is_empty());
    }

    fn app(name: &str, machines: Vec<Machine>, hostnames: &[&str]) -> AppRoutes {
        AppRoutes {
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            ..AppRoutes::new(name, "ams", machines)
        }
    }

    #[test]
    fn http_apps_share_ports_by_host() {
        let a = machine("a1", "app", MachineState::Started, vec![http_service(8080)]);
        let b = machine("b1", "app", MachineState::Started, vec![http_service(8080)]);
        let t = RouteTable::from_machines(&[
            app("one", vec![a], &["one.localhost", "WWW.Example.com"]),
            app("two", vec![b], &["two.localhost", "*.shop.example"]),
        ]);
        assert!(t.conflicts.is_empty(), "{:?}", t.conflicts);
        for port in [80, 443] {
            let l = &t.ports[&port];
            assert_eq!(l.routes.len(), 2);
            assert!(l.only().is_none());
            let app_of = |host: &str| l.route_for(Some(host)).map(|r| r.app.as_str());
            assert_eq!(app_of("one.localhost"), Some("one"));
            assert_eq!(app_of("two.localhost:8080"), Some("two"));
            assert_eq!(app_of("www.example.com."), Some("one"));
            assert_eq!(app_of("TWO.LOCALHOST"), Some("two"));
            assert_eq!(app_of("three.localhost"), None);
            assert_eq!(app_of("eu.shop.example"), Some("two"), "wildcard");
            assert_eq!(app_of("a.b.shop.example"), None, "one label only");
            assert!(l.route_for(None).is_none());
            assert_eq!(
                l.unknown_host(Some("three.localhost:80")),
                format!(
                    "no app answers at host \"three.localhost\" on port {port} of this agent; \
                     it serves: *.shop.example, one.localhost, two.localhost, www.example.com\n"
                )
            );
        }
        assert_eq!(t.route("two", 443).unwrap().app, "two");
        assert_eq!(t.hostnames["www.example.com"], "one");
    }

    #[test]
    fn one_app_takes_every_host_and_tls_mismatch_clashes() {
        let a = machine("a1", "app", MachineState::Started, vec![http_service(8080)]);
        let t = RouteTable::from_machines(&[app("one", vec![a.clone()], &["one.localhost"])]);
        let l = &t.ports[&80];
        assert_eq!(l.route_for(Some("anything.example")).unwrap().app, "one");
        assert_eq!(l.route_for(None).unwrap().app, "one");
        // Plain HTTP on 443 next to TLS+HTTP: not shareable.
        let mut plain = http_service(9000);
        plain.ports = vec![port(443, &["http"])];
        let b = machine("b1", "app", MachineState::Started, vec![plain]);
        let t = RouteTable::from_machines(&[app("one", vec![a], &[]), app("two", vec![b], &[])]);
        assert_eq!(t.conflicts.len(), 1);
        assert_eq!(t.conflicts[0].port, 443);
        assert!(!t.ports.contains_key(&443));
        assert!(t.route("one", 443).is_none());
        assert_eq!(t.ports[&80].only().unwrap().app, "one");
    }

    #[test]
    fn flycast_addresses_serve_every_port_of_their_app_only() {
        let a = machine("a1", "app", MachineState::Started, vec![http_service(8080)]);
        let b = machine("b1", "app", MachineState::Started, vec![http_service(8080)]);
        let ip: IpAddr = "fdaa:0:1:1:1:f::1".parse().unwrap();
        let private = AppRoutes {
            flycast: vec![ip],
            public: false,
            ..AppRoutes::new("private", "ams", vec![a])
        };
        let both = AppRoutes {
            flycast: vec!["127.0.0.9".parse().unwrap()],
            ..AppRoutes::new("both", "ams", vec![b])
        };
        let t = RouteTable::from_machines(&[private, both]);
        let fly: Vec<String> = t.flycast.keys().map(|a| a.to_string()).collect();
        assert_eq!(
            fly,
            vec![
                "127.0.0.9:80",
                "127.0.0.9:443",
                "[fdaa:0:1:1:1:f:0:1]:80",
                "[fdaa:0:1:1:1:f:0:1]:443"
            ]
        );
        let l = t.listener(Bind::Flycast(SocketAddr::new(ip, 443))).unwrap();
        assert_eq!(l.only().unwrap().app, "private");
        // The private app is not on the public listeners; the other one is, alone.
        assert_eq!(t.ports[&80].only().unwrap().app, "both");
        assert_eq!(t.route("private", 80).unwrap().backends[0].machine_id, "a1");
        // The same route (load, checks) on both kinds of listener.
        assert!(Arc::ptr_eq(
            t.ports[&80].only().unwrap(),
            t.flycast[&"127.0.0.9:80".parse().unwrap()].only().unwrap()
        ));
    }

    #[test]
    fn udp_is_rejected_with_a_clear_message() {
        let udp = MachineService {
            protocol: "udp".into(),
            internal_port: 53,
            ..Default::default()
        };
        let err = reject_udp_services(&[http_service(8080), udp]).unwrap_err();
        assert!(err.to_string().contains("protocol \"udp\""), "{err}");
        assert!(err.to_string().contains("53"));
        assert!(reject_udp_services(&[http_service(8080)]).is_ok());
        let mut pg = http_service(5432);
        pg.ports = vec![port(5432, &["pg_tls"])];
        let err = reject_udp_services(&[pg]).unwrap_err().to_string();
        assert!(
            err.contains("\"pg_tls\" is not supported") && err.contains("port 5432"),
            "{err}"
        );
    }

    #[test]
    fn checks_are_named_like_fly_and_grace_counts_from_start() {
        let mut svc = http_service(8080);
        svc.checks = vec![
            MachineCheck {
                kind: Some("tcp".into()),
                ..Default::default()
            },
            MachineCheck {
                kind: Some("http".into()),
                path: Some("/health".into()),
                ..Default::default()
            },
        ];
        let mut m = machine("m", "web", MachineState::Started, vec![svc]);
        m.config.checks.insert(
            "db".into(),
            MachineCheck {
                kind: Some("tcp".into()),
                port: Some(5432),
                ..Default::default()
            },
        );
        m.events.push(MachineEvent {
            id: String::new(),
            kind: "start".into(),
            status: "started".into(),
            source: "flyd".into(),
            timestamp: 1234,
            request: None,
        });
        let t = build(&[("app".into(), "ams".into(), vec![m])]);
        let e = &t.machines["m"];
        let names: Vec<&str> = e.service_checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["servicecheck-00-tcp-8080", "servicecheck-01-http-8080"]
        );
        assert_eq!(e.machine_checks[0].name, "db");
        assert_eq!(e.machine_checks[0].port, Some(5432));
        assert_eq!(e.started_at_ms, Some(1234));
        assert!(route(&t, 80).backends[0].has_checks);
    }
}
