//! The machines of every app, kept in memory by the tasks that feed the proxy (`routing`) and
//! the DNS server (`dns`) from the controller's change broadcast: loaded once, then updated
//! change by change, reloaded when a receiver lagged.

use std::collections::BTreeMap;

use aloft_api::{Machine, MachineState};
use aloft_store::MachineFilter;
use tokio::sync::broadcast::error::RecvError;

use crate::controller::actions::ListMachines;
use crate::controller::{Controller, DomainError};

/// App name → machine id → machine (destroyed machines left out).
pub type AppMachines = BTreeMap<String, BTreeMap<String, Machine>>;

/// Every app's machines, from the store.
pub async fn load_all(ctl: &Controller) -> Result<AppMachines, DomainError> {
    let mut all = AppMachines::new();
    for app in ctl.list_apps(None).await? {
        let machines = ctl
            .list_machines(
                &app.name,
                ListMachines {
                    filter: MachineFilter::default(),
                    summary: true,
                },
            )
            .await
            .unwrap_or_default();
        all.insert(
            app.name.clone(),
            machines.into_iter().map(|m| (m.id.clone(), m)).collect(),
        );
    }
    Ok(all)
}

/// What one received change did to the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The machine was put in (or taken out, destroyed).
    Changed,
    /// The receiver lagged: changes were lost, reload with [`load_all`].
    Reload,
    /// The controller is gone.
    Closed,
}

/// Applies one received change to `all`.
pub fn apply(all: &mut AppMachines, change: Result<crate::MachineChange, RecvError>) -> Applied {
    match change {
        Ok(c) => {
            let app = all.entry(c.app.clone()).or_default();
            if c.machine.state == MachineState::Destroyed {
                app.remove(&c.machine.id);
            } else {
                app.insert(c.machine.id.clone(), (*c.machine).clone());
            }
            Applied::Changed
        }
        Err(RecvError::Lagged(_)) => Applied::Reload,
        Err(RecvError::Closed) => Applied::Closed,
    }
}

/// Applies `first` and every change that arrives within `window` after it (a burst costs one
/// rebuild), reloads when the receiver lagged, and drops apps left without machines. `false`
/// when the controller is gone. `what` names the caller in the log of a failed reload.
pub async fn gather(
    ctl: &Controller,
    changes: &mut tokio::sync::broadcast::Receiver<crate::MachineChange>,
    all: &mut AppMachines,
    first: Result<crate::MachineChange, RecvError>,
    window: std::time::Duration,
    what: &str,
) -> bool {
    let mut reload = false;
    let mut take = |all: &mut AppMachines, change| match apply(all, change) {
        Applied::Changed => true,
        Applied::Reload => {
            reload = true;
            true
        }
        Applied::Closed => false,
    };
    if !take(all, first) {
        return false;
    }
    let window = tokio::time::sleep(window);
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            c = changes.recv() => if !take(all, c) { return false },
        }
    }
    if reload {
        match load_all(ctl).await {
            Ok(fresh) => *all = fresh,
            Err(e) => tracing::warn!(error = %e, "reloading machines for the {what}"),
        }
    }
    all.retain(|_, ms| !ms.is_empty());
    true
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aloft_api::{Machine, MachineConfig, MachineState};
    use tokio::sync::broadcast::error::RecvError;

    use super::*;

    fn change(id: &str, state: MachineState) -> Result<crate::MachineChange, RecvError> {
        Ok(crate::MachineChange {
            app: "a".into(),
            machine: Arc::new(Machine::new(id, "ams", state, MachineConfig::default())),
        })
    }

    #[test]
    fn changes_put_machines_in_and_destroys_take_them_out() {
        let mut all = AppMachines::new();
        assert_eq!(
            apply(&mut all, change("m1", MachineState::Started)),
            Applied::Changed
        );
        assert_eq!(
            apply(&mut all, change("m2", MachineState::Stopped)),
            Applied::Changed
        );
        assert_eq!(all["a"].len(), 2);
        assert_eq!(all["a"]["m2"].state, MachineState::Stopped);
        apply(&mut all, change("m1", MachineState::Destroyed));
        assert_eq!(all["a"].keys().collect::<Vec<_>>(), ["m2"]);
        assert_eq!(apply(&mut all, Err(RecvError::Lagged(3))), Applied::Reload);
        assert_eq!(apply(&mut all, Err(RecvError::Closed)), Applied::Closed);
    }
}
