//! [`ContentStore`]: the agent's content-addressed blob store under one root directory
//! (`<data-dir>/oci`):
//!
//! ```text
//! blobs/sha256/<hex>        committed blobs (layers, configs, manifests), each written atomically
//! uploads/<hex>.partial     an upload in progress; its length is the resume offset
//! layers/<diff-id hex>/     unpacked layers (`crate::unpack`), plus `<hex>.size`
//! images/<hex>.json         records of prepared images (`crate::prepared`)
//! tmp/                      temporary files and directories, renamed into place when complete
//! ```
//!
//! Uploads are resumable: bytes are appended at an offset the client must know
//! ([`ContentStore::upload_offset`]), are on disk as soon as they are received (a cut-off upload
//! keeps what arrived), and are only moved into `blobs/` by [`ContentStore::commit`] once their
//! sha256 (and size, when declared) match. One upload per digest at a time.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{OciError, OciResult};

/// What the store received since it was opened (for tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounters {
    /// Blobs committed (uploaded whole and verified).
    pub blobs_received: u64,
    /// Bytes appended to uploads.
    pub bytes_received: u64,
    /// Blobs a client asked about (or committed) that were already present.
    pub blobs_present_skipped: u64,
}

#[derive(Default)]
struct Counters {
    blobs_received: AtomicU64,
    bytes_received: AtomicU64,
    blobs_present_skipped: AtomicU64,
}

/// See the module docs. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ContentStore {
    root: PathBuf,
    counters: Arc<Counters>,
    /// Digests with an append or commit under way.
    busy: Arc<Mutex<HashSet<Digest>>>,
    /// Preparing images (read) vs garbage collection (write).
    pub(crate) gc_lock: Arc<RwLock<()>>,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub size: u64,
    /// The blob was already in the store; the partial upload was discarded.
    pub already_present: bool,
}

/// Marks a digest busy until dropped.
struct Busy<'a> {
    set: &'a Mutex<HashSet<Digest>>,
    digest: Digest,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.digest);
    }
}

impl ContentStore {
    /// Opens (creating) the store at `root`, removing temporaries a killed process left.
    pub fn open(root: &Path) -> OciResult<ContentStore> {
        for d in ["blobs/sha256", "uploads", "layers", "images", "tmp"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(OciError::io(&p))?;
        }
        let tmp = root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
            counters: Arc::default(),
            busy: Arc::default(),
            gc_lock: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub(crate) fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("uploads")
            .join(format!("{}.partial", d.hex()))
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// The size of a committed blob.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.blob_path(d)).ok().map(|m| m.len())
    }

    /// A client's question before uploading: the blob's size when present (counted as a
    /// skipped upload), `None` when it must be sent.
    pub fn probe(&self, d: &Digest) -> Option<u64> {
        let size = self.size(d)?;
        self.counters
            .blobs_present_skipped
            .fetch_add(1, Ordering::Relaxed);
        Some(size)
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> OciResult<File> {
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OciError::NotFound(d.clone()),
            _ => OciError::io(self.blob_path(d))(e),
        })
    }

    /// The bytes of a committed blob (for small ones: manifests, configs).
    pub fn read_blob(&self, d: &Digest) -> OciResult<Vec<u8>> {
        let mut f = self.open_blob(d)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(OciError::io(self.blob_path(d)))?;
        Ok(v)
    }

    pub fn counters(&self) -> StoreCounters {
        StoreCounters {
            blobs_received: self.counters.blobs_received.load(Ordering::Relaxed),
            bytes_received: self.counters.bytes_received.load(Ordering::Relaxed),
            blobs_present_skipped: self.counters.blobs_present_skipped.load(Ordering::Relaxed),
        }
    }

    fn claim(&self, d: &Digest) -> OciResult<Busy<'_>> {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(d.clone()) {
            return Err(OciError::UploadBusy(d.clone()));
        }
        Ok(Busy {
            set: &self.busy,
            digest: d.clone(),
        })
    }

    /// How many bytes of an upload of `d` are already here (0 when none).
    pub fn upload_offset(&self, d: &Digest) -> OciResult<u64> {
        match std::fs::metadata(self.partial_path(d)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(OciError::io(self.partial_path(d))(e)),
        }
    }

    /// Appends what `reader` yields to the upload of `d`, which must be at `offset`; returns
    /// the new offset. Bytes are on disk as they arrive: when `reader` fails (the connection was
    /// cut), what came before stays and the upload resumes from there.
    pub fn append(&self, d: &Digest, offset: u64, mut reader: impl Read) -> OciResult<u64> {
        let _busy = self.claim(d)?;
        let path = self.partial_path(d);
        let current = self.upload_offset(d)?;
        if current != offset {
            return Err(OciError::WrongOffset {
                digest: d.clone(),
                current,
                requested: offset,
            });
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(OciError::io(&path))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut at = offset;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(OciError::Invalid {
                        what: format!("upload of {d}"),
                        why: format!("cut off after {at} bytes ({e}); resume from offset {at}"),
                    })
                }
            };
            f.write_all(&buf[..n]).map_err(OciError::io(&path))?;
            at += n as u64;
            self.counters
                .bytes_received
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(at)
    }

    /// Drops what an upload of `d` received so far (it starts again from 0).
    pub fn discard_upload(&self, d: &Digest) -> OciResult<()> {
        let _busy = self.claim(d)?;
        match std::fs::remove_file(self.partial_path(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(OciError::io(self.partial_path(d))(e))
            }
            _ => Ok(()),
        }
    }

    /// Finishes the upload of `d`: checks its sha256 (and `declared_size`) and moves it into
    /// `blobs/`. A mismatch deletes the partial upload (the client starts over). When the blob
    /// is already present the partial upload is discarded.
    pub fn commit(&self, d: &Digest, declared_size: Option<u64>) -> OciResult<Committed> {
        let _busy = self.claim(d)?;
        let partial = self.partial_path(d);
        if let Some(size) = self.size(d) {
            let _ = std::fs::remove_file(&partial);
            self.counters
                .blobs_present_skipped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(Committed {
                size,
                already_present: true,
            });
        }
        let file = match File::open(&partial) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An empty blob may be committed without any append.
                File::create(&partial).map_err(OciError::io(&partial))?;
                File::open(&partial).map_err(OciError::io(&partial))?
            }
            Err(e) => return Err(OciError::io(&partial)(e)),
        };
        let (actual, size) =
            Digest::of_reader(std::io::BufReader::with_capacity(256 * 1024, &file))
                .map_err(OciError::io(&partial))?;
        if &actual != d {
            let _ = std::fs::remove_file(&partial);
            return Err(OciError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        if let Some(declared) = declared_size.filter(|s| *s != size) {
            let _ = std::fs::remove_file(&partial);
            return Err(OciError::SizeMismatch {
                digest: d.clone(),
                declared,
                actual: size,
            });
        }
        file.sync_all().map_err(OciError::io(&partial))?;
        let dest = self.blob_path(d);
        std::fs::rename(&partial, &dest).map_err(OciError::io(&dest))?;
        self.counters.blobs_received.fetch_add(1, Ordering::Relaxed);
        Ok(Committed {
            size,
            already_present: false,
        })
    }

    /// Stores a small blob given whole (a manifest), checked against `d`, atomically.
    pub fn put_blob(&self, d: &Digest, bytes: &[u8]) -> OciResult<()> {
        let actual = Digest::of_bytes(bytes);
        if &actual != d {
            return Err(OciError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        if self.has(d) {
            return Ok(());
        }
        self.write_atomically(&self.blob_path(d), bytes)
    }

    /// Writes `bytes` to `dest` through a temporary file and a rename.
    pub(crate) fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> OciResult<()> {
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(OciError::io(&tmp_dir))?;
        tmp.write_all(bytes).map_err(OciError::io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(OciError::io(tmp.path()))?;
        tmp.persist(dest).map_err(|e| OciError::io(dest)(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that yields `data` then fails, like a connection cut mid-body.
    struct CutOff<'a>(&'a [u8]);
    impl Read for CutOff<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "reset",
                ));
            }
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn an_interrupted_upload_resumes_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of_bytes(&data);
        assert_eq!(s.upload_offset(&d).unwrap(), 0);
        let err = s.append(&d, 0, CutOff(&data[..40_000])).unwrap_err();
        assert!(
            err.to_string().contains("resume from offset 40000"),
            "{err}"
        );
        assert_eq!(s.upload_offset(&d).unwrap(), 40_000);
        // A wrong offset is refused and names the right one.
        let err = s.append(&d, 0, &data[..]).unwrap_err();
        assert!(
            matches!(
                err,
                OciError::WrongOffset {
                    current: 40_000,
                    requested: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(s.append(&d, 40_000, &data[40_000..]).unwrap(), 100_000);
        assert!(!s.has(&d));
        let c = s.commit(&d, Some(100_000)).unwrap();
        assert_eq!(
            c,
            Committed {
                size: 100_000,
                already_present: false
            }
        );
        assert_eq!(std::fs::read(s.blob_path(&d)).unwrap(), data);
        assert_eq!(s.upload_offset(&d).unwrap(), 0);
        let c = s.counters();
        assert_eq!((c.blobs_received, c.bytes_received), (1, 100_000));
        assert_eq!(s.probe(&d), Some(100_000));
        assert_eq!(s.counters().blobs_present_skipped, 1);
    }

    #[test]
    fn a_digest_mismatch_stores_nothing_and_names_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of_bytes(b"good");
        s.append(&d, 0, &b"evil"[..]).unwrap();
        let err = s.commit(&d, None).unwrap_err().to_string();
        assert!(err.contains(d.as_str()), "{err}");
        assert!(err.contains(Digest::of_bytes(b"evil").as_str()), "{err}");
        assert!(!s.has(&d));
        assert_eq!(
            s.upload_offset(&d).unwrap(),
            0,
            "the partial upload is gone"
        );
        // A wrong declared size is refused too.
        s.append(&d, 0, &b"good"[..]).unwrap();
        let err = s.commit(&d, Some(5)).unwrap_err();
        assert!(
            matches!(
                err,
                OciError::SizeMismatch {
                    declared: 5,
                    actual: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!s.has(&d));
        // put_blob checks too.
        assert!(s.put_blob(&d, b"evil").is_err());
        s.put_blob(&d, b"good").unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"good");
    }
}
