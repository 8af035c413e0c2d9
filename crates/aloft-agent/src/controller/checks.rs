//! Health-check results of machines, as the proxy reports them.
//!
//! Check results are live state, not history: they are kept in memory (a restarted agent starts
//! with none and the proxy re-checks within one interval) and attached to machines when the API
//! or a subscriber reads them. A started machine whose config has checks but no result yet
//! shows each of them as `warning` ("waiting for the first check"), so a deploy that waits for
//! passing checks never mistakes "not checked yet" for "healthy". That placeholder only exists
//! while a checker runs (`aloft agent --no-proxy` runs none): otherwise a deploy would wait for
//! results that never come.

use std::collections::HashMap;

use aloft_api::{CheckStatus, Machine, MachineConfig, MachineState};
use aloft_proxy::{CheckReport, RouteTable};
use aloft_store::MachineRecord;

use super::Controller;

/// Results per machine id.
pub(crate) type CheckResults = std::sync::RwLock<HashMap<String, Vec<CheckStatus>>>;

impl Controller {
    /// Called once the proxy runs the machines' health checks.
    pub fn set_checks_run(&self) {
        self.checks_run
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces the known results with `report` and publishes a change for every machine whose
    /// results changed (deploys waiting for checks and `wait` subscribers see it).
    pub async fn apply_check_report(&self, report: &CheckReport) {
        let changed: Vec<String> = {
            let mut known = self.checks.write().unwrap_or_else(|e| e.into_inner());
            let mut changed: Vec<String> = known
                .keys()
                .filter(|id| !report.contains_key(*id))
                .cloned()
                .collect();
            for (id, statuses) in report {
                if known.get(id) != Some(statuses) {
                    changed.push(id.clone());
                }
            }
            *known = report.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            changed
        };
        for id in changed {
            if let Ok(Some(rec)) = self.machine_by_id(&id).await {
                self.publish(&rec);
            }
        }
    }

    /// Fills `machine.checks` from the latest results (see the module docs).
    pub fn attach_checks(&self, machine: &mut Machine) {
        machine.checks = self.latest_checks(&machine.id, machine.state, &machine.config, || {
            pending_checks(machine)
        });
    }

    /// A machine's check results (see the module docs), from its record.
    pub fn checks_of(&self, rec: &MachineRecord) -> Vec<CheckStatus> {
        self.latest_checks(&rec.id, rec.state, &rec.config, || {
            pending_checks(&rec.to_api(Vec::new()))
        })
    }

    fn latest_checks(
        &self,
        id: &str,
        state: MachineState,
        config: &MachineConfig,
        pending: impl FnOnce() -> Vec<CheckStatus>,
    ) -> Vec<CheckStatus> {
        let known = self.checks.read().unwrap_or_else(|e| e.into_inner());
        if let Some(statuses) = known.get(id) {
            return statuses.clone();
        }
        drop(known);
        let has_checks =
            !config.checks.is_empty() || config.services.iter().any(|s| !s.checks.is_empty());
        if self.checks_run.load(std::sync::atomic::Ordering::Relaxed)
            && state == MachineState::Started
            && has_checks
        {
            pending()
        } else {
            Vec::new()
        }
    }
}

/// `warning` entries for the checks of a started machine that nobody has run yet (callers check
/// that it is started and has checks).
fn pending_checks(machine: &Machine) -> Vec<CheckStatus> {
    // The proxy names checks (Fly's `servicecheck-00-http-8080`); ask it for the same names.
    let table = RouteTable::from_machines(&[aloft_proxy::AppRoutes::new(
        String::new(),
        String::new(),
        vec![machine.clone()],
    )]);
    let Some(entry) = table.machines.get(&machine.id) else {
        return Vec::new();
    };
    entry
        .service_checks
        .iter()
        .chain(entry.machine_checks.iter())
        .map(|c| CheckStatus {
            name: c.name.clone(),
            status: "warning".into(),
            output: "waiting for the first check".into(),
            updated_at: String::new(),
        })
        .collect()
}
