//! The autostop loop (machines-api §4.4). Every `autostop_interval`, per service and region:
//! with more than one running machine, `excess = running − (running over soft limit + 1)`; if
//! `excess ≥ 1` stop exactly one idle machine; with exactly one running machine, stop it only
//! if it is idle. "Idle" means no load for the whole `idle_window` (configurable, beyond Fly).
//! Never below `min_machines_running`, which Aloft applies in every region when
//! `ProxyConfig::min_running_all_regions` is set (Fly: primary region only).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aloft_api::AutostopMode;

use crate::core::Core;
use crate::table::{Backend, BackendState, PortRoute};

pub(crate) async fn run(core: Arc<Core>) {
    let period = core.cfg.autostop_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        core.pool.sweep();
        pass(&core).await;
    }
}

/// One pass over every service; returns the machines it stopped.
pub(crate) async fn pass(core: &Arc<Core>) -> Vec<String> {
    let routes: Vec<Arc<PortRoute>> = core.table.borrow().ports.values().cloned().collect();
    let mut seen_services: HashSet<(String, Vec<String>)> = HashSet::new();
    let mut stopped = Vec::new();
    for route in routes {
        if route.policy.autostop == AutostopMode::Off {
            continue;
        }
        // Ports 80 and 443 of one service share machines: handle the service once.
        let ids: Vec<String> = route
            .backends
            .iter()
            .map(|b| b.machine_id.clone())
            .collect();
        if !seen_services.insert((route.app.clone(), ids)) {
            continue;
        }
        let mut by_region: BTreeMap<&str, Vec<&Backend>> = BTreeMap::new();
        for b in &route.backends {
            if core.effective_state(b) == BackendState::Started && !stopped.contains(&b.machine_id)
            {
                by_region.entry(b.region.as_str()).or_default().push(b);
            }
        }
        for (region, running) in by_region {
            let min = if region == route.primary_region || core.cfg.min_running_all_regions {
                route.policy.min_machines_running as usize
            } else {
                0
            };
            if running.len() <= min {
                continue;
            }
            let loads: Vec<u32> = running
                .iter()
                .map(|b| {
                    core.registry
                        .service(&route.app, b.internal_port)
                        .backend(&b.machine_id)
                        .load
                        .load(Ordering::Acquire)
                })
                .collect();
            let over_soft = loads
                .iter()
                .filter(|l| **l >= route.policy.soft_limit)
                .count();
            let may_stop = if running.len() > 1 {
                running.len() > over_soft + 1
            } else {
                true
            };
            if !may_stop {
                continue;
            }
            let window = core.cfg.idle_window.as_millis() as u64;
            let Some(victim) = running
                .iter()
                .map(|b| (core.registry.idle_ms(&b.machine_id), *b))
                .filter(|(idle, _)| *idle >= window)
                .max_by_key(|(idle, b)| (*idle, b.machine_id.clone()))
                .map(|(_, b)| b.clone())
            else {
                continue;
            };
            // Take it out of rotation first, then make sure nothing slipped in meanwhile.
            core.set_override(&victim.machine_id, Some(BackendState::Stopped));
            if core
                .registry
                .activity(&victim.machine_id)
                .active
                .load(Ordering::Acquire)
                > 0
            {
                core.set_override(&victim.machine_id, None);
                continue;
            }
            let suspend = route.policy.autostop == AutostopMode::Suspend;
            tracing::info!(app = %route.app, machine = %victim.machine_id, %region, suspend, "autostop: stopping idle machine");
            match core
                .control
                .stop(&route.app, &victim.machine_id, suspend)
                .await
            {
                Ok(()) => {
                    if suspend {
                        core.set_override(&victim.machine_id, Some(BackendState::Suspended));
                    }
                    stopped.push(victim.machine_id.clone());
                }
                Err(e) => {
                    tracing::warn!(app = %route.app, machine = %victim.machine_id, "autostop failed: {e}");
                    core.set_override(&victim.machine_id, None);
                }
            }
        }
    }
    stopped
}
