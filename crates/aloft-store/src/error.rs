//! Store errors: what went wrong and where, for people reading agent logs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the state database {path} cannot use WAL journaling (got {mode:?}); put the data dir on a local filesystem")]
    NoWal { path: PathBuf, mode: String },
    #[error("the state database has schema version {found}, newer than this aloft supports ({supported}); upgrade aloft")]
    TooNew { found: u32, supported: u32 },
    #[error("schema migration {version} ({description}) failed: {source}")]
    Migration {
        version: u32,
        description: &'static str,
        source: rusqlite::Error,
    },
    #[error("app name {0:?} is already taken")]
    AppNameTaken(String),
    #[error("machine name {name:?} is already used in app {app:?}")]
    MachineNameTaken { app: String, name: String },
    #[error("stored {what} is not valid JSON: {source}")]
    Corrupt {
        what: String,
        source: serde_json::Error,
    },
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether the write failed because the disk (or the database's size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        crate::reserve::is_disk_full(self)
    }
}
