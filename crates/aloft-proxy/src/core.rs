//! What every listener shares: the settings, the routing table, and the three parts the
//! proxy decides with — selection (`select.rs`: which machine), health (`health.rs`: checks
//! and refusal cooldowns) and machine control (`machines/`: autostart, autostop, overrides) —
//! plus the upstream connection pool and the TLS certificates.
//!
//! Invariant: `Core` holds no request logic of its own; it wires the parts together and
//! gives listeners and back-ends read access to them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::challenges::Challenges;
use crate::config::ProxyConfig;
use crate::control::MachineControl;
use crate::health::HealthState;
use crate::machines::autostop::{self, AutostopConfig};
use crate::machines::Machines;
use crate::pool::Pool;
use crate::select::Selector;
use crate::table::{Bind, Listener, PortRoute, RouteTable};
use crate::tls::TlsStore;

/// Where each external port listens, or why it could not.
pub type BoundPorts = BTreeMap<u16, Result<SocketAddr, String>>;

/// Where each Flycast listener (address and external port) listens, or why it could not.
pub type BoundFlycast = BTreeMap<SocketAddr, Result<SocketAddr, String>>;

/// The outcome of looking a request's route up (see [`Core::route`]).
pub(crate) enum Lookup {
    Route(Arc<PortRoute>),
    /// Several apps share the listener and none answers at the request's host: a 404 naming
    /// the hostnames served.
    UnknownHost(Arc<Listener>),
    /// Nothing is served there any more.
    Gone,
}

pub(crate) struct Core {
    cfg: ProxyConfig,
    table: watch::Receiver<RouteTable>,
    selector: Selector,
    health: Arc<HealthState>,
    machines: Arc<Machines>,
    pool: Arc<Pool>,
    tls: TlsStore,
    challenges: Arc<Challenges>,
    /// Where external ports listen (for redirects to the https port).
    bound: watch::Receiver<BoundPorts>,
    /// Worker runtimes the listeners run on (empty: the caller's runtime).
    workers: Vec<tokio::runtime::Handle>,
}

impl Core {
    pub fn new(
        cfg: ProxyConfig,
        table: watch::Receiver<RouteTable>,
        control: Arc<dyn MachineControl>,
        tls: TlsStore,
        challenges: Arc<Challenges>,
        bound: watch::Receiver<BoundPorts>,
        workers: Vec<tokio::runtime::Handle>,
    ) -> Arc<Core> {
        let pool = Arc::new(Pool::new(
            cfg.upstream_idle_timeout,
            cfg.upstream_connect_timeout,
            workers.len(),
        ));
        let health = Arc::new(HealthState::default());
        let machines = Arc::new(Machines::new(
            control,
            table.clone(),
            cfg.start_timeout,
            cfg.table_confirm_timeout,
        ));
        let selector = Selector::new(
            cfg.region.clone(),
            cfg.queue_timeout,
            cfg.start_timeout,
            table.clone(),
            health.clone(),
            machines.clone(),
        );
        Arc::new(Core {
            cfg,
            table,
            selector,
            health,
            machines,
            pool,
            tls,
            challenges,
            bound,
            workers,
        })
    }

    pub fn cfg(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Selection: which machine takes a connection or request.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Check results and refusal cooldowns.
    pub fn health(&self) -> &Arc<HealthState> {
        &self.health
    }

    /// Machine control: autostart's boot window, effective states.
    pub fn machines(&self) -> &Machines {
        &self.machines
    }

    /// Pooled connections to machines.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn tls(&self) -> &TlsStore {
        &self.tls
    }

    /// Pending ACME challenges, answered before routing.
    pub fn challenges(&self) -> &Challenges {
        &self.challenges
    }

    /// Worker runtimes the listeners run on (empty: the caller's runtime).
    pub fn workers(&self) -> &[tokio::runtime::Handle] {
        &self.workers
    }

    /// The listener bound at `bind`, as the current table has it.
    pub fn listener(&self, bind: Bind) -> Option<Arc<Listener>> {
        self.table.borrow().listener(bind).cloned()
    }

    /// The route of a request on `bind` for `host` (its `Host`): the only app's there, else
    /// the app answering at `host`. One map lookup past today's single-app case.
    pub fn route(&self, bind: Bind, host: Option<&str>) -> Lookup {
        let t = self.table.borrow();
        match t.listener(bind) {
            None => Lookup::Gone,
            Some(l) => match l.route_for(host) {
                Some(r) => Lookup::Route(r.clone()),
                None => Lookup::UnknownHost(l.clone()),
            },
        }
    }

    /// The local port clients reach external port 443 on (for `force_https` redirects).
    pub fn https_port(&self) -> u16 {
        match self.bound.borrow().get(&443) {
            Some(Ok(addr)) => addr.port(),
            _ => self
                .cfg
                .port_map
                .get(&443)
                .copied()
                .filter(|p| *p != 0)
                .unwrap_or(443),
        }
    }

    /// Follows a new routing table: drops pooled connections to machines that are no longer
    /// started, and forgets the proxy's own states of machines the table now reports on.
    /// Called on every table change; never from a request's possibly older snapshot.
    pub fn on_table(&self, table: &RouteTable) {
        // Keep-alive connections to machines that are no longer started are dead or about to be.
        for m in table
            .machines
            .values()
            .filter(|m| m.state != aloft_api::MachineState::Started)
        {
            for addr in m.upstreams() {
                self.pool.forget(addr);
            }
        }
        self.machines.reconcile(table);
    }

    /// One autostop pass now; returns the machines it stopped.
    pub async fn autostop_pass(&self) -> Vec<String> {
        let routes: Vec<Arc<PortRoute>> = self
            .table
            .borrow()
            .routes
            .values()
            .flat_map(|ports| ports.values().cloned())
            .collect();
        let cfg = AutostopConfig {
            idle_window: self.cfg.idle_window,
            min_running_all_regions: self.cfg.min_running_all_regions,
        };
        autostop::pass(&self.machines, self.selector.registry(), routes, cfg).await
    }
}

/// Every `autostop_interval`: expired pooled connections are dropped and an autostop pass runs.
pub(crate) async fn run_autostop(core: Arc<Core>) {
    let period = core.cfg.autostop_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        core.pool.sweep();
        core.autostop_pass().await;
    }
}
