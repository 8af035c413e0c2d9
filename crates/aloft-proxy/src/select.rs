//! Selection: which machine takes a connection or request (machines-api §4.2–§4.3). The
//! closest region first (the proxy's own, or those of `Fly-Prefer-Region` in order), bands
//! within a region (`balance.rs`), client hints and `fly-replay` targets (`hints.rs`), waiting
//! for capacity up to `queue_timeout`, and autostart of a stopped machine when nothing else
//! can take the request (the start itself is machine control's, `machines/`).
//!
//! Invariant: selection changes no machine and opens no connection. It reads the routing
//! table, health (`health.rs`) and machine control's effective states, and takes a slot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::balance::{Pick, Proximity, Registry, Slot};
use crate::health::HealthState;
use crate::hints::Hints;
use crate::machines::Machines;
use crate::table::{Backend, BackendState, PortRoute, RouteTable};

/// Why no machine took a request, for people.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable(pub String);

/// Selection (see the module docs).
pub(crate) struct Selector {
    /// This proxy's region (`ProxyConfig::region`).
    region: String,
    /// How long a request waits for a machine with capacity (or a start).
    queue_timeout: Duration,
    /// How long autostart may take.
    start_timeout: Duration,
    table: watch::Receiver<RouteTable>,
    registry: Arc<Registry>,
    health: Arc<HealthState>,
    machines: Arc<Machines>,
    /// (app, external port) → requests refused for lack of a machine.
    unavailable: Mutex<BTreeMap<(String, u16), u64>>,
}

/// The outcome of [`Selector::choose`].
enum Choice {
    Leased(Slot),
    /// Start this machine (autostart) and route to it.
    Start(Backend),
    /// Nothing can take the request now; `busy` when machines are there but full.
    Wait {
        busy: bool,
    },
}

impl Selector {
    pub fn new(
        region: String,
        queue_timeout: Duration,
        start_timeout: Duration,
        table: watch::Receiver<RouteTable>,
        health: Arc<HealthState>,
        machines: Arc<Machines>,
    ) -> Selector {
        Selector {
            region,
            queue_timeout,
            start_timeout,
            table,
            registry: Arc::new(Registry::default()),
            health,
            machines,
            unavailable: Mutex::default(),
        }
    }

    /// Load and metrics of every machine and service.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The current route of `route`'s app and port.
    fn current(&self, route: &PortRoute) -> Option<Arc<PortRoute>> {
        self.table.borrow().route(&route.app, route.port).cloned()
    }

    /// Started, reachable and not failing a service check.
    pub fn routable(&self, b: &Backend) -> bool {
        b.addr.is_some()
            && self.machines.effective_state(b) == BackendState::Started
            && !self.health.failing(&b.machine_id)
    }

    /// Counts a request or connection refused for lack of a machine.
    pub fn count_unavailable(&self, route: &PortRoute) {
        let mut u = self.unavailable.lock().unwrap_or_else(|e| e.into_inner());
        *u.entry((route.app.clone(), route.port)).or_default() += 1;
    }

    /// Requests refused for lack of a machine, by (app, external port).
    pub fn unavailable(&self) -> BTreeMap<(String, u16), u64> {
        self.unavailable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes a slot on a machine for `route`, skipping machines in `exclude` (those that just
    /// refused a connection). Waits up to `queue_timeout` for capacity, and starts a stopped
    /// machine when autostart applies. For raw TCP, which carries no routing hints.
    pub async fn acquire(
        &self,
        route: &Arc<PortRoute>,
        exclude: &[String],
    ) -> Result<Slot, Unavailable> {
        self.acquire_from(route, exclude, false, &Hints::default())
            .await
    }

    /// [`Selector::acquire`] for a request with routing `hints`; `current` when the caller has just
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
    ) -> Result<Slot, Unavailable> {
        let deadline = Instant::now() + self.queue_timeout;
        // Always decide on the newest table, not the caller's snapshot.
        let mut route = if current {
            route.clone()
        } else {
            self.current(route).unwrap_or_else(|| route.clone())
        };
        if let Some(id) = hints.force_instance() {
            return self
                .acquire_forced(route, exclude, id, hints.force_source(), deadline)
                .await;
        }
        let near = Proximity::new(&self.region, hints.regions()).only(hints.only_regions());
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
                    return Ok(lease);
                }
            }
            let busy = match self.choose(&route, exclude, near) {
                Choice::Leased(lease) => return Ok(lease),
                Choice::Start(b) => {
                    match self.start_and_lease(&route, &b, deadline).await {
                        Ok(Some(lease)) => return Ok(lease),
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
        let passes = if self.health.any_refused() { 2 } else { 1 };
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
                        && !(avoid_refused && self.health.recently_refused(&b.machine_id))
                }));
                match self.registry.pick(&route.app, &route.policy, &candidates) {
                    Pick::Leased { lease, over_soft } => {
                        if over_soft && route.policy.autostart {
                            // Capacity exists but every machine of the region is over its soft
                            // limit: wake one more machine of the region for the next
                            // requests, without holding this one.
                            if let Some(b) = self.startable(route, exclude, in_tier) {
                                self.machines.wake(&route.app, &b.machine_id);
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
    fn try_preferred(&self, route: &PortRoute, exclude: &[String], id: &str) -> Option<Slot> {
        let b = route.backends.iter().find(|b| b.machine_id == id)?;
        if exclude.iter().any(|x| x == id) || !self.routable(b) || self.health.recently_refused(id)
        {
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
    ) -> Result<Slot, Unavailable> {
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
                    return Ok(lease);
                }
            } else if route.policy.autostart
                && b.addr.is_some()
                && self.machines.effective_state(b).startable()
            {
                let b = b.clone();
                match self.start_and_lease(&route, &b, deadline).await {
                    Ok(Some(lease)) => return Ok(lease),
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
        let state = self.machines.effective_state(b);
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
    ) -> Result<Option<Slot>, String> {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(self.start_timeout);
        match tokio::time::timeout(remaining, self.machines.start(&route.app, &b.machine_id)).await
        {
            Ok(Ok(())) => {
                let b = self.machines.wait_table_started(route, b).await;
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
                    .current(&route)
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
        self.current(&route)
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
            .map(|b| (b, self.machines.effective_state(b)))
            .filter(|(_, st)| st.startable())
            .collect();
        c.sort_by_key(|(b, st)| (*st != BackendState::Suspended, b.machine_id.clone()));
        // A machine whose start is already under way is the best choice.
        c.iter()
            .find(|(b, _)| self.machines.is_starting(&b.machine_id))
            .or(c.first())
            .map(|(b, _)| (*b).clone())
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
