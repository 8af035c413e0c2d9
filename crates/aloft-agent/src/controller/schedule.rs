//! The controller's side of scheduled machines (`config.schedule`; the timing is the agent's
//! `schedules` task): what the store knows of each scheduled machine, and starting one for a
//! period.
//!
//! A scheduled start takes the path of `POST …/start` (memory check, `boot`, the runtime's
//! `start` event), preceded by an event `scheduled`/`started` (source `scheduler`) naming the
//! period. A machine still running when its next period comes is not started again: the period
//! gets an event `scheduled`/`skipped` instead, so two runs never overlap. Leases do not hold a
//! schedule back (flyd's schedule is not a client of the lease), but a machine being replaced,
//! stopped or destroyed is running or gone and so is skipped.

use aloft_api::schedule::rfc3339_ms;
use aloft_api::{MachineEvent, MachineState};
use aloft_store::DesiredState;
use serde_json::json;

use super::machines::is_running;
use super::{event, Controller, DomainResult, Reserve};

/// Event `source` of the scheduler's events.
pub const SCHEDULER: &str = "scheduler";
/// Event `type` of the scheduler's events.
pub const SCHEDULED: &str = "scheduled";

/// A machine with a schedule, as the store has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledMachine {
    pub app: String,
    pub id: String,
    /// `config.schedule`, as given (validated when it was set).
    pub schedule: String,
    /// Creation time, Unix ms (second precision: the record's `created_at`).
    pub created_ms: i64,
    /// The newest run the machine's events show (a `start` event, or the due time of a
    /// `scheduled` one), Unix ms; `None` when its kept events show none.
    pub last_run_ms: Option<i64>,
}

/// One period of a machine's schedule, as the scheduler saw it fall due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The period's number (0 = the creation).
    pub period: i64,
    /// When it fell due, Unix ms.
    pub due_ms: i64,
    /// Earlier periods that fell due while nothing ran them (the agent was down): run once
    /// for all of them, never one each.
    pub missed: i64,
}

/// What became of a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduledOutcome {
    /// The machine was started (or failed to start: see its `launch` event).
    Started,
    /// Still running (or stopping) from before: not started again.
    Skipped,
    /// Destroyed, or no longer scheduled: nothing done.
    Gone,
}

/// The newest run the events (newest first) show: a `start`, or a `scheduled` period's due time.
pub fn last_run_in(events: &[MachineEvent]) -> Option<i64> {
    events.iter().find_map(|e| match e.kind.as_str() {
        "start" => Some(e.timestamp),
        SCHEDULED => e
            .request
            .as_ref()
            .and_then(|r| r["due"].as_i64())
            .or(Some(e.timestamp)),
        _ => None,
    })
}

impl Controller {
    /// Every machine not destroyed that has a schedule.
    pub async fn scheduled_machines(&self) -> DomainResult<Vec<ScheduledMachine>> {
        self.db(|s| {
            s.read(|tx| {
                let mut out = Vec::new();
                for rec in tx.live_machines()? {
                    let Some(schedule) = rec.config.schedule.clone().filter(|s| !s.is_empty())
                    else {
                        continue;
                    };
                    if matches!(
                        rec.state,
                        MachineState::Destroyed | MachineState::Destroying
                    ) {
                        continue;
                    }
                    let events =
                        tx.events(&rec.id, aloft_store::MAX_EVENTS_PER_MACHINE as usize)?;
                    out.push(ScheduledMachine {
                        created_ms: rfc3339_ms(&rec.created_at).unwrap_or(0),
                        last_run_ms: last_run_in(&events),
                        app: rec.app,
                        id: rec.id,
                        schedule,
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    /// Starts machine `id` for one period of its schedule, unless it still runs (see the
    /// module docs).
    pub async fn run_scheduled(
        &self,
        id: &str,
        run: ScheduledRun,
    ) -> DomainResult<ScheduledOutcome> {
        let _guard = self.lock(id).await;
        let Some(mut rec) = self.machine_by_id(id).await? else {
            return Ok(ScheduledOutcome::Gone);
        };
        let Some(schedule) = rec.config.schedule.clone().filter(|s| !s.is_empty()) else {
            return Ok(ScheduledOutcome::Gone);
        };
        let request = |extra: serde_json::Value| {
            let mut r = json!({
                "schedule": schedule,
                "period": run.period,
                "due": run.due_ms,
                "missed": run.missed,
            });
            if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
                r.extend(extra.clone());
            }
            Some(r)
        };
        match rec.state {
            MachineState::Destroyed | MachineState::Destroying => Ok(ScheduledOutcome::Gone),
            s if is_running(s) || s == MachineState::Stopping => {
                let reason = format!("machine {id} is still {s} from an earlier run");
                tracing::info!(machine = %id, period = run.period, "scheduled run skipped: {reason}");
                let ev = event(
                    SCHEDULED,
                    "skipped",
                    SCHEDULER,
                    request(json!({ "reason": reason })),
                );
                self.save(rec, vec![ev]).await?;
                Ok(ScheduledOutcome::Skipped)
            }
            _ => {
                if let Err(e) = self.check_memory(&rec.config, Reserve::Existing(id)) {
                    let ev = event(
                        SCHEDULED,
                        "failed",
                        SCHEDULER,
                        request(json!({ "error": e.message() })),
                    );
                    self.save(rec, vec![ev]).await?;
                    return Err(e);
                }
                rec.desired = DesiredState::Started;
                rec.restart_count = 0;
                let ev = event(SCHEDULED, "started", SCHEDULER, request(json!({})));
                // A launch that fails is recorded on the machine (`launch`/`failed`) as well.
                self.boot(rec, vec![ev]).await?;
                Ok(ScheduledOutcome::Started)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, ts: i64, request: Option<serde_json::Value>) -> MachineEvent {
        MachineEvent {
            id: String::new(),
            kind: kind.into(),
            status: String::new(),
            source: String::new(),
            timestamp: ts,
            request,
        }
    }

    #[test]
    fn the_last_run_is_the_newest_start_or_scheduled_period() {
        assert_eq!(last_run_in(&[]), None);
        let events = [
            ev("exit", 50, None),
            ev("start", 40, None),
            ev("scheduled", 39, Some(json!({"due": 30}))),
        ];
        assert_eq!(last_run_in(&events), Some(40));
        // A skipped period counts as handled, at its due time.
        let events = [
            ev("scheduled", 70, Some(json!({"due": 60}))),
            ev("start", 40, None),
        ];
        assert_eq!(last_run_in(&events), Some(60));
        assert_eq!(last_run_in(&[ev("launch", 5, None)]), None);
    }
}
