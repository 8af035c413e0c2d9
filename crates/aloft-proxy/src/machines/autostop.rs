//! Autostop (machines-api §4.4): one pass, run every `autostop_interval` (the loop is
//! `core::run_autostop`). Per service and region:
//! with more than one running machine, `excess = running − (running over soft limit + 1)`; if
//! `excess ≥ 1` stop exactly one idle machine; with exactly one running machine, stop it only
//! if it is idle. "Idle" means no load for the whole `idle_window` (configurable, beyond Fly).
//! Never below `min_machines_running`, which Aloft applies in every region when
//! `ProxyConfig::min_running_all_regions` is set (Fly: primary region only).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::AutostopMode;

use super::Machines;
use crate::balance::Registry;
use crate::table::{Backend, BackendState, PortRoute};

/// The settings of autostop (from `ProxyConfig`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AutostopConfig {
    /// How long a machine must have had no load before it is stopped.
    pub idle_window: Duration,
    /// `min_machines_running` counts in every region, not only the primary one.
    pub min_running_all_regions: bool,
}

/// One pass over every service of `routes`; returns the machines it stopped.
pub(crate) async fn pass(
    machines: &Machines,
    registry: &Registry,
    routes: Vec<Arc<PortRoute>>,
    cfg: AutostopConfig,
) -> Vec<String> {
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
            if machines.effective_state(b) == BackendState::Started
                && !stopped.contains(&b.machine_id)
            {
                by_region.entry(b.region.as_str()).or_default().push(b);
            }
        }
        for (region, running) in by_region {
            let min = if region == route.primary_region || cfg.min_running_all_regions {
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
                    registry
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
            let window = cfg.idle_window.as_millis() as u64;
            let Some(victim) = running
                .iter()
                .map(|b| (registry.idle_ms(&b.machine_id), *b))
                .filter(|(idle, _)| *idle >= window)
                .max_by_key(|(idle, b)| (*idle, b.machine_id.clone()))
                .map(|(_, b)| b.clone())
            else {
                continue;
            };
            // Take it out of rotation first, then make sure nothing slipped in meanwhile.
            machines.set_override(&victim.machine_id, Some(BackendState::Stopped));
            if registry
                .activity(&victim.machine_id)
                .active
                .load(Ordering::Acquire)
                > 0
            {
                machines.set_override(&victim.machine_id, None);
                continue;
            }
            let suspend = route.policy.autostop == AutostopMode::Suspend;
            tracing::info!(app = %route.app, machine = %victim.machine_id, %region, suspend, "autostop: stopping idle machine");
            match machines.stop(&route.app, &victim.machine_id, suspend).await {
                Ok(()) => {
                    if suspend {
                        machines.set_override(&victim.machine_id, Some(BackendState::Suspended));
                    }
                    stopped.push(victim.machine_id.clone());
                }
                Err(e) => {
                    tracing::warn!(app = %route.app, machine = %victim.machine_id, "autostop failed: {e}");
                    machines.set_override(&victim.machine_id, None);
                }
            }
        }
    }
    stopped
}
