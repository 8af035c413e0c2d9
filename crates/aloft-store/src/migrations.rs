//! Schema migrations, applied in order at open and tracked with `PRAGMA user_version`.
//!
//! To change the schema, append a [`Migration`] to [`MIGRATIONS`] with the next version number
//! (never edit one that has shipped). Each migration runs in one transaction together with the
//! `user_version` bump, so a crash leaves the database at the previous or the next version, never
//! in between. Version 2 added the deploy state (releases, their events, images, group counts),
//! version 3 the OCI images of each app (`oci_images`: app → manifest digest), version 4 the
//! certificates of apps' custom hostnames (`certificates`: hostname → app, source, PEMs,
//! validity), version 5 the apps' IP addresses (`ips`), version 6 the API tokens (`api_tokens`: id → name,
//! kind, app, HMAC of the secret, times) and the apps' event log (`app_events`), version 7 the
//! apps' secrets (`secrets`: encrypted values, keyed digests, deployed or staged), version 8 the
//! apps' volumes (`volumes`: name, region, size, state, the machine attached) and their
//! snapshots (`volume_snapshots`).

use rusqlite::Connection;

use crate::StoreError;

/// One schema step.
#[derive(Debug)]
pub struct Migration {
    /// The `user_version` after this migration; consecutive from 1.
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "apps, machines, machine versions, events, leases, agent meta",
        sql: r#"
CREATE TABLE apps (
    name        TEXT PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    org_slug    TEXT NOT NULL,
    network     TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE machines (
    id            TEXT PRIMARY KEY,
    app           TEXT NOT NULL REFERENCES apps(name),
    name          TEXT NOT NULL,
    region        TEXT NOT NULL,
    state         TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    private_ip    TEXT NOT NULL DEFAULT '',
    config        TEXT NOT NULL,
    image_ref     TEXT,
    cordoned      INTEGER NOT NULL DEFAULT 0,
    host_ports    TEXT NOT NULL DEFAULT '{}',
    restart_count INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX machines_app ON machines(app, created_at);
-- Names are unique per app among machines that are not destroyed.
CREATE UNIQUE INDEX machines_app_name ON machines(app, name) WHERE state <> 'destroyed';
CREATE TABLE machine_versions (
    machine_id  TEXT NOT NULL REFERENCES machines(id),
    instance_id TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (machine_id, instance_id)
);
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    machine_id  TEXT NOT NULL REFERENCES machines(id),
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    request     TEXT
);
CREATE INDEX events_machine ON events(machine_id, seq);
CREATE TABLE leases (
    machine_id  TEXT PRIMARY KEY REFERENCES machines(id),
    nonce       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    owner       TEXT NOT NULL,
    description TEXT NOT NULL,
    version     TEXT NOT NULL
);
-- Small agent-wide facts (boot counter, ...): key/value.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        description: "releases, release events, images, per-group desired counts",
        sql: r#"
CREATE TABLE releases (
    app         TEXT NOT NULL REFERENCES apps(name),
    version     INTEGER NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE INDEX releases_status ON releases(status);
CREATE TABLE release_events (
    app         TEXT NOT NULL,
    version     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    at          TEXT NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (app, version, seq),
    FOREIGN KEY (app, version) REFERENCES releases(app, version)
);
CREATE TABLE images (
    app         TEXT NOT NULL REFERENCES apps(name),
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app, digest)
);
CREATE TABLE group_counts (
    app         TEXT NOT NULL REFERENCES apps(name),
    grp         TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (app, grp)
);
"#,
    },
    Migration {
        version: 3,
        description: "OCI images uploaded to each app (manifest digests)",
        sql: r#"
CREATE TABLE oci_images (
    app         TEXT NOT NULL REFERENCES apps(name),
    digest      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (app, digest)
);
"#,
    },
    Migration {
        version: 4,
        description: "TLS certificates of apps' custom hostnames",
        sql: r#"
CREATE TABLE certificates (
    hostname    TEXT PRIMARY KEY,
    app         TEXT NOT NULL REFERENCES apps(name),
    source      TEXT NOT NULL,
    status      TEXT NOT NULL,
    chain_pem   TEXT,
    key_pem     TEXT,
    not_before  TEXT,
    not_after   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX certificates_app ON certificates (app);
"#,
    },
    Migration {
        version: 5,
        description: "IP addresses of each app (public and Flycast)",
        sql: r#"
CREATE TABLE ips (
    app         TEXT NOT NULL REFERENCES apps(name),
    address     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    region      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    -- the runtime's name for a Flycast address it holds on the bridge ('' for public ones)
    net_key     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, address)
);
"#,
    },
    Migration {
        version: 6,
        description: "API tokens (HMAC of the secret only) and each app's event log",
        sql: r#"
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    -- the app a deploy or read-only token is bound to
    app          TEXT,
    -- HMAC-SHA256 of the secret under the agent's key (never the secret)
    secret_mac   BLOB NOT NULL,
    -- Unix seconds
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE TABLE app_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    app     TEXT NOT NULL,
    -- Unix seconds
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX app_events_app ON app_events (app, id);
"#,
    },
    Migration {
        version: 7,
        description: "app secrets (encrypted values, digests, deployed or staged)",
        sql: r#"
CREATE TABLE secrets (
    app         TEXT NOT NULL REFERENCES apps(name),
    name        TEXT NOT NULL,
    -- sealed by the agent with a key kept outside this database
    ciphertext  BLOB NOT NULL,
    nonce       BLOB NOT NULL,
    digest      TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (app, name)
);
"#,
    },
    Migration {
        version: 8,
        description: "volumes (attached to at most one machine) and their snapshots",
        sql: r#"
CREATE TABLE volumes (
    id                  TEXT PRIMARY KEY,
    app                 TEXT NOT NULL REFERENCES apps(name),
    name                TEXT NOT NULL,
    region              TEXT NOT NULL,
    size_gb             INTEGER NOT NULL,
    state               TEXT NOT NULL,
    attached_machine_id TEXT,
    encrypted           INTEGER NOT NULL,
    snapshot_retention  INTEGER NOT NULL,
    auto_backup_enabled INTEGER NOT NULL,
    created_at          TEXT NOT NULL
);
CREATE INDEX volumes_app ON volumes (app, created_at);
-- A machine has at most one volume.
CREATE UNIQUE INDEX volumes_attached ON volumes (attached_machine_id)
    WHERE attached_machine_id IS NOT NULL;
CREATE TABLE volume_snapshots (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL,
    app         TEXT NOT NULL REFERENCES apps(name),
    size        INTEGER NOT NULL,
    volume_size INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX volume_snapshots_volume ON volume_snapshots (volume_id, created_at);
"#,
    },
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings `conn` up to [`latest_version`]. Refuses a database written by a newer build.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::TooNew {
            found: current,
            supported: latest,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)
            .map_err(|source| StoreError::Migration {
                version: m.version,
                description: m.description,
                source,
            })?;
        // PRAGMA does not take bound parameters; the version is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration {:?}", m.description);
        }
    }

    #[test]
    fn migrate_is_idempotent_and_refuses_newer_databases() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 999, .. }),
            "{err}"
        );
    }
}
