//! Machine control: the proxy's own actions on machines and what it believes about them until
//! the agent's routing table catches up. Autostart (one start shared by every request that
//! asks, machines-api §4.4), the boot window after a start (a refusal then means "wait", not
//! "fail over"), the states the proxy put machines in (overrides), and autostop
//! (`autostop.rs`). Every action goes through the agent's [`MachineControl`] handle.
//!
//! Invariant: this is the only module that calls [`MachineControl`]; selection asks it for a
//! machine's effective state and for starts, and never changes a machine itself.

pub(crate) mod autostop;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::control::{ControlError, MachineControl};
use crate::counted::CountedMap;
use crate::table::{Backend, BackendState, PortRoute, RouteTable};

/// How often a just-started machine that still refuses connections is tried again.
pub(crate) const BOOT_POLL: Duration = Duration::from_millis(5);

/// How long the proxy trusts its own start/stop of a machine over an older routing table.
const OVERRIDE_TTL: Duration = Duration::from_secs(30);

/// How long after its first accepted connection a booted machine is forgotten (refusals of
/// attempts that began before that connection still count as booting until then).
const BOOTED_GRACE: Duration = Duration::from_secs(1);

/// The outcome of an autostart: `None` while it runs.
type StartWatch = watch::Receiver<Option<Result<(), String>>>;

/// Machine control (see the module docs).
pub(crate) struct Machines {
    control: Arc<dyn MachineControl>,
    table: watch::Receiver<RouteTable>,
    /// How long a start may take, the app's boot included.
    start_timeout: Duration,
    /// After a start, how long to wait for the agent's table to confirm it.
    table_confirm_timeout: Duration,
    /// machine id → (state the proxy put it in, when).
    overrides: CountedMap<Override>,
    /// machine id → outcome of an autostart in progress (`None` while running).
    starting: Mutex<HashMap<String, StartWatch>>,
    /// machine id → when autostart started it; cleared by its first successful connection.
    booting: CountedMap<Boot>,
}

/// An autostarted machine's boot: when autostart started it, and when a connection to it first
/// succeeded.
#[derive(Clone, Copy, Debug)]
struct Boot {
    started: Instant,
    connected: Option<Instant>,
}

/// A state the proxy put a machine in, trusted until the agent's table reports any new
/// state for that machine (confirming or contradicting it) or until it expires.
#[derive(Clone, Copy, Debug)]
struct Override {
    state: BackendState,
    /// The machine's state in the table when the override was set.
    table_state: Option<BackendState>,
    at: Instant,
}

impl Machines {
    pub fn new(
        control: Arc<dyn MachineControl>,
        table: watch::Receiver<RouteTable>,
        start_timeout: Duration,
        table_confirm_timeout: Duration,
    ) -> Machines {
        Machines {
            control,
            table,
            start_timeout,
            table_confirm_timeout,
            overrides: CountedMap::default(),
            starting: Mutex::default(),
            booting: CountedMap::default(),
        }
    }

    /// The machine's state as the table says, unless the proxy itself changed it recently.
    pub fn effective_state(&self, b: &Backend) -> BackendState {
        if !self.overrides.maybe_any() {
            return b.state;
        }
        let o = self.overrides.lock();
        match o.get(&b.machine_id) {
            Some(ov) if ov.at.elapsed() < OVERRIDE_TTL => ov.state,
            _ => b.state,
        }
    }

    /// Forgets overrides the agent's new table confirms (or that expired). Called on every
    /// table change; never from a request's possibly older snapshot of a route.
    pub fn reconcile(&self, table: &RouteTable) {
        let mut o = self.overrides.lock();
        o.retain(|id, ov| {
            let now = table
                .machines
                .get(id)
                .map(|m| BackendState::from_machine(m.state));
            // Once the agent reports a new state, its word wins (e.g. a user stop after an
            // autostart); a gone machine needs no override.
            now.is_some() && now == ov.table_state && ov.at.elapsed() < OVERRIDE_TTL
        });
    }

    /// Trusts `state` for the machine until the table says otherwise (`None` forgets it).
    pub fn set_override(&self, machine_id: &str, state: Option<BackendState>) {
        // Read the table before locking the overrides: `reconcile` runs with the table
        // borrowed and then locks them, so the opposite order could deadlock.
        let table_state = self
            .table
            .borrow()
            .machines
            .get(machine_id)
            .map(|m| BackendState::from_machine(m.state));
        let mut o = self.overrides.lock();
        match state {
            Some(state) if table_state != Some(state) => {
                o.insert(
                    machine_id.to_string(),
                    Override {
                        state,
                        table_state,
                        at: Instant::now(),
                    },
                );
            }
            _ => {
                o.remove(machine_id);
            }
        }
    }

    /// Whether a connection attempt to the machine that began at `attempt` was refused because
    /// the machine, just started by autostart, is still booting: then it is retried (not counted
    /// as an attempt) until `start_timeout`. An attempt that began before the machine first
    /// accepted a connection counts as booting even when another request got through meanwhile.
    pub fn booting(&self, machine_id: &str, attempt: Instant) -> bool {
        if !self.booting.maybe_any() {
            return false;
        }
        let mut b = self.booting.lock();
        match b.get(machine_id).copied() {
            Some(boot) if boot.started.elapsed() < self.start_timeout => {
                boot.connected.is_none_or(|c| attempt < c)
            }
            Some(_) => {
                b.remove(machine_id);
                false
            }
            None => false,
        }
    }

    /// The machine accepted a connection: it has booted.
    pub fn connected(&self, machine_id: &str) {
        if self.booting.maybe_any() {
            let mut b = self.booting.lock();
            match b.get_mut(machine_id) {
                Some(Boot {
                    connected: Some(c), ..
                }) if c.elapsed() > BOOTED_GRACE => {
                    b.remove(machine_id);
                }
                Some(boot) => {
                    boot.connected.get_or_insert_with(Instant::now);
                }
                None => {}
            }
        }
    }

    /// Whether a start of the machine is under way.
    pub fn is_starting(&self, machine_id: &str) -> bool {
        self.starting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(machine_id)
    }

    /// Starts a machine once, however many requests ask at the same time, and waits for it.
    pub async fn start(self: &Arc<Self>, app: &str, machine_id: &str) -> Result<(), String> {
        let mut rx = self.start_rx(app, machine_id);
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err(format!("autostart of machine {machine_id} was abandoned"));
            }
        }
    }

    /// Starts a machine (or joins its start under way) without waiting for it.
    pub fn wake(self: &Arc<Self>, app: &str, machine_id: &str) {
        drop(self.start_rx(app, machine_id));
    }

    fn start_rx(self: &Arc<Self>, app: &str, machine_id: &str) -> StartWatch {
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = starting.get(machine_id) {
            return rx.clone();
        }
        // A caller deciding on an older snapshot of the route may ask after a start finished:
        // the newest table already says started, so there is nothing to start again.
        let started = self
            .table
            .borrow()
            .machines
            .get(machine_id)
            .is_some_and(|m| m.state == aloft_api::MachineState::Started);
        if started {
            return watch::channel(Some(Ok(()))).1;
        }
        let (tx, rx) = watch::channel(None);
        starting.insert(machine_id.to_string(), rx.clone());
        let me = Arc::downgrade(self);
        let (app, id) = (app.to_string(), machine_id.to_string());
        tokio::spawn(async move {
            let Some(me) = me.upgrade() else { return };
            tracing::info!(app = %app, machine = %id, "autostart: starting machine");
            let started = Instant::now();
            // Booting from now on: the agent's table may say `started` before `start` returns,
            // and requests that see it must wait for the app to listen, not fail over.
            me.booting.lock().insert(
                id.clone(),
                Boot {
                    started,
                    connected: None,
                },
            );
            let r = me.control.start(&app, &id).await.map_err(|e| e.0);
            match &r {
                Ok(()) => {
                    tracing::info!(app = %app, machine = %id, elapsed = ?started.elapsed(), "autostart: machine started");
                    me.set_override(&id, Some(BackendState::Started));
                }
                Err(e) => {
                    tracing::warn!(app = %app, machine = %id, "autostart: {e}");
                    me.booting.lock().remove(&id);
                }
            }
            me.starting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            let _ = tx.send(Some(r));
        });
        rx
    }

    /// Stops (or suspends) a machine through the agent.
    pub async fn stop(
        &self,
        app: &str,
        machine_id: &str,
        suspend: bool,
    ) -> Result<(), ControlError> {
        self.control.stop(app, machine_id, suspend).await
    }

    /// After a start, the runtime may have given the machine new host ports: waits briefly for
    /// the agent's next table and returns its view of the machine, else the old one.
    pub async fn wait_table_started(&self, route: &PortRoute, b: &Backend) -> Backend {
        let mut table = self.table.clone();
        let deadline = Instant::now() + self.table_confirm_timeout;
        loop {
            {
                let t = table.borrow_and_update();
                if let Some(nb) = t.route(&route.app, route.port).and_then(|r| {
                    r.backends.iter().find(|x| {
                        x.machine_id == b.machine_id && x.internal_port == b.internal_port
                    })
                }) {
                    if nb.state == BackendState::Started && nb.addr.is_some() {
                        return nb.clone();
                    }
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if tokio::time::timeout(left, table.changed()).await.is_err() {
                break;
            }
        }
        b.clone()
    }
}
