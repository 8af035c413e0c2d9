//! The state every listener shares and the routing decision: which machine takes a connection
//! or request — closest region first, client hints applied — including waiting for capacity
//! and autostart (machines-api §4.2–§4.4).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::balance::{Lease, Pick, Proximity, Registry};
use crate::control::MachineControl;
use crate::health::HealthState;
use crate::hints::Hints;
use crate::pool::Pool;
use crate::table::{Backend, BackendState, PortRoute, RouteTable};
use crate::tls::TlsStore;
use crate::ProxyConfig;

/// How often a just-started machine that still refuses connections is tried again.
pub(crate) const BOOT_POLL: Duration = Duration::from_millis(5);

/// How long the proxy trusts its own start/stop of a machine over an older routing table.
const OVERRIDE_TTL: Duration = Duration::from_secs(30);

/// A machine that refused a connection is avoided this long (used only when nothing else is
/// left), so a crashed machine costs one failed attempt, not one per request.
const REFUSED_COOLDOWN: Duration = Duration::from_secs(2);

pub(crate) struct Core {
    pub cfg: ProxyConfig,
    pub table: watch::Receiver<RouteTable>,
    pub control: Arc<dyn MachineControl>,
    pub registry: Arc<Registry>,
    pub health: Arc<HealthState>,
    pub pool: Arc<Pool>,
    pub tls: TlsStore,
    /// machine id → (state the proxy put it in, when).
    overrides: CountedMap<Override>,
    /// machine id → outcome of an autostart in progress (`None` while running).
    starting: Mutex<HashMap<String, StartWatch>>,
    /// machine id → when autostart started it; cleared by its first successful connection.
    booting: CountedMap<Boot>,
    /// machine id → when it last refused a connection.
    refused: CountedMap<Instant>,
    /// (app, external port) → requests refused for lack of a machine.
    pub unavailable: Mutex<BTreeMap<(String, u16), u64>>,
    /// Where external ports listen (for redirects to the https port).
    bound: watch::Receiver<crate::BoundPorts>,
    /// Worker runtimes the listeners run on (empty: the caller's runtime).
    pub workers: Vec<tokio::runtime::Handle>,
    /// Handle on itself for background tasks.
    me: std::sync::Weak<Core>,
}

/// A map by machine id behind a mutex, with its length readable without the lock: requests
/// look these maps up on every pick, and they are almost always empty.
struct CountedMap<V> {
    map: Mutex<HashMap<String, V>>,
    len: AtomicUsize,
}

impl<V> Default for CountedMap<V> {
    fn default() -> Self {
        CountedMap {
            map: Mutex::default(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<V> CountedMap<V> {
    /// False when the map is certainly empty (as of the latest unlock).
    fn maybe_any(&self) -> bool {
        self.len.load(Ordering::Acquire) > 0
    }

    fn lock(&self) -> CountedGuard<'_, V> {
        CountedGuard {
            guard: self.map.lock().unwrap_or_else(|e| e.into_inner()),
            len: &self.len,
        }
    }
}

/// Updates the map's length when dropped (before the lock is released).
struct CountedGuard<'a, V> {
    guard: MutexGuard<'a, HashMap<String, V>>,
    len: &'a AtomicUsize,
}

impl<V> std::ops::Deref for CountedGuard<'_, V> {
    type Target = HashMap<String, V>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl<V> std::ops::DerefMut for CountedGuard<'_, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl<V> Drop for CountedGuard<'_, V> {
    fn drop(&mut self) {
        self.len.store(self.guard.len(), Ordering::Release);
    }
}

/// An autostarted machine's boot: when autostart started it, and when a connection to it first
/// succeeded.
#[derive(Clone, Copy)]
struct Boot {
    started: Instant,
    connected: Option<Instant>,
}

/// How long after its first accepted connection a booted machine is forgotten (refusals of
/// attempts that began before that connection still count as booting until then).
const BOOTED_GRACE: Duration = Duration::from_secs(1);

/// The outcome of an autostart: `None` while it runs.
type StartWatch = watch::Receiver<Option<Result<(), String>>>;

/// A state the proxy put a machine in, trusted until the agent's table reports any new
/// state for that machine (confirming or contradicting it) or until it expires.
#[derive(Clone, Copy, Debug)]
struct Override {
    state: BackendState,
    /// The machine's state in the table when the override was set.
    table_state: Option<BackendState>,
    at: Instant,
}

/// The outcome of [`Core::choose`].
enum Choice {
    Leased(Lease),
    /// Start this machine (autostart) and route to it.
    Start(Backend),
    /// Nothing can take the request now; `busy` when machines are there but full.
    Wait {
        busy: bool,
    },
}

/// Why no machine took a request.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable(pub String);

impl Core {
    pub fn new(
        cfg: ProxyConfig,
        table: watch::Receiver<RouteTable>,
        control: Arc<dyn MachineControl>,
        tls: TlsStore,
        bound: watch::Receiver<crate::BoundPorts>,
        workers: Vec<tokio::runtime::Handle>,
    ) -> Arc<Core> {
        let pool = Arc::new(Pool::new(
            cfg.upstream_idle_timeout,
            cfg.upstream_connect_timeout,
            workers.len(),
        ));
        Arc::new_cyclic(|me| Core {
            me: me.clone(),
            bound,
            workers,
            cfg,
            table,
            control,
            registry: Arc::new(Registry::default()),
            health: Arc::new(HealthState::default()),
            pool,
            tls,
            overrides: CountedMap::default(),
            starting: Mutex::default(),
            unavailable: Mutex::default(),
            refused: CountedMap::default(),
            booting: CountedMap::default(),
        })
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

    /// The current route of external port `port`.
    pub fn route(&self, port: u16) -> Option<Arc<PortRoute>> {
        self.table.borrow().ports.get(&port).cloned()
    }

    /// The machine's state as the table says, unless the proxy itself changed it recently.
    pub fn effective_state(&self, b: &Backend) -> BackendState {
        if !self.overrides.maybe_any() {
            return b.state;
        }
        let o = self.overrides.lock();
        match o.get(&b.machine_id) {
            Some(ov) if ov.at.elapsed() < OVERRIDE_TTL => ov.state,
            _ => b.state,
        }
    }

    /// Forgets overrides the agent's new table confirms (or that expired). Called on every
    /// table change; never from a request's possibly older snapshot of a route.
    pub fn reconcile_overrides(&self, table: &RouteTable) {
        // Keep-alive connections to machines that are no longer started are dead or about to be.
        for m in table
            .machines
            .values()
            .filter(|m| m.state != aloft_api::MachineState::Started)
        {
            for hp in m.host_ports.values() {
                self.pool.forget(std::net::SocketAddr::from((
                    std::net::Ipv4Addr::LOCALHOST,
                    *hp,
                )));
            }
        }
        let mut o = self.overrides.lock();
        o.retain(|id, ov| {
            let now = table
                .machines
                .get(id)
                .map(|m| BackendState::from_machine(m.state));
            // Once the agent reports a new state, its word wins (e.g. a user stop after an
            // autostart); a gone machine needs no override.
            now.is_some() && now == ov.table_state && ov.at.elapsed() < OVERRIDE_TTL
        });
    }

    pub fn set_override(&self, machine_id: &str, state: Option<BackendState>) {
        // Read the table before locking the overrides: `reconcile_overrides` runs with the
        // table borrowed and then locks them, so the opposite order could deadlock.
        let table_state = self
            .table
            .borrow()
            .machines
            .get(machine_id)
            .map(|m| BackendState::from_machine(m.state));
        let mut o = self.overrides.lock();
        match state {
            Some(state) if table_state != Some(state) => {
                o.insert(
                    machine_id.to_string(),
                    Override {
                        state,
                        table_state,
                        at: Instant::now(),
                    },
                );
            }
            _ => {
                o.remove(machine_id);
            }
        }
    }

    /// Started, reachable and not failing a service check.
    pub fn routable(&self, b: &Backend) -> bool {
        b.addr.is_some()
            && self.effective_state(b) == BackendState::Started
            && !self.health.failing(&b.machine_id)
    }

    /// Whether a connection attempt to the machine that began at `attempt` was refused because
    /// the machine, just started by autostart, is still booting: then it is retried (not counted
    /// as an attempt) until `start_timeout`. An attempt that began before the machine first
    /// accepted a connection counts as booting even when another request got through meanwhile.
    pub fn booting(&self, machine_id: &str, attempt: Instant) -> bool {
        if !self.booting.maybe_any() {
            return false;
        }
        let mut b = self.booting.lock();
        match b.get(machine_id).copied() {
            Some(boot) if boot.started.elapsed() < self.cfg.start_timeout => {
                boot.connected.is_none_or(|c| attempt < c)
            }
            Some(_) => {
                b.remove(machine_id);
                false
            }
            None => false,
        }
    }

    /// The machine accepted a connection: it has booted.
    pub fn connected(&self, machine_id: &str) {
        if self.booting.maybe_any() {
            let mut b = self.booting.lock();
            match b.get_mut(machine_id) {
                Some(Boot {
                    connected: Some(c), ..
                }) if c.elapsed() > BOOTED_GRACE => {
                    b.remove(machine_id);
                }
                Some(boot) => {
                    boot.connected.get_or_insert_with(Instant::now);
                }
                None => {}
            }
        }
    }

    /// Notes that a machine refused or reset a connection.
    pub fn mark_refused(&self, machine_id: &str) {
        self.refused
            .lock()
            .insert(machine_id.to_string(), Instant::now());
    }

    fn recently_refused(&self, machine_id: &str) -> bool {
        if !self.refused.maybe_any() {
            return false;
        }
        let mut r = self.refused.lock();
        match r.get(machine_id) {
            Some(at) if at.elapsed() < REFUSED_COOLDOWN => true,
            Some(_) => {
                r.remove(machine_id);
                false
            }
            None => false,
        }
    }

    pub fn count_unavailable(&self, route: &PortRoute) {
        let mut u = self.unavailable.lock().unwrap_or_else(|e| e.into_inner());
        *u.entry((route.app.clone(), route.port)).or_default() += 1;
    }

    /// Takes a slot on a machine for `route`, skipping machines in `exclude` (those that just
    /// refused a connection). Waits up to `cfg.queue_timeout` for capacity, and starts a stopped
    /// machine when autostart applies. `Ok((lease, fresh))`: `fresh` when the machine was just
    /// started by this call. For raw TCP, which carries no routing hints.
    pub async fn acquire(
        &self,
        route: &Arc<PortRoute>,
        exclude: &[String],
    ) -> Result<(Lease, bool), Unavailable> {
        self.acquire_from(route, exclude, false, &Hints::default())
            .await
    }

    /// [`Core::acquire`] for a request with routing `hints`; `current` when the caller has just
    /// read `route` from the table (so it need not be looked up again).
    ///
    /// Machines of the closest region (see [`Proximity`]) are tried first, the next region only
    /// when none of them can take the request. `Fly-Prefer-Instance-Id` names a machine tried
    /// before all others (the caller compares the lease with it); `Fly-Force-Instance-Id` the
    /// only machine that may take the request.
    pub async fn acquire_from(
        &self,
        route: &Arc<PortRoute>,
        exclude: &[String],
        current: bool,
        hints: &Hints,
    ) -> Result<(Lease, bool), Unavailable> {
        let deadline = Instant::now() + self.cfg.queue_timeout;
        // Always decide on the newest table, not the caller's snapshot.
        let mut route = if current {
            route.clone()
        } else {
            self.route(route.port).unwrap_or_else(|| route.clone())
        };
        if let Some(id) = hints.force_instance() {
            return self
                .acquire_forced(route, exclude, id, hints.force_source(), deadline)
                .await;
        }
        let near = Proximity::new(&self.cfg.region, hints.regions()).only(hints.only_regions());
        if hints.only_regions() && !route.backends.iter().any(|b| near.allows(&b.region)) {
            // Nothing to wait for: the app has no machine there at all.
            return Err(Unavailable(format!(
                "app {} has no machine in region {} for port {}",
                route.app,
                hints.regions(),
                route.port
            )));
        }
        // Watches table changes while waiting; made on the first wait only (see `wait_change`).
        let mut table: Option<watch::Receiver<RouteTable>> = None;
        loop {
            if let Some(id) = hints.prefer_instance() {
                if let Some(lease) = self.try_preferred(&route, exclude, id) {
                    return Ok((lease, false));
                }
            }
            let busy = match self.choose(&route, exclude, near) {
                Choice::Leased(lease) => return Ok((lease, false)),
                Choice::Start(b) => {
                    match self.start_and_lease(&route, &b, deadline).await {
                        Ok(Some(lease)) => return Ok((lease, true)),
                        // Started, but other requests took its capacity: decide again.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(app = %route.app, machine = %b.machine_id, "{e}")
                        }
                    }
                    continue_or_fail(deadline, &route)?;
                    continue;
                }
                Choice::Wait { busy } => busy,
            };
            route = self
                .wait_change(route.clone(), deadline, &mut table, || {
                    no_machine(&route, busy)
                })
                .await?;
        }
    }

    /// One decision on `route` as it is now, region by region from the closest: a slot on a
    /// machine of the region, else a stopped machine of the region to start (autostart), else
    /// the next region. Machines that recently refused a connection are used only when no
    /// region offers anything else.
    fn choose(&self, route: &PortRoute, exclude: &[String], near: Proximity<'_>) -> Choice {
        let (lo, hi) = near.span(&route.backends);
        let mut busy = false;
        let mut candidates: Vec<&Backend> = Vec::with_capacity(route.backends.len());
        // Avoiding recently refused machines takes a second pass to fall back on them.
        let passes = if self.refused.maybe_any() { 2 } else { 1 };
        for pass in 0..passes {
            let avoid_refused = pass + 1 < passes;
            for rank in lo..=hi {
                // One region (the common case): no rank to compute.
                let in_tier = |b: &Backend| {
                    (lo == hi || near.rank(&b.region) == rank) && near.allows(&b.region)
                };
                candidates.clear();
                candidates.extend(route.backends.iter().filter(|b| {
                    in_tier(b)
                        && !exclude.contains(&b.machine_id)
                        && self.routable(b)
                        && !(avoid_refused && self.recently_refused(&b.machine_id))
                }));
                match self.registry.pick(&route.app, &route.policy, &candidates) {
                    Pick::Leased { lease, over_soft } => {
                        if over_soft && route.policy.autostart {
                            // Capacity exists but every machine of the region is over its soft
                            // limit: wake one more machine of the region for the next
                            // requests, without holding this one.
                            if let Some(b) = self.startable(route, exclude, in_tier) {
                                drop(self.start_rx(&route.app, &b.machine_id));
                            }
                        }
                        return Choice::Leased(lease);
                    }
                    Pick::AllAtHardLimit => busy = true,
                    Pick::NoCandidate => {}
                }
                if pass == 0 && route.policy.autostart {
                    if let Some(b) = self.startable(route, exclude, in_tier) {
                        return Choice::Start(b);
                    }
                }
            }
        }
        Choice::Wait { busy }
    }

    /// A slot on the machine of `Fly-Prefer-Instance-Id` if it can take the request now:
    /// routable, not excluded, under its hard limit. It is not started for the hint.
    fn try_preferred(&self, route: &PortRoute, exclude: &[String], id: &str) -> Option<Lease> {
        let b = route.backends.iter().find(|b| b.machine_id == id)?;
        if exclude.iter().any(|x| x == id) || !self.routable(b) || self.recently_refused(id) {
            return None;
        }
        let svc = self.registry.service(&route.app, b.internal_port);
        self.registry.try_acquire(&svc, b, route.policy.hard_limit)
    }

    /// `Fly-Force-Instance-Id`: a slot on machine `id`, or why not; never another machine. A
    /// stopped machine is started when autostart applies; at its hard limit the request waits
    /// for a slot like any other (up to `queue_timeout`).
    async fn acquire_forced(
        &self,
        mut route: Arc<PortRoute>,
        exclude: &[String],
        id: &str,
        source: &str,
        deadline: Instant,
    ) -> Result<(Lease, bool), Unavailable> {
        let forced = |why: String| Unavailable(format!("machine {id} named by {source} {why}"));
        let mut table: Option<watch::Receiver<RouteTable>> = None;
        loop {
            let Some(b) = route.backends.iter().find(|b| b.machine_id == id) else {
                return Err(forced(self.why_not_candidate(&route, id)));
            };
            if exclude.iter().any(|x| x == id) {
                return Err(forced("refused the connection".into()));
            }
            if self.routable(b) {
                let svc = self.registry.service(&route.app, b.internal_port);
                if let Some(lease) = self.registry.try_acquire(&svc, b, route.policy.hard_limit) {
                    return Ok((lease, false));
                }
            } else if route.policy.autostart
                && b.addr.is_some()
                && self.effective_state(b).startable()
            {
                let b = b.clone();
                match self.start_and_lease(&route, &b, deadline).await {
                    Ok(Some(lease)) => return Ok((lease, true)),
                    Ok(None) => {}
                    Err(e) => return Err(forced(format!("could not be started: {e}"))),
                }
                continue_or_fail(deadline, &route)?;
                continue;
            } else {
                return Err(forced(self.why_unroutable(&route, b)));
            }
            route = self
                .wait_change(route.clone(), deadline, &mut table, || {
                    forced(format!(
                        "is at its hard_limit on port {} of app {}",
                        route.port, route.app
                    ))
                })
                .await?;
        }
    }

    /// Why machine `id` is no candidate for `route`, for people.
    fn why_not_candidate(&self, route: &PortRoute, id: &str) -> String {
        match self.table.borrow().machines.get(id) {
            Some(m) if m.app == route.app && m.cordoned => "is cordoned".into(),
            Some(m) if m.app == route.app => format!("does not serve port {}", route.port),
            _ => format!("is not a machine of app {}", route.app),
        }
    }

    /// Why candidate `b` cannot take traffic now (autostart aside), for people.
    fn why_unroutable(&self, route: &PortRoute, b: &Backend) -> String {
        let state = self.effective_state(b);
        if b.addr.is_none() {
            return format!("has no host port for internal port {}", b.internal_port);
        }
        match state {
            BackendState::Stopped | BackendState::Suspended => format!(
                "is {} and autostart is off for port {} of app {}",
                if state == BackendState::Stopped {
                    "stopped"
                } else {
                    "suspended"
                },
                route.port,
                route.app
            ),
            BackendState::Other => {
                let now = self
                    .table
                    .borrow()
                    .machines
                    .get(&b.machine_id)
                    .map_or("gone", |m| m.state.as_str());
                format!("is not started (state: {now})")
            }
            BackendState::Started if self.health.failing(&b.machine_id) => {
                "fails its service checks".into()
            }
            BackendState::Started => "is not routable".into(),
        }
    }

    /// Starts machine `b` (one start shared by concurrent requests) and takes a slot on it once
    /// the agent's table confirms it. `Ok(None)`: started, but others took its capacity first.
    async fn start_and_lease(
        &self,
        route: &PortRoute,
        b: &Backend,
        deadline: Instant,
    ) -> Result<Option<Lease>, String> {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(self.cfg.start_timeout);
        match tokio::time::timeout(remaining, self.start(&route.app, &b.machine_id)).await {
            Ok(Ok(())) => {
                let b = self.wait_table_started(route, b).await;
                let svc = self.registry.service(&route.app, b.internal_port);
                Ok(self.registry.try_acquire(&svc, &b, route.policy.hard_limit))
            }
            Ok(Err(e)) => Err(format!("autostart failed: {e}")),
            Err(_) => Err(format!("autostart timed out after {remaining:?}")),
        }
    }

    /// Waits for a slot of the route's service to free up or for the table to change (a
    /// machine started, passed its checks, a deploy added one), and returns the port's newest
    /// route; `Err(why())` once `deadline` has passed. `table` keeps the watch across waits.
    async fn wait_change(
        &self,
        route: Arc<PortRoute>,
        deadline: Instant,
        table: &mut Option<watch::Receiver<RouteTable>>,
        why: impl FnOnce() -> Unavailable,
    ) -> Result<Arc<PortRoute>, Unavailable> {
        let now = Instant::now();
        if now >= deadline {
            return Err(why());
        }
        let svc = self.registry.service(
            &route.app,
            route.backends.first().map(|b| b.internal_port).unwrap_or(0),
        );
        // Health changes are not signalled, and a release between the pick and this wait
        // is missed: wake up at a short period as a fallback.
        let tick = Duration::from_millis(50).min(deadline - now);
        let table = match table {
            Some(t) => Some(t),
            None => {
                let t = table.insert(self.table.clone());
                // A table change since the route was read would not wake the watch:
                // decide again at once in that case.
                let same = self
                    .route(route.port)
                    .is_some_and(|r| Arc::ptr_eq(&r, &route));
                same.then_some(t)
            }
        };
        if let Some(table) = table {
            tokio::select! {
                _ = svc.wait_freed(tick) => {}
                _ = table.changed() => {}
            }
        }
        self.route(route.port)
            .ok_or_else(|| Unavailable(format!("port {} is no longer served", route.port)))
    }

    /// A stopped or suspended machine of the region `in_tier` accepts that autostart may wake
    /// (suspended first: resumes faster).
    fn startable(
        &self,
        route: &PortRoute,
        exclude: &[String],
        in_tier: impl Fn(&Backend) -> bool,
    ) -> Option<Backend> {
        let mut c: Vec<(&Backend, BackendState)> = route
            .backends
            .iter()
            .filter(|b| in_tier(b) && !exclude.contains(&b.machine_id) && b.addr.is_some())
            .map(|b| (b, self.effective_state(b)))
            .filter(|(_, st)| st.startable())
            .collect();
        c.sort_by_key(|(b, st)| (*st != BackendState::Suspended, b.machine_id.clone()));
        // A machine whose start is already under way is the best choice.
        let starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .find(|(b, _)| starting.contains_key(&b.machine_id))
            .or(c.first())
            .map(|(b, _)| (*b).clone())
    }

    /// Starts a machine once, however many requests ask at the same time.
    pub async fn start(&self, app: &str, machine_id: &str) -> Result<(), String> {
        let mut rx = self.start_rx(app, machine_id);
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err(format!("autostart of machine {machine_id} was abandoned"));
            }
        }
    }

    fn start_rx(&self, app: &str, machine_id: &str) -> StartWatch {
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = starting.get(machine_id) {
            return rx.clone();
        }
        // A caller deciding on an older snapshot of the route may ask after a start finished:
        // the newest table already says started, so there is nothing to start again.
        let started = self
            .table
            .borrow()
            .machines
            .get(machine_id)
            .is_some_and(|m| m.state == aloft_api::MachineState::Started);
        if started {
            return watch::channel(Some(Ok(()))).1;
        }
        let (tx, rx) = watch::channel(None);
        starting.insert(machine_id.to_string(), rx.clone());
        let core = self.me.clone();
        let (app, id) = (app.to_string(), machine_id.to_string());
        tokio::spawn(async move {
            let Some(core) = core.upgrade() else { return };
            tracing::info!(app = %app, machine = %id, "autostart: starting machine");
            let started = Instant::now();
            // Booting from now on: the agent's table may say `started` before `start` returns,
            // and requests that see it must wait for the app to listen, not fail over.
            core.booting.lock().insert(
                id.clone(),
                Boot {
                    started,
                    connected: None,
                },
            );
            let r = core.control.start(&app, &id).await.map_err(|e| e.0);
            match &r {
                Ok(()) => {
                    tracing::info!(app = %app, machine = %id, elapsed = ?started.elapsed(), "autostart: machine started");
                    core.set_override(&id, Some(BackendState::Started));
                }
                Err(e) => {
                    tracing::warn!(app = %app, machine = %id, "autostart: {e}");
                    core.booting.lock().remove(&id);
                }
            }
            core.starting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            let _ = tx.send(Some(r));
        });
        rx
    }

    /// After a start, the runtime may have given the machine new host ports: wait briefly for
    /// the agent's next table and use its view of the machine, else keep the old one.
    async fn wait_table_started(&self, route: &PortRoute, b: &Backend) -> Backend {
        let mut table = self.table.clone();
        let deadline = Instant::now() + self.cfg.table_confirm_timeout;
        loop {
            {
                let t = table.borrow_and_update();
                if let Some(nb) = t.ports.get(&route.port).and_then(|r| {
                    r.backends.iter().find(|x| {
                        x.machine_id == b.machine_id && x.internal_port == b.internal_port
                    })
                }) {
                    if nb.state == BackendState::Started && nb.addr.is_some() {
                        return nb.clone();
                    }
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if tokio::time::timeout(left, table.changed()).await.is_err() {
                break;
            }
        }
        b.clone()
    }
}

/// Why a request found no machine after waiting: all full (`busy`), or none routable.
fn no_machine(route: &PortRoute, busy: bool) -> Unavailable {
    Unavailable(if busy {
        format!(
            "all machines of app {} on port {} are at their hard_limit",
            route.app, route.port
        )
    } else {
        format!(
            "no started, healthy machine of app {} serves port {}",
            route.app, route.port
        )
    })
}

fn continue_or_fail(deadline: Instant, route: &PortRoute) -> Result<(), Unavailable> {
    if Instant::now() >= deadline {
        return Err(Unavailable(format!(
            "could not start a machine of app {} for port {}",
            route.app, route.port
        )));
    }
    Ok(())
}
