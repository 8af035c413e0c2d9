//! Deploy state: releases (record, status, the frozen plan and spec as JSON), their event logs
//! (a `seq` per release), uploaded images and the per-group desired machine counts of an app.
//!
//! The store does not interpret a release: the agent's deploy module owns the JSON body (an
//! `aloft_deploy::stored::StoredRelease`, the persisted format, converted to and from the wire
//! `Release`) and keeps the `status` column equal to the body's status, so the
//! store can find unfinished releases after a restart without parsing every body.

use std::collections::BTreeMap;

use aloft_api::metadata::SCALE_VERSION_BASE;
use rusqlite::{params, OptionalExtension, Row};

use crate::{StoreError, Tx};

/// One release row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRow {
    pub app: String,
    /// 1, 2, 3… per app.
    pub version: u64,
    /// ULID.
    pub id: String,
    /// `pending`, `running`, `complete`, `failed`, `superseded` (`interrupted` in rows of older
    /// agents).
    pub status: String,
    /// The whole release as JSON (`aloft_deploy::stored::StoredRelease`).
    pub body: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Statuses of releases that are not finished (resumed at agent start).
pub const UNFINISHED_STATUSES: [&str; 2] = ["pending", "running"];
/// The status of a release that completed.
const COMPLETE_STATUS: &str = "complete";

/// One line of a release's event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseEventRow {
    pub seq: u64,
    /// RFC 3339.
    pub at: String,
    /// The event as JSON.
    pub event: String,
}

/// An uploaded image of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRow {
    pub app: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// The unpacked directory on the agent's host.
    pub path: String,
    pub created_at: String,
}

/// An OCI image (by manifest digest) uploaded to an app; it runs only in that app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciImageRow {
    pub app: String,
    /// The manifest's `sha256:<hex>`.
    pub digest: String,
    /// Bytes of its blobs (manifest, config, layers).
    pub size: u64,
    pub created_at: String,
}

fn oci_image_from_row(r: &Row<'_>) -> rusqlite::Result<OciImageRow> {
    Ok(OciImageRow {
        app: r.get(0)?,
        digest: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        created_at: r.get(3)?,
    })
}

const RELEASE_COLUMNS: &str = "app, version, id, status, body, created_at, updated_at";

fn release_from_row(r: &Row<'_>) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        app: r.get(0)?,
        version: r.get::<_, i64>(1)? as u64,
        id: r.get(2)?,
        status: r.get(3)?,
        body: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

impl Tx<'_> {
    // ---- releases ----

    /// The version the next release of `app` gets (1 for the first).
    /// The next deploy version of `app`: 1, 2, 3… (scale operations do not take one).
    pub fn next_release_version(&self, app: &str) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn()
            .prepare_cached("SELECT MAX(version) FROM releases WHERE app = ?1 AND version < ?2")?
            .query_row(params![app, SCALE_VERSION_BASE as i64], |r| r.get(0))?;
        Ok(max.unwrap_or(0) as u64 + 1)
    }

    /// The next version of a scale operation of `app`: [`SCALE_VERSION_BASE`] + 1, + 2…
    pub fn next_scale_version(&self, app: &str) -> Result<u64, StoreError> {
        let max: Option<i64> = self
            .conn()
            .prepare_cached("SELECT MAX(version) FROM releases WHERE app = ?1 AND version > ?2")?
            .query_row(params![app, SCALE_VERSION_BASE as i64], |r| r.get(0))?;
        Ok(max.map_or(SCALE_VERSION_BASE, |v| v as u64) + 1)
    }

    pub fn insert_release(&self, r: &ReleaseRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))?
            .execute(params![
                r.app,
                r.version as i64,
                r.id,
                r.status,
                r.body,
                r.created_at,
                r.updated_at
            ])?;
        Ok(())
    }

    /// Overwrites status, body and `updated_at` of an existing release.
    pub fn put_release(&self, r: &ReleaseRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE releases SET status = ?3, body = ?4, updated_at = ?5
                 WHERE app = ?1 AND version = ?2",
            )?
            .execute(params![
                r.app,
                r.version as i64,
                r.status,
                r.body,
                r.updated_at
            ])?;
        Ok(())
    }

    pub fn release(&self, app: &str, version: u64) -> Result<Option<ReleaseRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND version = ?2"
            ))?
            .query_row(params![app, version as i64], release_from_row)
            .optional()?)
    }

    /// Releases of an app, newest first.
    pub fn releases(&self, app: &str) -> Result<Vec<ReleaseRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 ORDER BY version DESC"
        ))?;
        let rows = stmt.query_map([app], release_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether one of `app`'s deploys (not a scale operation) completed: the app is deployed.
    pub fn has_complete_deploy(&self, app: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM releases WHERE app = ?1 AND version < ?2 AND status = ?3)",
            )?
            .query_row(
                params![app, SCALE_VERSION_BASE as i64, COMPLETE_STATUS],
                |r| r.get(0),
            )?)
    }

    /// Releases of every app whose status is pending or running, oldest first.
    pub fn unfinished_releases(&self) -> Result<Vec<ReleaseRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE status IN (?1, ?2) ORDER BY app, version"
        ))?;
        let rows = stmt.query_map(
            params![UNFINISHED_STATUSES[0], UNFINISHED_STATUSES[1]],
            release_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends an event to a release's log and returns its `seq` (1, 2, 3… per release).
    pub fn add_release_event(
        &self,
        app: &str,
        version: u64,
        at: &str,
        event: &str,
    ) -> Result<u64, StoreError> {
        let last: Option<i64> = self
            .conn()
            .prepare_cached("SELECT MAX(seq) FROM release_events WHERE app = ?1 AND version = ?2")?
            .query_row(params![app, version as i64], |r| r.get(0))?;
        let seq = last.unwrap_or(0) + 1;
        self.conn()
            .prepare_cached(
                "INSERT INTO release_events (app, version, seq, at, event) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![app, version as i64, seq, at, event])?;
        Ok(seq as u64)
    }

    /// Events of a release with `seq > after`, oldest first, at most `limit`.
    pub fn release_events(
        &self,
        app: &str,
        version: u64,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ReleaseEventRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, at, event FROM release_events WHERE app = ?1 AND version = ?2 AND seq > ?3
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![app, version as i64, after as i64, limit as i64],
            |r| {
                Ok(ReleaseEventRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    at: r.get(1)?,
                    event: r.get(2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- images ----

    /// Records an uploaded image (replacing a row with the same app and digest).
    pub fn put_image(&self, i: &ImageRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO images (app, digest, size, path, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                i.app,
                i.digest,
                i.size as i64,
                i.path,
                i.created_at
            ])?;
        Ok(())
    }

    pub fn image(&self, app: &str, digest: &str) -> Result<Option<ImageRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT app, digest, size, path, created_at FROM images WHERE app = ?1 AND digest = ?2",
            )?
            .query_row([app, digest], |r| {
                Ok(ImageRow {
                    app: r.get(0)?,
                    digest: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    path: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })
            .optional()?)
    }

    // ---- OCI images ----

    /// Records an OCI image of an app (keeping the first `created_at` when it is there).
    pub fn put_oci_image(&self, i: &OciImageRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO oci_images (app, digest, size, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, digest) DO UPDATE SET size = excluded.size",
            )?
            .execute(params![i.app, i.digest, i.size as i64, i.created_at])?;
        Ok(())
    }

    pub fn oci_image(&self, app: &str, digest: &str) -> Result<Option<OciImageRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT app, digest, size, created_at FROM oci_images WHERE app = ?1 AND digest = ?2",
            )?
            .query_row([app, digest], oci_image_from_row)
            .optional()?)
    }

    /// The OCI images of an app (every app's when `None`), newest first.
    pub fn oci_images(&self, app: Option<&str>) -> Result<Vec<OciImageRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT app, digest, size, created_at FROM oci_images
             WHERE ?1 IS NULL OR app = ?1 ORDER BY created_at DESC, app, digest",
        )?;
        let rows = stmt.query_map([app], oci_image_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets an OCI image of an app (after garbage collection removed it).
    pub fn delete_oci_image(&self, app: &str, digest: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM oci_images WHERE app = ?1 AND digest = ?2")?
            .execute([app, digest])?
            > 0)
    }

    /// `config.image` of every machine that is not destroyed (what garbage collection keeps).
    pub fn live_machine_images(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT DISTINCT json_extract(config, '$.image') FROM machines
             WHERE state <> 'destroyed' AND json_extract(config, '$.image') IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- per-group desired counts ----

    /// The remembered desired machine count of each process group of an app.
    pub fn group_counts(&self, app: &str) -> Result<BTreeMap<String, u32>, StoreError> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT grp, count FROM group_counts WHERE app = ?1 ORDER BY grp")?;
        let rows = stmt.query_map([app], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_group_count(&self, app: &str, group: &str, count: u32) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO group_counts (app, grp, count) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![app, group, count])?;
        Ok(())
    }

    /// Forgets the count of a group (e.g. removed from the config); whether one was remembered.
    pub fn delete_group_count(&self, app: &str, group: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM group_counts WHERE app = ?1 AND grp = ?2")?
            .execute([app, group])?
            > 0)
    }

    /// Deletes the releases, release events, image rows, group counts and IP addresses of an app (part of
    /// deleting the app; image directories on disk are shared by digest and left alone).
    pub(crate) fn delete_deploy_state(&self, app: &str) -> Result<(), StoreError> {
        for table in [
            "release_events",
            "releases",
            "images",
            "oci_images",
            "group_counts",
            "ips",
            "certificates",
            "secrets",
        ] {
            self.conn()
                .execute(&format!("DELETE FROM {table} WHERE app = ?1"), [app])?;
        }
        Ok(())
    }
}
