//! The scheduler: starts scheduled machines (`config.schedule`) when their periods fall due.
//!
//! When periods fall due is `aloft_api::schedule` (counted from each machine's creation).
//! Starting one is the controller's (`controller::schedule`): the same path as
//! `POST …/start`, or a `scheduled`/`skipped` event when the machine still runs from before,
//! so a schedule never has two runs at once.
//!
//! One task keeps a [`Book`] of the scheduled machines: loaded from the store at start (the
//! last run of each is read from its events), then kept up to date from the controller's
//! `MachineChange`s (a schedule set, changed or cleared by an update; a machine destroyed; any
//! launch, which counts as the run of its period). It sleeps until the next period falls due
//! or a change comes, never polling; sleeps are capped at [`MAX_SLEEP`] so a wall clock set
//! forward is noticed.
//!
//! Missed periods (the agent was down): one run when the agent is back, for the latest period
//! due, its `missed` field counting the others — never a burst of catch-up runs. A schedule
//! lives in the machine's config in the store, so it survives any restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::schedule::{rfc3339_ms, PeriodUnit, Periods, Schedule};
use aloft_api::MachineState;
use tokio::sync::broadcast::error::RecvError;

use crate::controller::schedule::{ScheduledMachine, ScheduledRun};
use crate::controller::{Controller, MachineChange};

/// The longest the scheduler sleeps without looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long the scheduler waits before reading the store again after it failed.
const RETRY: Duration = Duration::from_secs(5);

/// The wall clock the scheduler decides by (Unix ms).
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::controller::now_ms()
    }
}

/// What the scheduler knows of one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    periods: Periods,
    /// The newest run, or the due time of the newest period handled (Unix ms): the next period
    /// due is the first after it.
    handled_ms: i64,
}

/// The scheduled machines and when each last ran; pure (time comes in as arguments).
#[derive(Debug, Default)]
pub struct Book {
    unit: PeriodUnit,
    entries: HashMap<String, Entry>,
}

impl Book {
    pub fn new(unit: PeriodUnit) -> Book {
        Book {
            unit,
            entries: HashMap::new(),
        }
    }

    /// Replaces what the book knows with the store's view.
    pub fn load(&mut self, machines: Vec<ScheduledMachine>) {
        self.entries.clear();
        for m in machines {
            let Some(schedule) = Schedule::parse(&m.schedule) else {
                tracing::warn!(machine = %m.id, schedule = %m.schedule, "unknown schedule; not scheduled");
                continue;
            };
            let handled_ms = m.last_run_ms.unwrap_or(m.created_ms).max(m.created_ms);
            self.entries.insert(
                m.id,
                Entry {
                    periods: Periods::new(schedule, m.created_ms, self.unit),
                    handled_ms,
                },
            );
        }
    }

    /// Follows one change of a machine seen at `now_ms`.
    pub fn observe(&mut self, change: &MachineChange, now_ms: i64) {
        let m = &change.machine;
        let schedule = m.config.schedule.as_deref().and_then(Schedule::parse);
        let gone = matches!(m.state, MachineState::Destroyed | MachineState::Destroying);
        let Some(schedule) = schedule.filter(|_| !gone) else {
            self.entries.remove(&m.id);
            return;
        };
        let created_ms = rfc3339_ms(&m.created_at).unwrap_or(now_ms);
        let periods = Periods::new(schedule, created_ms, self.unit);
        let entry = self.entries.entry(m.id.clone()).or_insert(Entry {
            periods,
            handled_ms: created_ms,
        });
        entry.periods = periods;
        // Every launch passes through `starting` once: it is the run of its period.
        if m.state == MachineState::Starting {
            entry.handled_ms = entry.handled_ms.max(now_ms);
        }
    }

    /// The machines whose next period has fallen due by `now_ms`, each with the one run it
    /// gets (the latest period due); they count as handled from here on.
    pub fn take_due(&mut self, now_ms: i64) -> Vec<(String, ScheduledRun)> {
        let mut due = Vec::new();
        for (id, e) in &mut self.entries {
            let (first, first_due) = e.periods.next_after(e.handled_ms);
            if first_due > now_ms {
                continue;
            }
            let period = e.periods.latest_at_or_before(now_ms);
            let run = ScheduledRun {
                period,
                due_ms: e.periods.due(period),
                missed: period - first,
            };
            e.handled_ms = run.due_ms;
            due.push((id.clone(), run));
        }
        due.sort_by(|a, b| a.0.cmp(&b.0));
        due
    }

    /// When the next period of any machine falls due (Unix ms).
    pub fn next_due(&self) -> Option<i64> {
        self.entries
            .values()
            .map(|e| e.periods.next_after(e.handled_ms).1)
            .min()
    }

    /// When machine `id`'s next period falls due (Unix ms), if it is scheduled.
    pub fn next_due_of(&self, id: &str) -> Option<i64> {
        let e = self.entries.get(id)?;
        Some(e.periods.next_after(e.handled_ms).1)
    }
}

/// Aborts the scheduler when dropped (with the agent's handle).
pub struct SchedulerTask(tokio::task::AbortHandle);

impl Drop for SchedulerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the scheduler on the system clock; it runs until the returned guard is dropped.
pub fn start(ctl: Arc<Controller>, unit: PeriodUnit) -> SchedulerTask {
    let task = tokio::spawn(run(ctl, Arc::new(SystemClock), unit));
    SchedulerTask(task.abort_handle())
}

/// The scheduler's loop (see the module docs).
pub async fn run(ctl: Arc<Controller>, clock: Arc<dyn Clock>, unit: PeriodUnit) {
    // Subscribed before the store is read: no change falls between the two.
    let mut changes = ctl.subscribe();
    let mut book = Book::new(unit);
    let mut loaded = load(&ctl, &mut book).await;
    loop {
        if !loaded {
            tokio::time::sleep(RETRY).await;
            loaded = load(&ctl, &mut book).await;
            continue;
        }
        for (id, run) in book.take_due(clock.now_ms()) {
            let ctl = ctl.clone();
            tokio::spawn(async move {
                match ctl.run_scheduled(&id, run).await {
                    Ok(outcome) => {
                        tracing::debug!(machine = %id, period = run.period, ?outcome, "scheduled period")
                    }
                    Err(e) => {
                        tracing::warn!(machine = %id, period = run.period, error = %e, "a scheduled start failed")
                    }
                }
            });
        }
        let sleep = match book.next_due() {
            Some(due) => {
                let ms = u64::try_from(due.saturating_sub(clock.now_ms())).unwrap_or(0);
                Duration::from_millis(ms).min(MAX_SLEEP)
            }
            None => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            change = changes.recv() => match change {
                Ok(c) => book.observe(&c, clock.now_ms()),
                Err(RecvError::Lagged(_)) => loaded = load(&ctl, &mut book).await,
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Reads the scheduled machines from the store into `book`; false (logged) when it failed.
async fn load(ctl: &Controller, book: &mut Book) -> bool {
    match ctl.scheduled_machines().await {
        Ok(machines) => {
            book.load(machines);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the scheduled machines; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_api::{Machine, MachineConfig};

    const HOUR: i64 = 1_000;
    const UNIT: PeriodUnit = PeriodUnit::Scaled { hour_ms: HOUR };
    /// `1970-01-01T00:01:40Z`: creation at 100 s.
    const CREATED: i64 = 100_000;

    fn stored(last_run_ms: Option<i64>) -> ScheduledMachine {
        ScheduledMachine {
            app: "a".into(),
            id: "m1".into(),
            schedule: "hourly".into(),
            created_ms: CREATED,
            last_run_ms,
        }
    }

    fn change(state: MachineState, schedule: Option<&str>) -> MachineChange {
        MachineChange {
            app: "a".into(),
            machine: Arc::new(
                serde_json::from_value::<Machine>(serde_json::json!({
                    "id": "m1", "name": "m", "state": state.as_str(), "region": "ams",
                    "instance_id": "v1", "created_at": "1970-01-01T00:01:40Z",
                    "updated_at": "1970-01-01T00:01:40Z",
                    "config": MachineConfig {
                        schedule: schedule.map(String::from),
                        ..MachineConfig::default()
                    },
                }))
                .unwrap(),
            ),
        }
    }

    #[test]
    fn one_run_per_period_under_a_fake_clock() {
        let mut book = Book::new(UNIT);
        book.load(vec![stored(Some(CREATED + 10))]);
        assert_eq!(book.next_due(), Some(CREATED + HOUR));
        let mut runs = Vec::new();
        // The clock ticks in tenths of a period over ten periods: each falls due once.
        for tick in 0..=100 {
            let now = CREATED + tick * HOUR / 10;
            for (id, run) in book.take_due(now) {
                assert_eq!(id, "m1");
                assert_eq!(run.missed, 0);
                runs.push(run.period);
                // The run starts a little later.
                book.observe(&change(MachineState::Starting, Some("hourly")), now + 3);
            }
        }
        assert_eq!(runs, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn missed_periods_make_one_run_not_a_burst() {
        let mut book = Book::new(UNIT);
        // Ran at creation; the agent comes back three and a half periods later.
        book.load(vec![stored(Some(CREATED + 5))]);
        let runs = book.take_due(CREATED + 3 * HOUR + HOUR / 2);
        assert_eq!(runs.len(), 1);
        let run = runs[0].1;
        assert_eq!((run.period, run.missed), (3, 2));
        assert_eq!(run.due_ms, CREATED + 3 * HOUR);
        assert!(book.take_due(CREATED + 3 * HOUR + HOUR / 2).is_empty());
        assert_eq!(book.next_due(), Some(CREATED + 4 * HOUR));
    }

    #[test]
    fn a_skipped_or_handled_period_is_not_due_again_after_a_reload() {
        let mut book = Book::new(UNIT);
        // The store's newest `scheduled` event was for period 2 (its due time).
        book.load(vec![stored(Some(CREATED + 2 * HOUR))]);
        assert!(book.take_due(CREATED + 2 * HOUR + 10).is_empty());
        assert_eq!(book.next_due_of("m1"), Some(CREATED + 3 * HOUR));
        // Never ran (created with skip_launch): the first period is the first run.
        book.load(vec![stored(None)]);
        assert_eq!(book.next_due_of("m1"), Some(CREATED + HOUR));
    }

    #[test]
    fn changes_set_move_and_clear_schedules() {
        let mut book = Book::new(UNIT);
        book.observe(&change(MachineState::Created, Some("hourly")), CREATED);
        assert_eq!(book.next_due_of("m1"), Some(CREATED + HOUR));
        // A manual start counts as the run of its period.
        book.observe(
            &change(MachineState::Starting, Some("hourly")),
            CREATED + 1_500,
        );
        assert_eq!(book.next_due_of("m1"), Some(CREATED + 2 * HOUR));
        // Other changes while it runs do not.
        book.observe(
            &change(MachineState::Started, Some("hourly")),
            CREATED + 2_500,
        );
        assert_eq!(book.next_due_of("m1"), Some(CREATED + 2 * HOUR));
        // Becoming daily keeps the anchor, with daily periods.
        book.observe(
            &change(MachineState::Stopped, Some("daily")),
            CREATED + 2_600,
        );
        assert_eq!(book.next_due_of("m1"), Some(CREATED + 24 * HOUR));
        // Cleared by an update, and destroyed.
        book.observe(&change(MachineState::Stopped, None), CREATED + 2_700);
        assert_eq!(book.next_due(), None);
        book.observe(
            &change(MachineState::Stopped, Some("hourly")),
            CREATED + 2_800,
        );
        book.observe(
            &change(MachineState::Destroyed, Some("hourly")),
            CREATED + 2_900,
        );
        assert_eq!(book.next_due(), None);
    }
}
