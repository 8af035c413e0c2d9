//! The apps' IP addresses (`ips` table): public ones the proxy serves them on and Flycast
//! (private IPv6) ones. The network side of a Flycast address (on the bridge, filtered by
//! organization) is the runtime's; this table is what the agent answers `aloft ips` from and
//! what it gives back to the runtime after a restart.

use aloft_api::network::{IpAddress, IpKind};
use rusqlite::{params, OptionalExtension, Row};

use crate::{StoreError, Tx};

const COLUMNS: &str = "address, app, kind, region, created_at";

fn kind_from_str(s: &str) -> Option<IpKind> {
    Some(match s {
        "v4" => IpKind::V4,
        "shared_v4" => IpKind::SharedV4,
        "v6" => IpKind::V6,
        "private_v6" => IpKind::PrivateV6,
        _ => return None,
    })
}

/// `(app, address)` of a row.
fn ip_from_row(r: &Row<'_>) -> rusqlite::Result<(String, IpAddress)> {
    let kind: String = r.get(2)?;
    let kind = kind_from_str(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown IP kind {kind:?}").into(),
        )
    })?;
    Ok((
        r.get(1)?,
        IpAddress {
            address: r.get(0)?,
            kind,
            region: r.get(3)?,
            created_at: r.get(4)?,
        },
    ))
}

impl Tx<'_> {
    /// Records an address of the app (the address is unique across apps).
    pub fn insert_ip(&self, app: &str, ip: &IpAddress) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(&format!(
                "INSERT INTO ips ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
            ))?
            .execute(params![
                ip.address,
                app,
                ip.kind.to_string(),
                ip.region,
                ip.created_at
            ])?;
        Ok(())
    }

    /// The app's addresses, oldest first.
    pub fn ips(&self, app: &str) -> Result<Vec<IpAddress>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ips WHERE app = ?1 ORDER BY created_at, address"
        ))?;
        let rows = stmt.query_map([app], ip_from_row)?;
        Ok(rows
            .map(|r| r.map(|(_, ip)| ip))
            .collect::<Result<_, _>>()?)
    }

    /// Every app's addresses as `(app, address)`, by app.
    pub fn all_ips(&self) -> Result<Vec<(String, IpAddress)>, StoreError> {
        let mut stmt = self.conn().prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ips ORDER BY app, created_at, address"
        ))?;
        let rows = stmt.query_map([], ip_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The app holding `address`, and the address.
    pub fn ip(&self, address: &str) -> Result<Option<(String, IpAddress)>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached(&format!("SELECT {COLUMNS} FROM ips WHERE address = ?1"))?
            .query_row([address], ip_from_row)
            .optional()?)
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
