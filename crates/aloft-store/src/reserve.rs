//! Space kept for the state database on a full disk.
//!
//! A full disk (a runaway machine's output, another program) must not leave the agent unable to
//! record the very operations that free space: stopping and destroying machines. So the store
//! keeps `<db>.reserve`, a file of [`RESERVE_BYTES`], next to the database. When a write fails
//! because the disk is full, the reserve is deleted and the write tried once more; once writes
//! succeed with enough free space again, the reserve is written anew (at most every
//! [`RESTORE_EVERY`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Size of the reserve file.
pub const RESERVE_BYTES: u64 = 8 << 20;
/// How often a spent reserve is tried again.
const RESTORE_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Reserve {
    path: PathBuf,
    spent: AtomicBool,
    last_restore: Mutex<Option<Instant>>,
}

impl Reserve {
    /// The reserve of the database at `db`, written now if the disk has room.
    pub(crate) fn new(db: &Path) -> Reserve {
        let mut name = db.as_os_str().to_owned();
        name.push(".reserve");
        let reserve = Reserve {
            path: PathBuf::from(name),
            spent: AtomicBool::new(false),
            last_restore: Mutex::new(None),
        };
        if !reserve.is_whole() && !reserve.write() {
            reserve.spent.store(true, Ordering::Relaxed);
        }
        reserve
    }

    fn is_whole(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= RESERVE_BYTES)
    }

    /// Writes the reserve file in full (real blocks, not a sparse file: the filesystem allocates
    /// them at write time); false when it did not fit.
    fn write(&self) -> bool {
        let tmp = self.path.with_extension("reserve.tmp");
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..RESERVE_BYTES / chunk.len() as u64 {
                f.write_all(&chunk)?;
            }
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.is_ok()
    }

    /// Frees the reserve for a write that failed on a full disk; false if there was none left.
    pub(crate) fn release(&self) -> bool {
        if self.spent.swap(true, Ordering::AcqRel) {
            return false;
        }
        std::fs::remove_file(&self.path).is_ok()
    }

    pub(crate) fn is_spent(&self) -> bool {
        self.spent.load(Ordering::Acquire)
    }

    /// After a successful write: writes a spent reserve again, if it is time to try.
    pub(crate) fn maybe_restore(&self) {
        if !self.is_spent() {
            return;
        }
        {
            let mut last = self.last_restore.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < RESTORE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        if self.write() {
            self.spent.store(false, Ordering::Release);
        }
    }
}

/// Whether `e` says the disk (or the database's size limit) is full.
pub(crate) fn is_disk_full(e: &crate::StoreError) -> bool {
    matches!(
        e,
        crate::StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::DiskFull
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_written_released_once_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let r = Reserve::new(&db);
        let file = dir.path().join("state.db.reserve");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), RESERVE_BYTES);
        assert!(r.release());
        assert!(!file.exists());
        assert!(!r.release(), "released once");
        r.maybe_restore();
        assert!(file.exists() && !r.is_spent());
        // A second store over the same file keeps it as it is.
        let again = Reserve::new(&db);
        assert!(!again.is_spent());
    }
}
