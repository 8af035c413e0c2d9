//! Live load per machine and service, and the choice of a machine (machines-api §4.3).
//!
//! A machine is in one of three bands: under `soft_limit` (preferred), between soft and hard
//! (used when no machine is under soft), at `hard_limit` (takes nothing). Among machines of the
//! best band one is picked at random. Taking a slot is an atomic compare-and-swap against the
//! hard limit, so concurrent clients can never push a machine over it. The load counted is open
//! client connections or in-flight requests depending on the service's concurrency type; the
//! caller decides how long a [`Slot`] lives accordingly.
//!
//! Bands are compared only within one region. [`Proximity`] ranks regions: the regions of a
//! request's `Fly-Prefer-Region` in their order, then the proxy's own region
//! (`ProxyConfig::region`), then every other region. The caller (`select.rs`) offers
//! [`Registry::pick`] the machines of the closest region first, and moves to the next region
//! only when none of them can take the request (all unhealthy, cordoned, stopped without
//! autostart, or at `hard_limit`): soft limits shift load within a region, never across.
//!
//! Deliberate difference from Fly: Fly ranks machines by measured RTT from the edge. Aloft
//! measures none, so all regions that are neither preferred nor the proxy's own are equally
//! far: they form one group, balanced by bands as if they were one region.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use rand::seq::SliceRandom;
use tokio::sync::Notify;

use crate::metrics::BackendMetrics;
use crate::table::{Backend, ServicePolicy};

/// A service: an app's internal port.
pub type ServiceKey = (String, u16);

/// Load and metrics of one machine for one service.
#[derive(Debug, Default)]
pub struct BackendLoad {
    pub load: AtomicU32,
    pub metrics: BackendMetrics,
    /// The machine's activity record, found once (it is the same for all its services).
    activity: OnceLock<Arc<MachineActivity>>,
}

/// Activity of a machine across all its services, for autostop.
#[derive(Debug)]
pub struct MachineActivity {
    pub active: AtomicU32,
    /// Milliseconds since the registry's epoch of the last acquire or release.
    pub last_active_ms: AtomicU64,
}

/// Per-service state shared by every port of the service.
#[derive(Debug, Default)]
pub struct ServiceState {
    backends: Mutex<HashMap<String, Arc<BackendLoad>>>,
    /// Woken when a lease is released while requests wait on full machines.
    freed: Notify,
    /// Requests currently waiting on `freed` (so releases skip the notify when none wait).
    waiting: AtomicU32,
}

impl ServiceState {
    /// Waits until a lease of this service is released (or `timeout` passes).
    pub async fn wait_freed(&self, timeout: std::time::Duration) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _ = tokio::time::timeout(timeout, self.freed.notified()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn backend(&self, machine_id: &str) -> Arc<BackendLoad> {
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(machine_id) {
            return b.clone();
        }
        map.entry(machine_id.to_string()).or_default().clone()
    }

    pub fn snapshot(&self) -> Vec<(String, Arc<BackendLoad>)> {
        let map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// All services and machines the proxy has seen.
#[derive(Debug)]
pub struct Registry {
    epoch: Instant,
    /// app → internal port → state (nested so lookups by `&str` need no allocation).
    services: Mutex<HashMap<String, HashMap<u16, Arc<ServiceState>>>>,
    machines: Mutex<HashMap<String, Arc<MachineActivity>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            epoch: Instant::now(),
            services: Mutex::default(),
            machines: Mutex::default(),
        }
    }
}

impl Registry {
    pub fn service(&self, app: &str, internal_port: u16) -> Arc<ServiceState> {
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(app).and_then(|ports| ports.get(&internal_port)) {
            return s.clone();
        }
        map.entry(app.to_string())
            .or_default()
            .entry(internal_port)
            .or_default()
            .clone()
    }

    pub fn services(&self) -> Vec<(ServiceKey, Arc<ServiceState>)> {
        let map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .flat_map(|(app, ports)| {
                ports
                    .iter()
                    .map(move |(p, v)| ((app.clone(), *p), v.clone()))
            })
            .collect()
    }

    pub fn activity(&self, machine_id: &str) -> Arc<MachineActivity> {
        let mut map = self.machines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = map.get(machine_id) {
            return a.clone();
        }
        let now = self.now_ms();
        map.entry(machine_id.to_string())
            .or_insert_with(|| {
                Arc::new(MachineActivity {
                    active: AtomicU32::new(0),
                    last_active_ms: AtomicU64::new(now),
                })
            })
            .clone()
    }

    /// Milliseconds since this registry was created.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long machine `id` has had no load, in milliseconds (0 while it has some).
    pub fn idle_ms(&self, machine_id: &str) -> u64 {
        let a = self.activity(machine_id);
        if a.active.load(Ordering::Acquire) > 0 {
            return 0;
        }
        self.now_ms()
            .saturating_sub(a.last_active_ms.load(Ordering::Acquire))
    }

    /// Tries to take one slot on `backend` under `limit` (None = unlimited).
    pub fn try_acquire(
        self: &Arc<Self>,
        service: &Arc<ServiceState>,
        backend: &Backend,
        limit: Option<u32>,
    ) -> Option<Slot> {
        let load = service.backend(&backend.machine_id);
        self.take_slot(service, load, backend, limit)
    }

    fn take_slot(
        &self,
        service: &Arc<ServiceState>,
        load: Arc<BackendLoad>,
        backend: &Backend,
        limit: Option<u32>,
    ) -> Option<Slot> {
        let mut cur = load.load.load(Ordering::Acquire);
        loop {
            if limit.is_some_and(|l| cur >= l) {
                return None;
            }
            match load
                .load
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let activity = load
            .activity
            .get_or_init(|| self.activity(&backend.machine_id));
        activity.active.fetch_add(1, Ordering::AcqRel);
        touch(&activity.last_active_ms, self.now_ms());
        Some(Slot {
            epoch: self.epoch,
            service: service.clone(),
            load,
            backend: backend.clone(),
        })
    }

    /// Picks a machine among `candidates` (already filtered to routable ones) per §4.3.
    pub fn pick(
        self: &Arc<Self>,
        app: &str,
        policy: &ServicePolicy,
        candidates: &[&Backend],
    ) -> Pick {
        match candidates {
            [] => return Pick::NoCandidate,
            // One machine (the common case): its band decides, nothing to shuffle.
            [b] => {
                let svc = self.service(app, b.internal_port);
                let load = svc.backend(&b.machine_id);
                let over_soft = load.load.load(Ordering::Acquire) >= policy.soft_limit;
                return match self.take_slot(&svc, load, b, policy.hard_limit) {
                    Some(lease) => Pick::Leased { lease, over_soft },
                    None => Pick::AllAtHardLimit,
                };
            }
            _ => {}
        }
        type Candidate<'a> = (&'a Backend, Arc<ServiceState>, Arc<BackendLoad>);
        let mut soft: Vec<Candidate<'_>> = Vec::with_capacity(candidates.len());
        let mut hard: Vec<Candidate<'_>> = Vec::new();
        let mut svc: Option<(u16, Arc<ServiceState>)> = None;
        for b in candidates {
            let s = match &svc {
                Some((port, s)) if *port == b.internal_port => s.clone(),
                _ => {
                    let s = self.service(app, b.internal_port);
                    svc = Some((b.internal_port, s.clone()));
                    s
                }
            };
            let load = s.backend(&b.machine_id);
            let n = load.load.load(Ordering::Acquire);
            if n < policy.soft_limit {
                soft.push((b, s, load));
            } else if policy.hard_limit.is_none_or(|h| n < h) {
                hard.push((b, s, load));
            }
        }
        let mut rng = rand::thread_rng();
        soft.shuffle(&mut rng);
        hard.shuffle(&mut rng);
        for (b, svc, load) in soft {
            if let Some(lease) = self.take_slot(&svc, load, b, policy.hard_limit) {
                return Pick::Leased {
                    lease,
                    over_soft: false,
                };
            }
        }
        for (b, svc, load) in hard {
            if let Some(lease) = self.take_slot(&svc, load, b, policy.hard_limit) {
                return Pick::Leased {
                    lease,
                    over_soft: true,
                };
            }
        }
        Pick::AllAtHardLimit
    }
}

/// At most this many regions of a `Fly-Prefer-Region` list count; later ones are ignored (a
/// long list would make every pick slower).
pub const MAX_PREFERRED_REGIONS: usize = 8;

/// How close a region is for one request: [`Proximity::rank`] 0 is closest. Borrowed from the
/// request and the proxy's config, so making one costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct Proximity<'a> {
    /// `Fly-Prefer-Region` as sent: comma-separated codes, most preferred first (may be empty).
    preferred: &'a str,
    /// The proxy's own region.
    local: &'a str,
    /// Only the preferred regions may take the request (a `fly-replay` with `region=`).
    only_preferred: bool,
}

impl<'a> Proximity<'a> {
    pub fn new(local: &'a str, preferred: &'a str) -> Self {
        Proximity {
            preferred,
            local,
            only_preferred: false,
        }
    }

    /// With `only`, machines outside the preferred regions are not allowed at all.
    pub fn only(mut self, only: bool) -> Self {
        self.only_preferred = only;
        self
    }

    /// Whether a machine in `region` may take the request (always, unless [`Proximity::only`]).
    pub fn allows(&self, region: &str) -> bool {
        !self.only_preferred
            || self
                .preferred_regions()
                .any(|p| aloft_api::regions::region_matches(p, region))
    }

    /// The position of `region` among the preferred ones; else the number of preferred
    /// regions for the proxy's own region, one more for any other region.
    pub fn rank(&self, region: &str) -> usize {
        let mut n = 0;
        for p in self.preferred_regions() {
            // A code, or an alias (`eu`) ranking all its regions alike.
            if aloft_api::regions::region_matches(p, region) {
                return n;
            }
            n += 1;
        }
        if region == self.local {
            n
        } else {
            n + 1
        }
    }

    fn preferred_regions(&self) -> impl Iterator<Item = &'a str> {
        self.preferred
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .take(MAX_PREFERRED_REGIONS)
    }

    /// The lowest and highest rank among `backends` (equal when they are all as close, the
    /// common case of one region and no hint); `(0, 0)` for none.
    pub fn span(&self, backends: &[Backend]) -> (usize, usize) {
        let mut it = backends.iter().map(|b| self.rank(&b.region));
        let Some(first) = it.next() else {
            return (0, 0);
        };
        it.fold((first, first), |(lo, hi), r| (lo.min(r), hi.max(r)))
    }
}

/// Stores `now` unless already there: many requests a millisecond would otherwise all write
/// the same shared line.
fn touch(at: &AtomicU64, now: u64) {
    if at.load(Ordering::Relaxed) != now {
        at.store(now, Ordering::Release);
    }
}

/// Outcome of [`Registry::pick`].
#[derive(Debug)]
pub enum Pick {
    /// A slot was taken; `over_soft` when no machine was under its soft limit.
    Leased { lease: Slot, over_soft: bool },
    /// Every candidate is at its hard limit.
    AllAtHardLimit,
    /// No routable machine at all.
    NoCandidate,
}

/// One unit of load on a machine; released on drop.
#[derive(Debug)]
pub struct Slot {
    /// The registry's epoch (for `last_active_ms`).
    epoch: Instant,
    service: Arc<ServiceState>,
    /// Its activity record is set (by `take_slot`).
    load: Arc<BackendLoad>,
    pub backend: Backend,
}

impl Slot {
    pub fn metrics(&self) -> &BackendMetrics {
        &self.load.metrics
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.load.load.fetch_sub(1, Ordering::AcqRel);
        if let Some(activity) = self.load.activity.get() {
            touch(
                &activity.last_active_ms,
                self.epoch.elapsed().as_millis() as u64,
            );
            activity.active.fetch_sub(1, Ordering::AcqRel);
        }
        if self.service.waiting.load(Ordering::Acquire) > 0 {
            self.service.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::BackendState;

    fn backend(id: &str) -> Backend {
        Backend {
            machine_id: id.into(),
            region: "ams".into(),
            internal_port: 8080,
            addr: None,
            state: BackendState::Started,
            has_checks: false,
        }
    }

    fn policy(soft: u32, hard: Option<u32>) -> ServicePolicy {
        ServicePolicy {
            soft_limit: soft,
            hard_limit: hard,
            ..Default::default()
        }
    }

    #[test]
    fn prefers_machines_under_soft_limit() {
        let reg = Arc::new(Registry::default());
        let (a, b) = (backend("a"), backend("b"));
        let p = policy(1, Some(3));
        let first = match reg.pick("app", &p, &[&a, &b]) {
            Pick::Leased {
                lease,
                over_soft: false,
            } => lease,
            other => panic!("{other:?}"),
        };
        // The other machine is still under soft: it must be chosen.
        let second = match reg.pick("app", &p, &[&a, &b]) {
            Pick::Leased {
                lease,
                over_soft: false,
            } => lease,
            other => panic!("{other:?}"),
        };
        assert_ne!(first.backend.machine_id, second.backend.machine_id);
        // Both at soft: still routed, flagged over_soft.
        let third = reg.pick("app", &p, &[&a, &b]);
        assert!(matches!(
            third,
            Pick::Leased {
                over_soft: true,
                ..
            }
        ));
    }

    #[test]
    fn hard_limit_is_never_exceeded_and_release_frees() {
        let reg = Arc::new(Registry::default());
        let a = backend("a");
        let p = policy(1, Some(2));
        let l1 = reg.pick("app", &p, &[&a]);
        let l2 = reg.pick("app", &p, &[&a]);
        assert!(matches!(l1, Pick::Leased { .. }) && matches!(l2, Pick::Leased { .. }));
        assert!(matches!(reg.pick("app", &p, &[&a]), Pick::AllAtHardLimit));
        drop(l1);
        assert!(matches!(reg.pick("app", &p, &[&a]), Pick::Leased { .. }));
        assert!(matches!(reg.pick("app", &p, &[]), Pick::NoCandidate));
    }

    #[test]
    fn random_among_equals_spreads() {
        let reg = Arc::new(Registry::default());
        let bs: Vec<Backend> = (0..4).map(|i| backend(&format!("m{i}"))).collect();
        let refs: Vec<&Backend> = bs.iter().collect();
        let p = policy(20, None);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            if let Pick::Leased { lease, .. } = reg.pick("app", &p, &refs) {
                seen.insert(lease.backend.machine_id.clone());
            }
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn proximity_ranks_preferred_regions_then_own_region_then_the_rest() {
        let own = Proximity::new("ams", "");
        assert_eq!(
            (own.rank("ams"), own.rank("iad"), own.rank("ord")),
            (0, 1, 1)
        );
        let hinted = Proximity::new("ams", " iad, ORD ,,");
        assert_eq!(hinted.rank("iad"), 0);
        assert_eq!(hinted.rank("ord"), 1);
        assert_eq!(hinted.rank("ams"), 2);
        assert_eq!(hinted.rank("fra"), 3);
        // The proxy's region named in the list keeps its place there.
        assert_eq!(Proximity::new("ams", "ams,iad").rank("iad"), 1);
        let (mut a, mut b) = (backend("a"), backend("b"));
        assert_eq!(own.span(&[a.clone(), b.clone()]), (0, 0));
        b.region = "iad".into();
        assert_eq!(own.span(&[a.clone(), b.clone()]), (0, 1));
        a.region = "fra".into();
        assert_eq!(hinted.span(&[a, b]), (0, 3));
        assert_eq!(own.span(&[]), (0, 0));
        // Only the first MAX_PREFERRED_REGIONS count.
        let long = ["x"; MAX_PREFERRED_REGIONS].join(",") + ",iad";
        assert_eq!(
            Proximity::new("ams", &long).rank("iad"),
            MAX_PREFERRED_REGIONS + 1
        );
    }

    #[test]
    fn idle_time_tracks_leases() {
        let reg = Arc::new(Registry::default());
        let a = backend("a");
        let lease = reg.pick("app", &policy(5, None), &[&a]);
        assert_eq!(reg.idle_ms("a"), 0);
        drop(lease);
        assert_eq!(reg.activity("a").active.load(Ordering::Acquire), 0);
    }
}
