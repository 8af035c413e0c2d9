//! Garbage collection of the content store: [`ContentStore::gc`] removes every manifest,
//! config, layer blob and unpacked layer that no kept image needs. A layer shared by several
//! images stays while one of them is kept. Unreferenced blobs and image records younger than
//! [`GRACE`] stay too (they may belong to a push still in progress), partial uploads and
//! temporaries only go once older than [`STALE_UPLOAD`]. Runs under the store's write lock, so
//! no image is being prepared meanwhile.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{OciError, OciResult};
use crate::manifest::{parse_config, parse_manifest};
use crate::store::ContentStore;

/// How long an unreferenced blob or image record is kept (a push may be under way).
pub const GRACE: Duration = Duration::from_secs(3600);
/// Age past which a partial upload or a temporary is removed.
pub const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);

/// What a collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub images_removed: u64,
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub uploads_removed: u64,
    /// Bytes of blobs and partial uploads removed (unpacked layers not counted).
    pub bytes_freed: u64,
}

fn older_than(path: &Path, age: Duration, now: SystemTime) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .map(|t| now.duration_since(t).unwrap_or_default() > age)
        .unwrap_or(true)
}

impl ContentStore {
    /// Collects everything the images `keep` (manifest digests) do not need.
    pub fn gc(&self, keep: &[Digest]) -> OciResult<GcReport> {
        self.gc_at(keep, SystemTime::now())
    }

    /// [`ContentStore::gc`] as if the time were `now` (tests age the store this way).
    pub fn gc_at(&self, keep: &[Digest], now: SystemTime) -> OciResult<GcReport> {
        let _lock = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        let mut report = GcReport::default();
        let mut roots: HashSet<Digest> = keep.iter().cloned().collect();
        for d in self.prepared_manifests()? {
            let record = self.images_dir().join(format!("{}.json", d.hex()));
            if roots.contains(&d) {
                continue;
            }
            if older_than(&record, GRACE, now) {
                std::fs::remove_file(&record).map_err(OciError::io(&record))?;
                report.images_removed += 1;
            } else {
                roots.insert(d);
            }
        }
        // What the roots reference.
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut layers: HashSet<String> = HashSet::new();
        for d in &roots {
            let Ok(bytes) = self.read_blob(d) else {
                continue;
            };
            blobs.insert(d.clone());
            let Ok(m) = parse_manifest(&bytes, "manifest") else {
                continue;
            };
            blobs.extend(m.blobs().into_iter().map(|b| b.0));
            if let Ok(c) = self
                .read_blob(&m.config.digest)
                .and_then(|b| parse_config(&b, "config"))
            {
                layers.extend(c.diff_ids.iter().map(|d| d.hex().to_string()));
            }
        }
        let blob_dir = self.root().join("blobs/sha256");
        for e in std::fs::read_dir(&blob_dir)
            .map_err(OciError::io(&blob_dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = Digest::from_hex(&name).is_ok_and(|d| blobs.contains(&d));
            if !keep && older_than(&e.path(), GRACE, now) {
                report.bytes_freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(e.path()).map_err(OciError::io(e.path()))?;
                report.blobs_removed += 1;
            }
        }
        let layer_dir = self.layers_dir();
        for e in std::fs::read_dir(&layer_dir)
            .map_err(OciError::io(&layer_dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let hex = name.strip_suffix(".size").unwrap_or(&name);
            if layers.contains(hex) {
                continue;
            }
            if e.path().is_dir() {
                std::fs::remove_dir_all(e.path()).map_err(OciError::io(e.path()))?;
                report.layers_removed += 1;
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
        for dir in [self.root().join("uploads"), self.tmp_dir()] {
            for e in std::fs::read_dir(&dir)
                .map_err(OciError::io(&dir))?
                .flatten()
            {
                if older_than(&e.path(), STALE_UPLOAD, now) {
                    report.bytes_freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                    let _ = std::fs::remove_dir_all(e.path());
                    let _ = std::fs::remove_file(e.path());
                    report.uploads_removed += 1;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testing::{image, tar, Entry};

    #[test]
    fn gc_keeps_what_kept_images_share_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let base = tar(&[Entry::File("bin/sh", b"shell", 0o755)]);
        let a = image(
            &[base.clone(), tar(&[Entry::File("a", b"A", 0o644)])],
            &["/a"],
        );
        let b = image(&[base, tar(&[Entry::File("b", b"B", 0o644)])], &["/b"]);
        for img in [&a, &b] {
            for (d, bytes) in &img.blobs {
                if d != &img.manifest {
                    s.append(d, 0, &bytes[..]).unwrap();
                    s.commit(d, None).unwrap();
                }
            }
            s.put_manifest(&img.manifest, &img.manifest_bytes).unwrap();
        }
        let stale = Digest::of_bytes(b"half");
        s.append(&stale, 0, &b"ha"[..]).unwrap();
        // Now: nothing is old enough to go, kept or not.
        assert_eq!(s.gc(&[]).unwrap(), GcReport::default());
        // Two days on, only `a` kept.
        let later = SystemTime::now() + 2 * STALE_UPLOAD;
        let r = s.gc_at(std::slice::from_ref(&a.manifest), later).unwrap();
        assert_eq!(r.images_removed, 1);
        assert_eq!(
            r.blobs_removed, 3,
            "b's manifest, config and own layer: {r:?}"
        );
        assert_eq!(r.layers_removed, 1);
        assert_eq!(r.uploads_removed, 1);
        let pa = s
            .prepared(&a.manifest)
            .unwrap()
            .expect("a is still prepared");
        assert!(
            pa.layer_dirs[0].join("bin/sh").is_file(),
            "the shared layer stays"
        );
        for blob in a.blobs.keys() {
            assert!(s.has(blob));
        }
        assert!(!s.has(&b.manifest));
        assert!(!s.has(&b.layers[1].0));
        assert_eq!(s.prepared(&b.manifest).unwrap(), None);
        assert_eq!(s.upload_offset(&stale).unwrap(), 0);
        // Nothing kept: everything goes.
        let r = s.gc_at(&[], later).unwrap();
        assert_eq!(
            (r.images_removed, r.blobs_removed, r.layers_removed),
            (1, 4, 2)
        );
    }
}
