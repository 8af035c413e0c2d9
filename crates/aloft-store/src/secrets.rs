//! App secrets (`aloft secrets`): one row per app and name with the value encrypted by the
//! agent (ciphertext and nonce; the key never reaches the database), a keyed digest of the
//! value, and whether the app's machines were restarted with it (`deployed`) or not yet
//! (`staged`). A secret unset with `stage` stays as an `unset` row (no value) until the next
//! deploy of the secrets, so that deploy knows there is something to roll out. The store keeps
//! what it is given: the agent encrypts, decrypts and checks.

use rusqlite::{params, Row};

use crate::{StoreError, Tx};

/// [`SecretRow::status`]: machines were restarted with this value.
pub const SECRET_DEPLOYED: &str = "deployed";
/// [`SecretRow::status`]: set with `stage`; machines get it at their next start.
pub const SECRET_STAGED: &str = "staged";
/// [`SecretRow::status`]: unset with `stage` (no value; not given to machines).
pub const SECRET_UNSET: &str = "unset";

/// One secret row.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub app: String,
    pub name: String,
    /// The value sealed by the agent (AEAD ciphertext with its tag); empty for `unset` rows.
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub digest: String,
    /// [`SECRET_DEPLOYED`], [`SECRET_STAGED`] or [`SECRET_UNSET`].
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// Names and states only: a row's bytes are ciphertext, but they stay out of logs all the same.
impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("app", &self.app)
            .field("name", &self.name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "app, name, ciphertext, nonce, digest, status, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        app: r.get(0)?,
        name: r.get(1)?,
        ciphertext: r.get(2)?,
        nonce: r.get(3)?,
        digest: r.get(4)?,
        status: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

impl Tx<'_> {
    /// Every secret row of `app` (`unset` ones included), by name.
    pub fn secrets(&self, app: &str) -> Result<Vec<SecretRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM secrets WHERE app = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([app], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes a secret row, replacing the row of the same app and name (keeping its
    /// `created_at`).
    pub fn put_secret(&self, s: &SecretRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO secrets ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (app, name) DO UPDATE SET ciphertext = excluded.ciphertext,
                   nonce = excluded.nonce, digest = excluded.digest, status = excluded.status,
                   updated_at = excluded.updated_at"
            ))?
            .execute(params![
                s.app,
                s.name,
                s.ciphertext,
                s.nonce,
                s.digest,
                s.status,
                s.created_at,
                s.updated_at
            ])?;
        Ok(())
    }

    /// Deletes the secret `name` of `app`; whether a row went.
    pub fn delete_secret(&self, app: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM secrets WHERE app = ?1 AND name = ?2")?
            .execute([app, name])?
            > 0)
    }

    /// Marks every staged secret of `app` deployed and forgets its `unset` rows; whether
    /// anything was staged.
    pub fn deploy_secrets(&self, app: &str) -> Result<bool, StoreError> {
        let forgotten = self
            .conn()
            .prepare_cached("DELETE FROM secrets WHERE app = ?1 AND status = ?2")?
            .execute(params![app, SECRET_UNSET])?;
        let marked = self
            .conn()
            .prepare_cached("UPDATE secrets SET status = ?2 WHERE app = ?1 AND status = ?3")?
            .execute(params![app, SECRET_DEPLOYED, SECRET_STAGED])?;
        Ok(forgotten + marked > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppRecord, Store};

    fn row(name: &str, status: &str, at: &str) -> SecretRow {
        SecretRow {
            app: "web".into(),
            name: name.into(),
            ciphertext: vec![1, 2, 3],
            nonce: vec![0; 12],
            digest: "00ff".into(),
            status: status.into(),
            created_at: at.into(),
            updated_at: at.into(),
        }
    }

    #[test]
    fn put_replaces_keeping_created_at_and_deploy_settles_staged_rows() {
        let store = Store::open_in_memory().unwrap();
        store
            .write(|tx| {
                tx.insert_app(&AppRecord {
                    id: "a1".into(),
                    name: "web".into(),
                    org_slug: "personal".into(),
                    network: "default".into(),
                    status: "pending".into(),
                    created_at: "t0".into(),
                })?;
                tx.put_secret(&row("A", SECRET_DEPLOYED, "t1"))?;
                tx.put_secret(&row("A", SECRET_STAGED, "t2"))?;
                tx.put_secret(&row("B", SECRET_UNSET, "t2"))
            })
            .unwrap();
        let rows = store.read(|tx| tx.secrets("web")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].created_at.as_str(), rows[0].updated_at.as_str()),
            ("t1", "t2")
        );
        assert_eq!(rows[0].status, SECRET_STAGED);
        assert!(store.write(|tx| tx.deploy_secrets("web")).unwrap());
        let rows = store.read(|tx| tx.secrets("web")).unwrap();
        assert_eq!(rows.len(), 1, "the unset row is forgotten");
        assert_eq!(rows[0].status, SECRET_DEPLOYED);
        assert!(!store.write(|tx| tx.deploy_secrets("web")).unwrap());
        assert!(store.write(|tx| tx.delete_app("web")).unwrap());
        assert!(store.read(|tx| tx.secrets("web")).unwrap().is_empty());
    }
}
