//! The apps' IP addresses (`ips` table): public ones the proxy serves them on (the host's
//! shared address may belong to many apps) and Flycast (private IPv6) ones. The network side of
//! a Flycast address (on the bridge, filtered by organization) is the runtime's, which knows it
//! by its `net_key`; this table is what the agent answers `aloft ips` from and what it gives
//! back to the runtime after a restart.

use aloft_api::network::{IpAddress, IpKind};
use rusqlite::{params, Row};

use crate::{StoreError, Tx};

const COLUMNS: &str = "app, address, kind, region, created_at, net_key";

/// One row of the `ips` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpRow {
    pub app: String,
    pub ip: IpAddress,
    /// The runtime's name for a Flycast address; empty for public ones.
    pub net_key: String,
}

fn kind_from_str(s: &str) -> Option<IpKind> {
    Some(match s {
        "v4" => IpKind::V4,
        "shared_v4" => IpKind::SharedV4,
        "v6" => IpKind::V6,
        "private_v6" => IpKind::PrivateV6,
        _ => return None,
    })
}

fn ip_from_row(r: &Row<'_>) -> rusqlite::Result<IpRow> {
    let kind: String = r.get(2)?;
    let kind = kind_from_str(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown IP kind {kind:?}").into(),
        )
    })?;
    Ok(IpRow {
        app: r.get(0)?,
        ip: IpAddress {
            address: r.get(1)?,
            kind,
            region: r.get(3)?,
            created_at: r.get(4)?,
        },
        net_key: r.get(5)?,
    })
}

impl Tx<'_> {
    /// Records an address of an app.
    pub fn insert_ip(&self, row: &IpRow) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO ips ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?
            .execute(params![
                row.app,
                row.ip.address,
                row.ip.kind.to_string(),
                row.ip.region,
                row.ip.created_at,
                row.net_key
            ])?;
        Ok(())
    }

    /// The app's addresses, oldest first.
    pub fn ips(&self, app: &str) -> Result<Vec<IpRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ips WHERE app = ?1 ORDER BY created_at, address"
        ))?;
        let rows = stmt.query_map([app], ip_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every app's addresses, by app, oldest first.
    pub fn all_ips(&self) -> Result<Vec<IpRow>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ips ORDER BY app, created_at, address"
        ))?;
        let rows = stmt.query_map([], ip_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets an address of the app; whether it was the app's.
    pub fn delete_ip(&self, app: &str, address: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("DELETE FROM ips WHERE app = ?1 AND address = ?2")?
            .execute([app, address])?
            > 0)
    }
}
