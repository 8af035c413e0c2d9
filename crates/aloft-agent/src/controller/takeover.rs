//! Standby takeover (flyctl-behaviour §3.3 step 6, machines-api `standbys`): a standby machine
//! (config `standbys = [watched ids]`, env `FLY_STANDBY_FOR`) stays stopped until a machine it
//! watches is lost *because of its host* — then it is started.
//!
//! What counts as the host's failure here, with one host per agent: the agent cannot launch the
//! watched machine for a reason of the host, not of the machine — its cgroup cannot be set up,
//! the runtime's own files cannot be read or written (`RuntimeError::Cgroup`, `::Io`, a full
//! disk included): [`host_side`]. Never when the watched machine merely stops, crashes (its
//! restart policy handles that), is destroyed, or cannot start because of its own config,
//! command or image — Fly starts a standby only on host failure, and so does Aloft. When hosts
//! can be lost (the cluster issue), a lost host's machines go through the same
//! [`Controller::take_over_for`].
//!
//! Only standbys that are stopped or created are started: one already running has taken over,
//! and a failed one is not retried (two standbys watching each other cannot start each other in
//! a loop). Each start goes through `start_machine`, the path of an API start, before the
//! failed launch is answered.

use aloft_api::{Machine, MachineState};
use aloft_runtime::RuntimeError;
use aloft_store::MachineFilter;

use super::actions::ListMachines;
use super::Controller;

/// Whether a launch failure is the host's rather than the machine's own.
pub fn host_side(e: &RuntimeError) -> bool {
    matches!(e, RuntimeError::Cgroup { .. } | RuntimeError::Io { .. })
}

/// The standbys of `app` that take over for the `lost` machines, in id order.
pub fn standbys_for<'m>(machines: &'m [Machine], lost: &[String]) -> Vec<&'m Machine> {
    let mut out: Vec<&Machine> = machines
        .iter()
        .filter(|m| matches!(m.state, MachineState::Stopped | MachineState::Created))
        .filter(|m| !lost.contains(&m.id))
        .filter(|m| m.config.standbys.iter().any(|w| lost.contains(w)))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

impl Controller {
    /// The host of the `lost` machines of `app` failed them: starts every standby watching one
    /// of them. Returns the ids of the standbys started.
    pub async fn take_over_for(&self, app: &str, lost: &[String], why: &str) -> Vec<String> {
        let listed = ListMachines {
            filter: MachineFilter::default(),
            summary: false,
        };
        let machines = match self.list_machines(app, listed).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(app, error = %e, "standby takeover: cannot list machines");
                return Vec::new();
            }
        };
        let mut started = Vec::new();
        for standby in standbys_for(&machines, lost) {
            tracing::warn!(app, standby = %standby.id, watched = ?standby.config.standbys, "starting a standby machine: the host failed a machine it watches ({why})");
            match self.start_machine(app, &standby.id, None).await {
                Ok(_) => started.push(standby.id.clone()),
                Err(e) => {
                    tracing::error!(app, standby = %standby.id, error = %e, "standby takeover failed")
                }
            }
        }
        started
    }

    /// Called when launching `machine` failed with `e` (the machine is `failed` already): a
    /// failure of the host hands over to the machine's standbys. The caller holds the machine's
    /// lock; only other machines are started (a failed machine is never a candidate), so two
    /// standbys watching each other cannot wait on each other.
    pub(crate) async fn on_launch_failure(&self, app: &str, machine: &str, e: &RuntimeError) {
        if host_side(e) {
            let lost = [machine.to_string()];
            // Boxed: a standby's start may fail the same way and hand over in turn.
            Box::pin(self.take_over_for(app, &lost, &e.to_string())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use aloft_api::MachineConfig;

    use super::*;

    fn machine(id: &str, state: MachineState, watches: &[&str]) -> Machine {
        let mut config = MachineConfig::default();
        config.set_standby_for(watches.iter().map(|s| s.to_string()).collect());
        Machine::new(id, "ams", state, config)
    }

    #[test]
    fn only_stopped_standbys_of_a_lost_machine_take_over() {
        let ms = [
            machine("p1", MachineState::Failed, &[]),
            machine("s2", MachineState::Stopped, &["p1"]),
            machine("s1", MachineState::Created, &["p9", "p1"]),
            machine("s3", MachineState::Started, &["p1"]),
            machine("s4", MachineState::Failed, &["p1"]),
            machine("s5", MachineState::Stopped, &["p2"]),
            machine("p2", MachineState::Stopped, &[]),
        ];
        let ids: Vec<&str> = standbys_for(&ms, &["p1".into()])
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["s1", "s2"]);
    }

    #[test]
    fn only_host_failures_count() {
        let io = || std::io::Error::other("boom");
        assert!(host_side(&RuntimeError::Cgroup {
            machine_id: "m".into(),
            source: io()
        }));
        assert!(host_side(&RuntimeError::Io {
            path: "/x".into(),
            source: io()
        }));
        assert!(!host_side(&RuntimeError::NoCommand("m".into())));
        assert!(!host_side(&RuntimeError::Spawn {
            machine_id: "m".into(),
            argv: vec!["nope".into()],
            source: std::io::ErrorKind::NotFound.into()
        }));
    }
}
