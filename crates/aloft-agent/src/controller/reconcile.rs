//! Agent start-up: bring machines back after the agent stopped or was killed.
//!
//! Order: (1) the runtime kills every process a previous agent left behind (`reap_orphans`,
//! found through its pid records), so nothing from before keeps running; (2) every live machine
//! is examined once:
//! - it had a process (`starting`, `started`, `restarting`, `replacing`, `stopping`): an
//!   `exit` event records that the agent restarted (`request.agent_restarted = true`);
//! - desired state `started` → launched again, exactly once (this runs before the API accepts
//!   requests, so no client call can launch it concurrently), and the runtime's `Started`
//!   adds the `start` event;
//! - `stopping` → `stopped`; `destroying` → `destroyed`; desired stopped → `stopped`.
//!
//! Machines that were `created` with `skip_launch`, `stopped` or `failed` stay as they are.

use aloft_api::MachineState;
use aloft_store::DesiredState;
use serde_json::json;

use super::{event, Controller, FLYD};
use crate::controller::DomainResult;

/// What reconciliation did, for the agent's log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub reaped: Vec<String>,
    pub relaunched: Vec<String>,
    pub failed: Vec<String>,
}

impl Controller {
    pub async fn reconcile(&self) -> DomainResult<ReconcileReport> {
        let sup = self.sup.clone();
        let reaped = tokio::task::spawn_blocking(move || sup.reap_orphans())
            .await
            .unwrap_or_default();
        let mut report = ReconcileReport {
            reaped,
            ..Default::default()
        };
        let live = self.db(|s| s.read(|tx| tx.live_machines())).await?;
        for mut rec in live {
            let _guard = self.lock(&rec.id).await;
            let had_process = matches!(
                rec.state,
                MachineState::Starting
                    | MachineState::Started
                    | MachineState::Restarting
                    | MachineState::Replacing
                    | MachineState::Stopping
            );
            let mut events = Vec::new();
            if had_process {
                let was = rec.state;
                rec.state = MachineState::Stopped;
                events.push(event(
                    "exit",
                    "stopped",
                    FLYD,
                    Some(json!({"agent_restarted": true, "previous_state": was,
                        "reaped": report.reaped.contains(&rec.id)})),
                ));
            }
            match (rec.state, rec.desired) {
                (MachineState::Destroying, _) | (_, DesiredState::Destroyed) => {
                    drop(_guard);
                    if !events.is_empty() {
                        self.save(rec.clone(), events).await?;
                    }
                    self.finish_destroy(&rec.id, FLYD).await?;
                }
                (_, DesiredState::Started) if rec.state != MachineState::Failed => {
                    let id = rec.id.clone();
                    match self.boot(rec, events).await {
                        Ok(()) => report.relaunched.push(id),
                        Err(_) => report.failed.push(id),
                    }
                }
                _ => {
                    if !events.is_empty() {
                        self.save(rec, events).await?;
                    }
                }
            }
        }
        Ok(report)
    }
}
