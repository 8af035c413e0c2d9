//! The apps' volumes (`volumes` table) and their snapshots (`volume_snapshots`): what each
//! volume is (name, region, size, settings), its state, and the one machine it is attached to.
//!
//! Attachment lives on the volume row (`attached_machine_id`, unique among rows: a machine has
//! at most one volume) and changes only in the transaction that changes the machine:
//! [`Tx::attach_volume`] inside a machine's creation, and [`Tx::put_machine`] of a destroyed
//! machine detaches it. So a crash never leaves a volume attached to two machines, nor to a
//! machine that is gone.

use rusqlite::{params, OptionalExtension, Row};

use crate::{StoreError, Tx};

/// One volume row. States are `aloft_api::volumes::STATE_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeRow {
    /// `vol_<random>`.
    pub id: String,
    pub app: String,
    pub name: String,
    pub region: String,
    pub size_gb: u32,
    pub state: String,
    pub attached_machine_id: Option<String>,
    pub encrypted: bool,
    pub snapshot_retention: u32,
    pub auto_backup_enabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// One snapshot row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRow {
    /// `vs_<random>`.
    pub id: String,
    pub volume_id: String,
    pub app: String,
    /// Bytes the copy takes.
    pub size: u64,
    /// The volume's size when it was taken, GB.
    pub volume_size: u32,
    pub created_at: String,
}

const COLUMNS: &str = "id, app, name, region, size_gb, state, attached_machine_id, encrypted, \
                       snapshot_retention, auto_backup_enabled, created_at";
const SNAPSHOT_COLUMNS: &str = "id, volume_id, app, size, volume_size, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<VolumeRow> {
    Ok(VolumeRow {
        id: r.get(0)?,
        app: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        size_gb: r.get(4)?,
        state: r.get(5)?,
        attached_machine_id: r.get(6)?,
        encrypted: r.get(7)?,
        snapshot_retention: r.get(8)?,
        auto_backup_enabled: r.get(9)?,
        created_at: r.get(10)?,
    })
}

fn snapshot_from_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: r.get(0)?,
        volume_id: r.get(1)?,
        app: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        volume_size: r.get(4)?,
        created_at: r.get(5)?,
    })
}

impl Tx<'_> {
    /// Writes a volume row (insert or replace). Attachment goes through [`Tx::attach_volume`].
    pub fn put_volume(&self, v: &VolumeRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO volumes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, region = excluded.region,
                   size_gb = excluded.size_gb, state = excluded.state,
                   encrypted = excluded.encrypted, snapshot_retention = excluded.snapshot_retention,
                   auto_backup_enabled = excluded.auto_backup_enabled"
            ))?
            .execute(params![
                v.id,
                v.app,
                v.name,
                v.region,
                v.size_gb,
                v.state,
                v.attached_machine_id,
                v.encrypted,
                v.snapshot_retention,
                v.auto_backup_enabled,
                v.created_at
            ])?;
        Ok(())
    }

    /// Volume `id` of `app`, destroyed ones included.
    pub fn volume(&self, app: &str, id: &str) -> Result<Option<VolumeRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM volumes WHERE app = ?1 AND id = ?2"
            ))?
            .query_row([app, id], from_row)
            .optional()?)
    }

    /// The volumes of `app` (every app's when `None`) that are not destroyed, oldest first.
    pub fn volumes(&self, app: Option<&str>) -> Result<Vec<VolumeRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM volumes WHERE (?1 IS NULL OR app = ?1) AND state <> 'destroyed'
             ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([app], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Attaches volume `id` to `machine_id` if it is usable and attached to no machine; else the
    /// machine that holds it (`Some("")` when the volume is not usable: destroyed or missing).
    pub fn attach_volume(&self, id: &str, machine_id: &str) -> Result<Option<String>, StoreError> {
        let changed = self
            .conn()
            .prepare_cached(
                "UPDATE volumes SET attached_machine_id = ?2
                 WHERE id = ?1 AND state = 'created' AND attached_machine_id IS NULL",
            )?
            .execute([id, machine_id])?;
        if changed > 0 {
            return Ok(None);
        }
        let holder: Option<Option<String>> = self
            .conn()
            .prepare_cached(
                "SELECT attached_machine_id FROM volumes WHERE id = ?1 AND state = 'created'",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?;
        Ok(Some(holder.flatten().unwrap_or_default()))
    }

    /// Detaches whatever volume `machine_id` has (the machine is destroyed).
    pub(crate) fn detach_volume_of(&self, machine_id: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE volumes SET attached_machine_id = NULL WHERE attached_machine_id = ?1",
            )?
            .execute([machine_id])?;
        Ok(())
    }

    /// Removes every volume and snapshot row of `app` (the app is deleted).
    pub(crate) fn delete_volumes(&self, app: &str) -> Result<(), StoreError> {
        for table in ["volume_snapshots", "volumes"] {
            self.conn()
                .execute(&format!("DELETE FROM {table} WHERE app = ?1"), [app])?;
        }
        Ok(())
    }

    pub fn put_snapshot(&self, s: &SnapshotRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO volume_snapshots ({SNAPSHOT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?
            .execute(params![
                s.id,
                s.volume_id,
                s.app,
                s.size as i64,
                s.volume_size,
                s.created_at
            ])?;
        Ok(())
    }

    /// The snapshots of volume `volume_id` of `app`, oldest first.
    pub fn snapshots(&self, app: &str, volume_id: &str) -> Result<Vec<SnapshotRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM volume_snapshots WHERE app = ?1 AND volume_id = ?2
             ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([app, volume_id], snapshot_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets snapshot `id` of `app` (its copy is the runtime's to delete).
    pub fn delete_snapshot(&self, app: &str, id: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM volume_snapshots WHERE app = ?1 AND id = ?2")?
            .execute([app, id])?;
        Ok(())
    }

    /// Snapshot `id` of any volume of `app`.
    pub fn snapshot(&self, app: &str, id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {SNAPSHOT_COLUMNS} FROM volume_snapshots WHERE app = ?1 AND id = ?2"
            ))?
            .query_row([app, id], snapshot_from_row)
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppRecord, Durability, Store};

    fn volume(id: &str) -> VolumeRow {
        VolumeRow {
            id: id.into(),
            app: "a".into(),
            name: "data".into(),
            region: "local".into(),
            size_gb: 1,
            state: "created".into(),
            attached_machine_id: None,
            encrypted: true,
            snapshot_retention: 5,
            auto_backup_enabled: true,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_volume_is_attached_to_one_machine_and_a_machine_has_one_volume() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), Durability::default()).unwrap();
        store
            .write(|tx| {
                tx.insert_app(&AppRecord {
                    name: "a".into(),
                    id: "a1".into(),
                    org_slug: "personal".into(),
                    network: "default".into(),
                    status: "pending".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                })?;
                tx.put_volume(&volume("vol_1"))?;
                tx.put_volume(&volume("vol_2"))
            })
            .unwrap();
        let attach = |v: &str, m: &str| store.write(|tx| tx.attach_volume(v, m)).unwrap();
        assert_eq!(attach("vol_1", "m1"), None);
        assert_eq!(attach("vol_1", "m2"), Some("m1".into()), "held by m1");
        assert!(
            store.write(|tx| tx.attach_volume("vol_2", "m1")).is_err(),
            "m1 has a volume already"
        );
        assert_eq!(attach("vol_missing", "m3"), Some(String::new()));
        store.write(|tx| tx.detach_volume_of("m1")).unwrap();
        assert_eq!(attach("vol_1", "m2"), None);
        let listed = store.read(|tx| tx.volumes(Some("a"))).unwrap();
        assert_eq!(listed[0].attached_machine_id.as_deref(), Some("m2"));
    }
}
