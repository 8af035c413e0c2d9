//! What the store keeps in memory next to its connection: each machine's newest events and its
//! list entry (decoded record plus ready-made JSON).
//!
//! Listing 1000 machines from SQLite alone means 1000 config decodes, 5000 event rows and their
//! JSON, then serialising it all again: ~25 ms on this project's 2-core machine, over the 20 ms
//! budget. With the cache a list is one index scan for the ids and a copy of cached bytes.
//!
//! Consistency comes from the store's single mutex: every read and write transaction runs under
//! it, so the cache changes only
//! - when a read transaction fills a missing entry from the database (its snapshot is the
//!   committed state: no write can be in flight), and
//! - after a write transaction commits, from what that transaction changed ([`Changes`]).
//!
//! A rolled-back write leaves the cache untouched. Write transactions never read the cache (they
//! may see their own uncommitted rows).

use std::collections::HashMap;
use std::sync::Arc;

use aloft_api::MachineEvent;

use crate::records::MachineRecord;

/// Events cached per machine: enough for a machine's `GET` (10) and a list entry.
pub const KEPT_EVENTS: usize = 10;

/// Events a list entry carries, newest first (flyctl shows the latest few).
pub const LIST_EVENTS: usize = 5;

/// A machine as `GET …/machines` shows it.
#[derive(Debug)]
pub struct ListedMachine {
    pub record: MachineRecord,
    /// The API `Machine` as JSON, with its newest [`LIST_EVENTS`] events and no `checks` key
    /// (check results live in the agent, which adds them).
    pub json: Box<[u8]>,
}

#[derive(Default)]
pub(crate) struct Cache {
    /// Newest first; an entry holds the newest [`KEPT_EVENTS`] (all, when fewer exist).
    events: HashMap<String, Vec<MachineEvent>>,
    listed: HashMap<String, Arc<ListedMachine>>,
}

/// What a write transaction changed, applied to the cache once it commits.
#[derive(Default)]
pub(crate) struct Changes {
    appended: Vec<(String, MachineEvent)>,
    machines: Vec<String>,
    /// Machines written as destroyed: evicted, so a long-lived agent's cache does not keep
    /// every machine it ever ran (their rows stay in the database).
    destroyed: Vec<String>,
    /// Rows were deleted wholesale (an app deleted): drop everything.
    cleared: bool,
}

impl Changes {
    pub(crate) fn event_appended(&mut self, machine_id: &str, event: &MachineEvent) {
        self.appended.push((machine_id.to_string(), event.clone()));
    }

    pub(crate) fn machine_written(&mut self, machine_id: &str, destroyed: bool) {
        if destroyed {
            self.destroyed.push(machine_id.to_string());
        } else {
            self.machines.push(machine_id.to_string());
        }
    }

    pub(crate) fn cleared(&mut self) {
        self.cleared = true;
    }
}

impl Cache {
    /// The newest `limit` (≤ [`KEPT_EVENTS`]) events of a machine, newest first, if cached.
    pub(crate) fn events(&self, machine_id: &str, limit: usize) -> Option<Vec<MachineEvent>> {
        debug_assert!(limit <= KEPT_EVENTS);
        let events = self.events.get(machine_id)?;
        Some(events[..limit.min(events.len())].to_vec())
    }

    /// Fills an entry with the newest (up to [`KEPT_EVENTS`]) committed events, newest first.
    pub(crate) fn fill_events(&mut self, machine_id: &str, newest: Vec<MachineEvent>) {
        debug_assert!(newest.len() <= KEPT_EVENTS);
        self.events.insert(machine_id.to_string(), newest);
    }

    pub(crate) fn listed(&self, machine_id: &str) -> Option<Arc<ListedMachine>> {
        self.listed.get(machine_id).cloned()
    }

    /// Caches a list entry, unless its machine is destroyed (those are listed only on request,
    /// and evicted when destroyed).
    pub(crate) fn fill_listed(&mut self, machine: Arc<ListedMachine>) {
        if machine.record.state != aloft_api::MachineState::Destroyed {
            self.listed.insert(machine.record.id.clone(), machine);
        }
    }

    /// Applies a committed write transaction's changes.
    pub(crate) fn apply(&mut self, changes: Changes) {
        if changes.cleared {
            self.events.clear();
            self.listed.clear();
            return;
        }
        for (machine_id, event) in changes.appended {
            self.listed.remove(&machine_id);
            // Absent entries stay absent: the next read fills them from the database.
            if let Some(events) = self.events.get_mut(&machine_id) {
                events.insert(0, event);
                events.truncate(KEPT_EVENTS);
            }
        }
        for machine_id in changes.machines {
            self.listed.remove(&machine_id);
        }
        for machine_id in changes.destroyed {
            self.listed.remove(&machine_id);
            self.events.remove(&machine_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> MachineEvent {
        MachineEvent {
            id: id.into(),
            kind: "start".into(),
            status: "started".into(),
            source: "flyd".into(),
            timestamp: 0,
            request: None,
        }
    }

    fn ids(events: &[MachineEvent]) -> Vec<&str> {
        events.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn appends_reach_only_filled_entries_and_keep_the_newest() {
        let mut cache = Cache::default();
        cache.fill_events("a", vec![ev("a1")]);
        let mut changes = Changes::default();
        for i in 2..=12 {
            changes.event_appended("a", &ev(&format!("a{i}")));
        }
        changes.event_appended("b", &ev("b1"));
        cache.apply(changes);
        let a = cache.events("a", KEPT_EVENTS).unwrap();
        assert_eq!(a.len(), KEPT_EVENTS);
        assert_eq!(ids(&a[..2]), ["a12", "a11"], "newest first");
        assert_eq!(ids(&cache.events("a", 3).unwrap()), ["a12", "a11", "a10"]);
        assert!(
            cache.events("b", 1).is_none(),
            "an absent entry is not invented"
        );
    }

    #[test]
    fn a_destroyed_machine_is_evicted() {
        let mut cache = Cache::default();
        cache.fill_events("a", vec![ev("a1")]);
        cache.fill_events("b", vec![ev("b1")]);
        let mut changes = Changes::default();
        changes.machine_written("a", true);
        changes.machine_written("b", false);
        cache.apply(changes);
        assert!(cache.events("a", 1).is_none());
        assert!(
            cache.events("b", 1).is_some(),
            "a row change keeps the events"
        );
    }

    #[test]
    fn clearing_drops_everything() {
        let mut cache = Cache::default();
        cache.fill_events("a", vec![ev("a1")]);
        let mut changes = Changes::default();
        changes.event_appended("a", &ev("a2"));
        changes.cleared();
        cache.apply(changes);
        assert!(cache.events("a", 1).is_none());
    }
}
