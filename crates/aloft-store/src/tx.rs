//! [`Tx`]: every query of the store, run inside a transaction opened by `Store::read`/`write`.
//!
//! Other modules of this crate (e.g. the deploy engine's releases) add their own `impl Tx`
//! blocks and use [`Tx::conn`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use aloft_api::{Lease, MachineConfig, MachineEvent, MachineState};
use rusqlite::{params, OptionalExtension, Row, Transaction};

use crate::cache::{Cache, Changes, ListedMachine, KEPT_EVENTS, LIST_EVENTS};
use crate::records::{AppRecord, DesiredState, MachineFilter, MachineRecord, VersionRecord};
use crate::StoreError;

/// Events kept per machine; older ones are pruned as new ones arrive.
pub const MAX_EVENTS_PER_MACHINE: i64 = 200;

/// A transaction on the store.
pub struct Tx<'a> {
    tx: &'a Transaction<'a>,
    cache: CacheUse<'a>,
}

/// How a transaction uses the in-memory cache (see `cache.rs`).
enum CacheUse<'a> {
    /// A read sees committed state only: it reads and fills the cache.
    Read(&'a RefCell<&'a mut Cache>),
    /// A write may roll back: it bypasses the cache and records its changes for after commit.
    Write(RefCell<Changes>),
}

const MACHINE_COLUMNS: &str =
    "id, app, name, region, state, desired_state, instance_id, private_ip, \
     config, image_ref, cordoned, host_ports, restart_count, created_at, updated_at";

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialising plain data to JSON cannot fail")
}

fn parse<T: serde::de::DeserializeOwned>(
    what: impl Fn() -> String,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: what(),
        source,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Raw columns of a machine row, decoded (JSON, enums) after the rusqlite row borrow ends.
struct RawMachine {
    id: String,
    app: String,
    name: String,
    region: String,
    state: String,
    desired: String,
    instance_id: String,
    private_ip: String,
    config: String,
    image_ref: Option<String>,
    cordoned: bool,
    host_ports: String,
    restart_count: u32,
    created_at: String,
    updated_at: String,
}

fn raw_machine(r: &Row<'_>) -> rusqlite::Result<RawMachine> {
    Ok(RawMachine {
        id: r.get(0)?,
        app: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        state: r.get(4)?,
        desired: r.get(5)?,
        instance_id: r.get(6)?,
        private_ip: r.get(7)?,
        config: r.get(8)?,
        image_ref: r.get(9)?,
        cordoned: r.get(10)?,
        host_ports: r.get(11)?,
        restart_count: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
    })
}

fn decode_machine(raw: RawMachine) -> Result<MachineRecord, StoreError> {
    let id = raw.id;
    let what = |field: &str| format!("{field} of machine {id}");
    let state = MachineState::parse(&raw.state).ok_or_else(|| StoreError::Corrupt {
        what: what("state"),
        source: serde::de::Error::custom(format!("unknown state {:?}", raw.state)),
    })?;
    Ok(MachineRecord {
        state,
        desired: DesiredState::parse(&raw.desired).unwrap_or(DesiredState::Stopped),
        config: parse(|| what("config"), &raw.config)?,
        image_ref: raw
            .image_ref
            .as_deref()
            .map(|t| parse(|| what("image_ref"), t))
            .transpose()?,
        host_ports: parse(|| what("host_ports"), &raw.host_ports)?,
        cordoned: raw.cordoned,
        restart_count: raw.restart_count,
        app: raw.app,
        name: raw.name,
        region: raw.region,
        instance_id: raw.instance_id,
        private_ip: raw.private_ip,
        created_at: raw.created_at,
        updated_at: raw.updated_at,
        id,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<(String, MachineEvent)> {
    let request: Option<String> = r.get(6)?;
    Ok((
        r.get(0)?,
        MachineEvent {
            id: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            source: r.get(4)?,
            timestamp: r.get(5)?,
            request: request.and_then(|t| serde_json::from_str(&t).ok()),
        },
    ))
}

impl<'a> Tx<'a> {
    pub(crate) fn reading(tx: &'a Transaction<'a>, cache: &'a RefCell<&'a mut Cache>) -> Tx<'a> {
        Tx {
            tx,
            cache: CacheUse::Read(cache),
        }
    }

    pub(crate) fn writing(tx: &'a Transaction<'a>) -> Tx<'a> {
        Tx {
            tx,
            cache: CacheUse::Write(Default::default()),
        }
    }

    pub(crate) fn into_changes(self) -> Changes {
        match self.cache {
            CacheUse::Write(changes) => changes.into_inner(),
            CacheUse::Read(_) => Changes::default(),
        }
    }

    fn record_change(&self, f: impl FnOnce(&mut Changes)) {
        if let CacheUse::Write(changes) = &self.cache {
            f(&mut changes.borrow_mut());
        }
    }

    /// The underlying connection, for modules that add their own tables.
    pub fn conn(&self) -> &rusqlite::Connection {
        self.tx
    }

    // ---- apps ----

    /// Inserts a new app; [`StoreError::AppNameTaken`] when the name exists.
    pub fn insert_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO apps (name, id, org_slug, network, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![app.name, app.id, app.org_slug, app.network, app.status, app.created_at])
            .map_err(|e| if is_unique_violation(&e) { StoreError::AppNameTaken(app.name.clone()) } else { e.into() })?;
        Ok(())
    }

    pub fn app(&self, name: &str) -> Result<Option<AppRecord>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id, name, org_slug, network, status, created_at FROM apps WHERE name = ?1",
            )?
            .query_row([name], app_from_row)
            .optional()?)
    }

    /// Every app, optionally of one org, by name.
    pub fn apps(&self, org_slug: Option<&str>) -> Result<Vec<AppRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id, name, org_slug, network, status, created_at FROM apps
             WHERE ?1 IS NULL OR org_slug = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([org_slug], app_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an app, everything of its machines (rows, versions, events, leases), its deploy
    /// state (releases, images, group counts) and its event log, and revokes its tokens.
    pub fn delete_app(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_deploy_state(name)?;
        self.delete_volumes(name)?;
        self.forget_app_tokens_and_events(name)?;
        self.record_change(Changes::cleared);
        let sub = "(SELECT id FROM machines WHERE app = ?1)";
        for table in ["events", "machine_versions", "leases"] {
            self.tx.execute(
                &format!("DELETE FROM {table} WHERE machine_id IN {sub}"),
                [name],
            )?;
        }
        self.tx
            .execute("DELETE FROM machines WHERE app = ?1", [name])?;
        Ok(self
            .tx
            .execute("DELETE FROM apps WHERE name = ?1", [name])?
            > 0)
    }

    /// Machines of the app that are not destroyed.
    pub fn machine_count(&self, app: &str) -> Result<u64, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT COUNT(*) FROM machines WHERE app = ?1 AND state <> 'destroyed'",
            )?
            .query_row([app], |r| r.get(0))?)
    }

    // ---- machines ----

    /// Inserts a new machine and its first version.
    pub fn insert_machine(&self, m: &MachineRecord) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(&format!(
                "INSERT INTO machines ({MACHINE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ))?
            .execute(rusqlite::params_from_iter(machine_params(m)))
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::MachineNameTaken {
                        app: m.app.clone(),
                        name: m.name.clone(),
                    }
                } else {
                    e.into()
                }
            })?;
        self.record_change(|c| c.machine_written(&m.id, m.state == MachineState::Destroyed));
        self.add_version(&m.id, &m.instance_id, &m.config, &m.updated_at)
    }

    /// Overwrites every column of an existing machine (not its versions).
    pub fn put_machine(&self, m: &MachineRecord) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE machines SET app = ?2, name = ?3, region = ?4, state = ?5, desired_state = ?6,
                 instance_id = ?7, private_ip = ?8, config = ?9, image_ref = ?10, cordoned = ?11,
                 host_ports = ?12, restart_count = ?13, created_at = ?14, updated_at = ?15 WHERE id = ?1",
            )?
            .execute(rusqlite::params_from_iter(machine_params(m)))?;
        if m.state == MachineState::Destroyed {
            // In the same transaction: a destroyed machine never holds a volume.
            self.detach_volume_of(&m.id)?;
        }
        self.record_change(|c| c.machine_written(&m.id, m.state == MachineState::Destroyed));
        Ok(())
    }

    /// Records a new version of a machine's config.
    pub fn add_version(
        &self,
        machine_id: &str,
        instance_id: &str,
        config: &MachineConfig,
        created_at: &str,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO machine_versions (machine_id, instance_id, config, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![machine_id, instance_id, json(config), created_at])?;
        Ok(())
    }

    /// Replaces the config stored for an existing version (metadata writes keep the version).
    pub fn set_version_config(
        &self,
        machine_id: &str,
        instance_id: &str,
        config: &MachineConfig,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE machine_versions SET config = ?3 WHERE machine_id = ?1 AND instance_id = ?2")?
            .execute(params![machine_id, instance_id, json(config)])?;
        Ok(())
    }

    /// A machine of an app (destroyed ones included).
    pub fn machine(&self, app: &str, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let raw = self
            .tx
            .prepare_cached(&format!(
                "SELECT {MACHINE_COLUMNS} FROM machines WHERE app = ?1 AND id = ?2"
            ))?
            .query_row([app, id], raw_machine)
            .optional()?;
        raw.map(decode_machine).transpose()
    }

    /// A machine by id alone.
    pub fn machine_by_id(&self, id: &str) -> Result<Option<MachineRecord>, StoreError> {
        let raw = self
            .tx
            .prepare_cached(&format!(
                "SELECT {MACHINE_COLUMNS} FROM machines WHERE id = ?1"
            ))?
            .query_row([id], raw_machine)
            .optional()?;
        raw.map(decode_machine).transpose()
    }

    /// Machines of an app matching `filter`, oldest first.
    pub fn machines(
        &self,
        app: &str,
        filter: &MachineFilter,
    ) -> Result<Vec<MachineRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE app = ?1
             AND (?2 OR state <> 'destroyed') AND (?3 IS NULL OR region = ?3)
             ORDER BY created_at, id"
        ))?;
        let raws = stmt
            .query_map(
                params![app, filter.include_deleted, filter.region],
                raw_machine,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let m = decode_machine(raw)?;
            if filter.matches(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Machines of an app matching `filter`, oldest first, as list entries: record plus
    /// ready-made JSON (see [`ListedMachine`]). Served from the in-memory cache in read
    /// transactions; only the ids come from SQLite.
    pub fn listed_machines(
        &self,
        app: &str,
        filter: &MachineFilter,
    ) -> Result<Vec<Arc<ListedMachine>>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT id FROM machines WHERE app = ?1
             AND (?2 OR state <> 'destroyed') AND (?3 IS NULL OR region = ?3)
             ORDER BY created_at, id",
        )?;
        let ids = stmt
            .query_map(params![app, filter.include_deleted, filter.region], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let cached = match &self.cache {
                CacheUse::Read(cache) => cache.borrow().listed(&id),
                CacheUse::Write(_) => None,
            };
            let listed = match cached {
                Some(listed) => listed,
                None => {
                    let Some(listed) = self.listed_from_db(&id)? else {
                        continue;
                    };
                    if let CacheUse::Read(cache) = &self.cache {
                        cache.borrow_mut().fill_listed(listed.clone());
                    }
                    listed
                }
            };
            if filter.matches(&listed.record) {
                out.push(listed);
            }
        }
        Ok(out)
    }

    fn listed_from_db(&self, id: &str) -> Result<Option<Arc<ListedMachine>>, StoreError> {
        let Some(record) = self.machine_by_id(id)? else {
            return Ok(None);
        };
        let machine = record.to_api(self.events(id, LIST_EVENTS)?);
        let json = serde_json::to_vec(&machine).map_err(|source| StoreError::Corrupt {
            what: format!("machine {id}"),
            source,
        })?;
        Ok(Some(Arc::new(ListedMachine {
            record,
            json: json.into_boxed_slice(),
        })))
    }

    /// Every machine of every app that is not destroyed (agent start-up).
    pub fn live_machines(&self) -> Result<Vec<MachineRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE state <> 'destroyed' ORDER BY created_at, id"
        ))?;
        let raws = stmt
            .query_map([], raw_machine)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(decode_machine).collect()
    }

    /// Whether a machine that is not destroyed already has `name` in `app`.
    pub fn machine_name_in_use(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT 1 FROM machines WHERE app = ?1 AND name = ?2 AND state <> 'destroyed'",
            )?
            .query_row([app, name], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Versions of a machine, newest first.
    pub fn versions(&self, machine_id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT instance_id, config, created_at FROM machine_versions WHERE machine_id = ?1
             ORDER BY instance_id DESC",
        )?;
        let rows = stmt
            .query_map([machine_id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(instance_id, config, created_at)| {
                Ok(VersionRecord {
                    config: parse(
                        || format!("config of version {instance_id} of machine {machine_id}"),
                        &config,
                    )?,
                    instance_id,
                    created_at,
                })
            })
            .collect()
    }

    // ---- events ----

    /// Appends an event to a machine's history (pruning the oldest beyond the bound).
    pub fn add_event(&self, machine_id: &str, event: &MachineEvent) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO events (machine_id, id, kind, status, source, timestamp, request)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                machine_id,
                event.id,
                event.kind,
                event.status,
                event.source,
                event.timestamp,
                event.request.as_ref().map(json),
            ])?;
        self.tx
            .prepare_cached(
                "DELETE FROM events WHERE machine_id = ?1 AND seq <= (
                   SELECT seq FROM events WHERE machine_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![machine_id, MAX_EVENTS_PER_MACHINE])?;
        self.record_change(|c| c.event_appended(machine_id, event));
        Ok(())
    }

    /// The newest `limit` events of a machine, newest first.
    pub fn events(&self, machine_id: &str, limit: usize) -> Result<Vec<MachineEvent>, StoreError> {
        match &self.cache {
            CacheUse::Read(cache) if limit <= KEPT_EVENTS => {
                if let Some(events) = cache.borrow().events(machine_id, limit) {
                    return Ok(events);
                }
                let mut newest = self.events_from_db(machine_id, KEPT_EVENTS)?;
                cache.borrow_mut().fill_events(machine_id, newest.clone());
                newest.truncate(limit);
                Ok(newest)
            }
            _ => self.events_from_db(machine_id, limit),
        }
    }

    fn events_from_db(
        &self,
        machine_id: &str,
        limit: usize,
    ) -> Result<Vec<MachineEvent>, StoreError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT machine_id, id, kind, status, source, timestamp, request FROM events
             WHERE machine_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![machine_id, limit as i64], event_from_row)?;
        Ok(rows.map(|r| r.map(|(_, e)| e)).collect::<Result<_, _>>()?)
    }

    /// The newest `per_machine` events of each of `machine_ids`, newest first.
    ///
    /// Served from the in-memory cache where possible (see `cache.rs`); a miss is one
    /// indexed lookup (`events_machine`), much cheaper than a window-function query over every
    /// event of the app.
    pub fn recent_events<'m>(
        &self,
        machine_ids: impl IntoIterator<Item = &'m str>,
        per_machine: usize,
    ) -> Result<HashMap<String, Vec<MachineEvent>>, StoreError> {
        let mut out = HashMap::new();
        for id in machine_ids {
            out.insert(id.to_string(), self.events(id, per_machine)?);
        }
        Ok(out)
    }

    // ---- leases ----

    /// The lease row of a machine, expired or not (callers compare `expires_at` with now).
    pub fn lease(&self, machine_id: &str) -> Result<Option<Lease>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT nonce, expires_at, owner, description, version FROM leases WHERE machine_id = ?1",
            )?
            .query_row([machine_id], |r| {
                Ok(Lease {
                    nonce: r.get(0)?,
                    expires_at: r.get(1)?,
                    owner: r.get(2)?,
                    description: r.get(3)?,
                    version: r.get(4)?,
                })
            })
            .optional()?)
    }

    pub fn put_lease(&self, machine_id: &str, lease: &Lease) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO leases (machine_id, nonce, expires_at, owner, description, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![machine_id, lease.nonce, lease.expires_at, lease.owner, lease.description, lease.version])?;
        Ok(())
    }

    pub fn delete_lease(&self, machine_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .prepare_cached("DELETE FROM leases WHERE machine_id = ?1")?
            .execute([machine_id])?
            > 0)
    }

    // ---- meta ----

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
            .execute([key, value])?;
        Ok(())
    }
}

fn app_from_row(r: &Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        org_slug: r.get(2)?,
        network: r.get(3)?,
        status: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn machine_params(m: &MachineRecord) -> [Box<dyn rusqlite::ToSql + '_>; 15] {
    [
        Box::new(&m.id),
        Box::new(&m.app),
        Box::new(&m.name),
        Box::new(&m.region),
        Box::new(m.state.as_str()),
        Box::new(m.desired.as_str()),
        Box::new(&m.instance_id),
        Box::new(&m.private_ip),
        Box::new(json(&m.config)),
        Box::new(m.image_ref.as_ref().map(json)),
        Box::new(m.cordoned),
        Box::new(json(&m.host_ports)),
        Box::new(m.restart_count),
        Box::new(&m.created_at),
        Box::new(&m.updated_at),
    ]
}
