//! The controller: the one owner of machine state transitions.
//!
//! HTTP handlers parse requests into typed actions ([`actions`]) and the controller executes them
//! ([`Controller::execute`]), answering an outcome or a [`DomainError`] (no HTTP here: `api/`
//! chooses every status code); the runtime's events come in through
//! [`Controller::run_runtime_events`]. Handlers reach the runtime only through the controller
//! (logs: [`Controller::logs`]). Every change of a machine
//! is written to the store (with its events, in one transaction) while holding that machine's
//! lock, then published on [`Controller::subscribe`] for `wait`, the proxy and the deploy engine.
//! Locks are never held across a wait for a process to stop, so a slow stop never blocks events.

pub mod actions;
mod apps;
mod capacity;
pub mod certs;
mod checks;
pub mod console;
mod copy;
mod error;
mod exec;
pub mod ips;
mod leases;
mod logs;
mod machines;
mod oci;
mod ports;
mod reconcile;
mod runtime_events;
pub mod schedule;
pub mod secrets;
pub mod takeover;
#[cfg(test)]
mod tests;
mod unimplemented;
pub mod volumes;

pub use capacity::Reserve;
pub use error::{DomainError, DomainResult};
pub use logs::Logs;
pub use machines::validate_config;
pub use oci::{oci_digest, oci_error};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aloft_api::{Machine, MachineEvent};
use aloft_store::{MachineRecord, Store, StoreError};
use tokio::sync::{broadcast, OwnedMutexGuard};

use crate::regions::Regions;
use crate::supervisor::Supervisor;

/// A machine as it is after a change (without its events).
#[derive(Clone, Debug)]
pub struct MachineChange {
    pub app: String,
    pub machine: Arc<Machine>,
}

/// See the module docs.
pub struct Controller {
    store: Arc<Store>,
    sup: Arc<dyn Supervisor>,
    regions: Regions,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    changes: broadcast::Sender<MachineChange>,
    /// Latest health-check results per machine (see `checks`).
    checks: checks::CheckResults,
    /// Whether anything runs health checks (the proxy). Without it, a machine's checks have no
    /// results and nobody waits for them (see `checks`).
    checks_run: std::sync::atomic::AtomicBool,
    /// `<data-dir>/images`: where uploaded images are unpacked (set once at agent start).
    images_dir: std::sync::OnceLock<std::path::PathBuf>,
    /// `<data-dir>/oci`: the OCI image store (set once at agent start; see `oci`).
    oci: std::sync::OnceLock<aloft_oci::ContentStore>,
    /// Held while external ports are checked and the machine claiming them is written (`ports`).
    port_claims: tokio::sync::Mutex<()>,
    limits: crate::settings::Limits,
    /// This host's RAM in MiB, when it could be read (`capacity`).
    host_memory_mb: Option<u64>,
    reservations: capacity::Reservations,
    /// The host's public addresses (`ips`), set once at agent start.
    public_addresses: std::sync::OnceLock<crate::settings::PublicAddresses>,
    /// Bumped whenever an app's IP addresses change (`ips`): the proxy and the DNS server
    /// rebuild what they serve.
    ip_changes: tokio::sync::watch::Sender<u64>,
    /// Each app's Flycast addresses and whether it is public, from the `ips` table (`ips`):
    /// read synchronously by the routing table's builder.
    app_addresses: std::sync::RwLock<std::collections::BTreeMap<String, ips::AppAddresses>>,
    /// The key sealing app secrets (`secrets`), set once at agent start.
    secrets_key: std::sync::OnceLock<Arc<crate::secrets_key::Keyring>>,
    /// The host's volumes, or why there are none (`volumes`), set once at agent start.
    volumes: std::sync::OnceLock<Result<Arc<aloft_runtime::volumes::VolumeHost>, String>>,
    /// Console sessions running now (`console`).
    consoles: console::ConsoleSessions,
}

/// Event `source` of API-initiated events.
pub const USER: &str = "user";
/// Event `source` of the supervisor's events.
pub const FLYD: &str = "flyd";

impl Controller {
    /// Stops the runtime's supervision of every machine (exits unhandled, no restarts), as a
    /// crashed agent would leave them; called when the agent's handle is dropped.
    pub fn abandon_supervision(&self) {
        self.sup.abandon();
    }

    pub fn new(
        store: Arc<Store>,
        sup: Arc<dyn Supervisor>,
        regions: Regions,
        limits: crate::settings::Limits,
    ) -> Controller {
        let (changes, _) = broadcast::channel(4096);
        Controller {
            store,
            sup,
            regions,
            locks: Mutex::new(HashMap::new()),
            changes,
            checks: Default::default(),
            checks_run: Default::default(),
            images_dir: std::sync::OnceLock::new(),
            oci: std::sync::OnceLock::new(),
            port_claims: Default::default(),
            limits,
            host_memory_mb: capacity::host_memory_mb(),
            reservations: Default::default(),
            public_addresses: std::sync::OnceLock::new(),
            ip_changes: tokio::sync::watch::channel(0).0,
            app_addresses: Default::default(),
            secrets_key: std::sync::OnceLock::new(),
            volumes: std::sync::OnceLock::new(),
            consoles: Default::default(),
        }
    }

    /// Changes of the apps' IP addresses (a counter; re-read `all_ips` when it moves).
    pub fn subscribe_ips(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ip_changes.subscribe()
    }

    /// Sets where uploaded images live (`<data-dir>/images`); the first call wins.
    pub fn set_images_dir(&self, dir: std::path::PathBuf) {
        let _ = self.images_dir.set(dir);
    }

    /// Where uploaded images live, if set.
    pub fn images_dir(&self) -> Option<&std::path::Path> {
        self.images_dir.get().map(|p| p.as_path())
    }

    /// Every machine change from now on. A lagging receiver gets `Lagged` and should re-read.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineChange> {
        self.changes.subscribe()
    }

    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// Runs `f` on the store on a blocking thread.
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> DomainResult<T> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(DomainError::from),
            Err(e) => Err(DomainError::internal(format!(
                "state store task failed: {e}"
            ))),
        }
    }

    /// The per-machine lock serialising every change of one machine.
    async fn lock(&self, machine_id: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(machine_id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    fn forget_lock(&self, machine_id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(machine_id);
    }

    fn publish(&self, rec: &MachineRecord) {
        self.reservations.update(&rec.id, rec.state, &rec.config);
        let mut machine = rec.to_api(Vec::new());
        self.attach_checks(&mut machine);
        let _ = self.changes.send(MachineChange {
            app: rec.app.clone(),
            machine: Arc::new(machine),
        });
    }

    /// Writes `rec` (stamping `updated_at`) and `events` in one transaction, then publishes it.
    async fn save(
        &self,
        mut rec: MachineRecord,
        events: Vec<MachineEvent>,
    ) -> DomainResult<MachineRecord> {
        rec.updated_at = now_rfc3339();
        let r = rec.clone();
        self.db(move |s| {
            s.write(|tx| {
                tx.put_machine(&r)?;
                for e in &events {
                    tx.add_event(&r.id, e)?;
                }
                Ok(())
            })
        })
        .await?;
        self.publish(&rec);
        Ok(rec)
    }

    async fn machine_by_id(&self, id: &str) -> DomainResult<Option<MachineRecord>> {
        let id = id.to_string();
        self.db(move |s| s.read(|tx| tx.machine_by_id(&id))).await
    }
}

/// A new machine event stamped now.
pub fn event(
    kind: &str,
    status: &str,
    source: &str,
    request: Option<serde_json::Value>,
) -> MachineEvent {
    MachineEvent {
        id: ulid::Ulid::new().to_string(),
        kind: kind.into(),
        status: status.into(),
        source: source.into(),
        timestamp: now_ms(),
        request,
    }
}

/// RFC 3339 UTC, second precision (`2023-11-08T01:52:30Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
