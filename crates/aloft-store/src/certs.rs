//! Certificates of apps' custom hostnames (`aloft certs`): one row per hostname (unique across
//! apps), with where it came from (`self-signed`, `files`, `acme`), its status, the PEM chain and
//! key when there is one, and its validity. The agent checks hostnames and PEMs before writing;
//! the store keeps them as given.

use rusqlite::{params, OptionalExtension, Row};

use crate::{StoreError, Tx};

/// One certificate row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRow {
    /// Lowercase, no trailing dot; unique.
    pub hostname: String,
    pub app: String,
    /// `self-signed`, `files` or `acme`.
    pub source: String,
    /// `ready`, or for ACME `awaiting issuance` / `failed: …`.
    pub status: String,
    pub chain_pem: Option<String>,
    pub key_pem: Option<String>,
    /// RFC 3339.
    pub not_before: Option<String>,
    /// RFC 3339.
    pub not_after: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "hostname, app, source, status, chain_pem, key_pem, not_before, not_after, \
                       created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<CertificateRow> {
    Ok(CertificateRow {
        hostname: r.get(0)?,
        app: r.get(1)?,
        source: r.get(2)?,
        status: r.get(3)?,
        chain_pem: r.get(4)?,
        key_pem: r.get(5)?,
        not_before: r.get(6)?,
        not_after: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

impl Tx<'_> {
    /// Writes a certificate row, replacing the row of the same hostname (keeping its
    /// `created_at`). The caller checks that the hostname is not another app's.
    pub fn put_certificate(&self, c: &CertificateRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO certificates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (hostname) DO UPDATE SET app = excluded.app, source = excluded.source,
                   status = excluded.status, chain_pem = excluded.chain_pem,
                   key_pem = excluded.key_pem, not_before = excluded.not_before,
                   not_after = excluded.not_after, updated_at = excluded.updated_at"
            ))?
            .execute(params![
                c.hostname,
                c.app,
                c.source,
                c.status,
                c.chain_pem,
                c.key_pem,
                c.not_before,
                c.not_after,
                c.created_at,
                c.updated_at
            ])?;
        Ok(())
    }

    /// The certificate of `hostname`, whichever app has it.
    pub fn certificate(&self, hostname: &str) -> Result<Option<CertificateRow>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE hostname = ?1"
            ))?
            .query_row([hostname], from_row)
            .optional()?)
    }

    /// The certificates of `app` (every app's when `None`), by hostname.
    pub fn certificates(&self, app: Option<&str>) -> Result<Vec<CertificateRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE ?1 IS NULL OR app = ?1 ORDER BY hostname"
        ))?;
        let rows = stmt.query_map([app], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes the certificate of `hostname` if `app` has it; whether a row went.
    pub fn delete_certificate(&self, app: &str, hostname: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM certificates WHERE app = ?1 AND hostname = ?2")?
            .execute([app, hostname])?
            > 0)
    }
}
