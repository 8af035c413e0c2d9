//! Prepared images: [`ContentStore::put_manifest`] stores a manifest whose blobs are all present
//! and [`ContentStore::prepare`] unpacks its layers, then records the result as
//! `images/<hex>.json` ([`PreparedImage`]): what a launch needs (layer directories bottom → top,
//! the process defaults) without reading a layer again ([`ContentStore::prepared`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{OciError, OciResult};
use crate::manifest::{check_layers_match, parse_config, parse_manifest, ImageConfig};
use crate::store::ContentStore;
use crate::unpack::{layer_dir, unpack_layer};

/// The process defaults of an image config, as a container launch applies them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProcessConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

impl From<&ImageConfig> for ImageProcessConfig {
    fn from(c: &ImageConfig) -> Self {
        ImageProcessConfig {
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone(),
            workdir: c.workdir.clone(),
            user: c.user.clone(),
        }
    }
}

/// One layer of a prepared image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedLayer {
    /// The compressed blob.
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub diff_id: Digest,
    /// Sum of its files' sizes once unpacked.
    pub unpacked_size: u64,
}

/// An image ready to run: every layer unpacked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedImage {
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// Unpacked layer directories, bottom → top (overlayfs wants `lowerdir` top first).
    #[serde(skip)]
    pub layer_dirs: Vec<PathBuf>,
    pub layers: Vec<PreparedLayer>,
    pub config: ImageProcessConfig,
    pub exposed_ports: Vec<String>,
    /// Manifest + config + layer blobs, in bytes.
    pub size_bytes: u64,
}

impl PreparedImage {
    /// Sum of its layers' unpacked sizes.
    pub fn unpacked_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.unpacked_size).sum()
    }
}

impl ContentStore {
    fn record_path(&self, d: &Digest) -> PathBuf {
        self.images_dir().join(format!("{}.json", d.hex()))
    }

    /// Manifests with a prepared record.
    pub fn prepared_manifests(&self) -> OciResult<Vec<Digest>> {
        let dir = self.images_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(OciError::io(&dir))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(d) = name
                .strip_suffix(".json")
                .and_then(|h| Digest::from_hex(h).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Stores manifest `bytes` (checked against `d`) once every blob it names is present, then
    /// prepares it. Missing blobs are an error listing them all.
    pub fn put_manifest(&self, d: &Digest, bytes: &[u8]) -> OciResult<PreparedImage> {
        let actual = Digest::of_bytes(bytes);
        if &actual != d {
            return Err(OciError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        let m = parse_manifest(bytes, &format!("manifest {d}"))?;
        let missing: Vec<Digest> = m
            .blobs()
            .into_iter()
            .filter(|(b, _)| !self.has(b))
            .map(|(b, _)| b)
            .collect();
        if !missing.is_empty() {
            return Err(OciError::MissingBlobs(missing));
        }
        for (b, size) in m.blobs() {
            let have = self.size(&b).unwrap_or(0);
            if have != size {
                return Err(OciError::Invalid {
                    what: format!("manifest {d}"),
                    why: format!("names blob {b} of {size} bytes, the store has {have} bytes"),
                });
            }
        }
        self.put_blob(d, bytes)?;
        self.prepare(d)
    }

    /// Unpacks every layer of stored manifest `d` and records the image.
    pub fn prepare(&self, d: &Digest) -> OciResult<PreparedImage> {
        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let what = format!("manifest {d}");
        let m = parse_manifest(&self.read_blob(d)?, &what)?;
        let config = parse_config(
            &self.read_blob(&m.config.digest)?,
            &format!("config {}", m.config.digest),
        )?;
        check_layers_match(&m, &config, &what)?;
        let mut layers = Vec::new();
        let mut layer_dirs = Vec::new();
        for (l, diff_id) in m.layers.iter().zip(&config.diff_ids) {
            if !self.has(&l.digest) {
                return Err(OciError::MissingBlobs(vec![l.digest.clone()]));
            }
            let u = unpack_layer(
                &self.blob_path(&l.digest),
                &l.media_type,
                &l.digest,
                diff_id,
                &self.layers_dir(),
                &self.tmp_dir(),
            )?;
            layer_dirs.push(u.dir);
            layers.push(PreparedLayer {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: diff_id.clone(),
                unpacked_size: u.size,
            });
        }
        let size_bytes = self.size(d).unwrap_or(0) + m.blobs().iter().map(|b| b.1).sum::<u64>();
        let img = PreparedImage {
            manifest_digest: d.clone(),
            config_digest: m.config.digest.clone(),
            layer_dirs,
            layers,
            config: ImageProcessConfig::from(&config),
            exposed_ports: config.exposed_ports.clone(),
            size_bytes,
        };
        let json = serde_json::to_vec_pretty(&img).expect("a prepared image serialises");
        self.write_atomically(&self.record_path(d), &json)?;
        Ok(img)
    }

    /// The prepared image of manifest `d`, from its record (no layer is read); `None` when it
    /// was never prepared or a layer directory is gone.
    pub fn prepared(&self, d: &Digest) -> OciResult<Option<PreparedImage>> {
        let path = self.record_path(d);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OciError::io(&path)(e)),
        };
        let mut img: PreparedImage =
            serde_json::from_slice(&bytes).map_err(|source| OciError::BadJson {
                what: path.display().to_string(),
                source,
            })?;
        img.layer_dirs = img
            .layers
            .iter()
            .map(|l| layer_dir(&self.layers_dir(), &l.diff_id))
            .collect();
        if img.layer_dirs.iter().any(|p| !p.is_dir()) {
            return Ok(None);
        }
        Ok(Some(img))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testing::{image, tar, Entry, TestImage};

    pub(crate) fn upload_all(s: &ContentStore, img: &TestImage) {
        for (d, bytes) in &img.blobs {
            if d != &img.manifest {
                s.append(d, 0, &bytes[..]).unwrap();
                s.commit(d, Some(bytes.len() as u64)).unwrap();
            }
        }
    }

    #[test]
    fn a_manifest_is_prepared_once_every_blob_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let img = image(
            &[
                tar(&[Entry::File("bin/app", b"#!/bin/sh\necho hi\n", 0o755)]),
                tar(&[Entry::File("etc/conf", b"x=1\n", 0o644)]),
            ],
            &["/bin/app"],
        );
        let err = s
            .put_manifest(&img.manifest, &img.manifest_bytes)
            .unwrap_err();
        match &err {
            OciError::MissingBlobs(m) => assert_eq!(m.len(), 3, "{err}"),
            _ => panic!("{err}"),
        }
        assert!(!s.has(&img.manifest), "nothing stored");
        let err = s.put_manifest(&img.manifest, b"{}").unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        upload_all(&s, &img);
        let p = s.put_manifest(&img.manifest, &img.manifest_bytes).unwrap();
        assert_eq!(p.layer_dirs.len(), 2);
        assert!(p.layer_dirs[0].join("bin/app").is_file());
        assert!(p.layer_dirs[1].join("etc/conf").is_file());
        assert_eq!(p.config.entrypoint, ["/bin/app"]);
        assert_eq!(p.config.env, ["PATH=/bin"]);
        assert_eq!(p.unpacked_bytes(), 18 + 4);
        let total: u64 = img.blobs.values().map(|b| b.len() as u64).sum();
        assert_eq!(p.size_bytes, total);
        assert_eq!(s.prepared(&img.manifest).unwrap(), Some(p));
        assert_eq!(s.prepared_manifests().unwrap(), vec![img.manifest.clone()]);
        assert_eq!(s.prepared(&img.config).unwrap(), None);
    }
}
