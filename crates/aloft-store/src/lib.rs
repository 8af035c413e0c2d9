//! Durable state of an agent: apps, machines, machine versions, events, leases, the deploy
//! state (releases with their event logs, uploaded images, per-group desired counts), API
//! tokens, the apps' event logs and volumes in one SQLite database.
//!
//! The API is synchronous: the agent calls it from `spawn_blocking` or a dedicated thread, never
//! on an async worker thread. Everything goes through [`Store::read`] or [`Store::write`]; a write
//! closure runs inside one `BEGIN IMMEDIATE` transaction that is committed before `write` returns,
//! so multi-row changes are atomic and an acknowledged change is on disk.
//!
//! Durability choice: WAL with `synchronous = NORMAL`. A commit is appended to the WAL file with
//! a `write()` before `write` returns, so it survives the agent being killed (`kill -9`): the data
//! is in the OS page cache and SQLite recovers it from the WAL at the next open. Only a power
//! loss or kernel crash can roll back the last few commits (never corrupt the database); that is
//! the trade Fly's flyd makes with BoltDB's batch mode too, and it keeps a machine create at one
//! page write instead of two fsyncs. Set `ALOFT_STORE_SYNC=full` (see [`Durability`]) to fsync
//! every commit instead.

mod cache;
mod certs;
mod deploys;
mod error;
mod ips;
mod migrations;
mod records;
mod reserve;
mod secrets;
mod tokens;
mod tx;
mod volumes;

pub use cache::{ListedMachine, KEPT_EVENTS, LIST_EVENTS};
pub use certs::CertificateRow;
pub use deploys::{ImageRow, OciImageRow, ReleaseEventRow, ReleaseRow, UNFINISHED_STATUSES};
pub use error::StoreError;
pub use ips::IpRow;
pub use migrations::{latest_version, Migration, MIGRATIONS};
pub use records::{AppRecord, DesiredState, MachineFilter, MachineRecord, VersionRecord};
pub use reserve::RESERVE_BYTES;
pub use secrets::{SecretRow, SECRET_DEPLOYED, SECRET_STAGED, SECRET_UNSET};
pub use tokens::{AppEventRow, TokenRow, KEPT_APP_EVENTS};
pub use tx::{Tx, MAX_EVENTS_PER_MACHINE};
pub use volumes::{SnapshotRow, VolumeRow};

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, TransactionBehavior};

/// How hard a commit is pushed to disk (see the crate docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: survives process kills; may lose the newest commits on power loss.
    #[default]
    ProcessCrash,
    /// `synchronous = FULL`: fsync on every commit; survives power loss.
    PowerLoss,
}

impl Durability {
    /// `ALOFT_STORE_SYNC=full` selects [`Durability::PowerLoss`]; anything else the default.
    pub fn from_env() -> Durability {
        match std::env::var("ALOFT_STORE_SYNC").as_deref() {
            Ok("full") | Ok("FULL") => Durability::PowerLoss,
            _ => Durability::ProcessCrash,
        }
    }
}

/// The agent's database. Cheap to share behind an `Arc`; one connection guarded by a mutex.
pub struct Store {
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
    /// Space kept for writes on a full disk (`reserve`); none in memory.
    reserve: Option<reserve::Reserve>,
}

/// What the mutex guards: the connection and the in-memory state that must change with it.
struct Inner {
    conn: Connection,
    cache: cache::Cache,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path, durability: Durability) -> Result<Store, StoreError> {
        let at = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(at)?;
        let sync = match durability {
            Durability::ProcessCrash => "NORMAL",
            Durability::PowerLoss => "FULL",
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(at)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_path_buf(),
                mode,
            });
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;"
        ))
        .map_err(at)?;
        migrations::migrate(&mut conn)?;
        Ok(Store::over(conn, Some(path.to_path_buf())))
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        migrations::migrate(&mut conn)?;
        Ok(Store::over(conn, None))
    }

    fn over(conn: Connection, path: Option<PathBuf>) -> Store {
        Store {
            inner: Mutex::new(Inner {
                conn,
                cache: Default::default(),
            }),
            reserve: path.as_deref().map(reserve::Reserve::new),
            path,
        }
    }

    /// The database file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut inner = self.lock();
        let Inner { conn, cache } = &mut *inner;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let cache = RefCell::new(cache);
        let out = f(&Tx::reading(&tx, &cache))?;
        tx.finish()?;
        Ok(out)
    }

    /// Runs `f` in one write transaction, committed before returning. An error from `f` rolls
    /// everything back. On a full disk the write is tried once more after the store's reserve
    /// is freed (see `reserve`), so `f` may run twice; only one run is ever committed.
    pub fn write<T>(
        &self,
        mut f: impl FnMut(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.write_once(&mut f);
        let Some(reserve) = &self.reserve else {
            return result;
        };
        match result {
            Err(e) if reserve::is_disk_full(&e) && reserve.release() => self.write_once(&mut f),
            Ok(out) => {
                reserve.maybe_restore();
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the disk-full reserve is spent: the disk filled up and has not had room since.
    pub fn disk_reserve_spent(&self) -> bool {
        self.reserve.as_ref().is_some_and(|r| r.is_spent())
    }

    fn write_once<T>(
        &self,
        f: &mut impl FnMut(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut inner = self.lock();
        let Inner { conn, cache } = &mut *inner;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (out, changes) = {
            let tx = Tx::writing(&tx);
            let out = f(&tx)?;
            (out, tx.into_changes())
        };
        tx.commit()?;
        cache.apply(changes);
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside a closure drops (rolls back) its transaction before the guard is
        // released, so the connection is consistent even when the mutex is poisoned.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
