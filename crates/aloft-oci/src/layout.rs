//! An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), as
//! `buildah push IMAGE oci:DIR:REF` or `skopeo copy` write it, read into an [`Image`]: which
//! manifest (by `org.opencontainers.image.ref.name`, or the only one), its config and layers.
//! A manifest that is itself an index (multi-platform) is followed to its linux/amd64 entry.

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{OciError, OciResult};
use crate::manifest::{
    check_layers_match, parse_config, parse_document, parse_manifest, Descriptor, Document,
    ImageConfig, Index, LayerDescriptor, REF_NAME,
};

/// One image of a layout (or of the store), with everything needed to ship or run it.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest_digest: Digest,
    /// The manifest exactly as stored (its sha256 is `manifest_digest`).
    pub manifest_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub config_size: u64,
    /// Bottom first.
    pub layers: Vec<LayerDescriptor>,
    pub config: ImageConfig,
}

impl Image {
    /// Every blob the manifest names: config first, then layers, with sizes.
    pub fn blobs(&self) -> Vec<(Digest, u64)> {
        std::iter::once((self.config_digest.clone(), self.config_size))
            .chain(self.layers.iter().map(|l| (l.digest.clone(), l.size)))
            .collect()
    }
}

/// An image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens `dir`, checking it is an image layout (has `oci-layout` and `index.json`).
    pub fn open(dir: &Path) -> OciResult<Layout> {
        let l = Layout {
            dir: dir.to_path_buf(),
        };
        for f in ["oci-layout", "index.json"] {
            if !dir.join(f).is_file() {
                return Err(l.err(format!(
                    "no {f}: not an OCI image layout (make one with `buildah push IMAGE oci:DIR:REF`)"
                )));
            }
        }
        Ok(l)
    }

    fn err(&self, why: String) -> OciError {
        OciError::Layout {
            dir: self.dir.clone(),
            why,
        }
    }

    /// The file of blob `d`.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// The bytes of blob `d`, checked against its digest.
    pub fn read_blob(&self, d: &Digest) -> OciResult<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = std::fs::read(&p).map_err(OciError::io(&p))?;
        let actual = Digest::of_bytes(&bytes);
        if &actual != d {
            return Err(OciError::DigestMismatch {
                expected: d.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The image named `reference` (the ref-name annotation), or the only image when `None`.
    pub fn image(&self, reference: Option<&str>) -> OciResult<Image> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(OciError::io(&path))?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|source| OciError::BadJson {
            what: path.display().to_string(),
            source,
        })?;
        let desc = self.choose(&index, reference)?;
        self.image_of(&desc, 0)
    }

    fn choose(&self, index: &Index, reference: Option<&str>) -> OciResult<Descriptor> {
        let names = || {
            index
                .manifests
                .iter()
                .filter_map(|m| m.annotations.get(REF_NAME).cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match reference {
            Some(r) => index
                .manifests
                .iter()
                .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(r))
                .cloned()
                .ok_or_else(|| self.err(format!("no image named {r:?} (it has: {})", names()))),
            None => match index.manifests.as_slice() {
                [only] => Ok(only.clone()),
                [] => Err(self.err("index.json names no image".into())),
                _ => Err(self.err(format!(
                    "index.json names {} images ({}); say which",
                    index.manifests.len(),
                    names()
                ))),
            },
        }
    }

    fn image_of(&self, desc: &Descriptor, depth: u8) -> OciResult<Image> {
        let bytes = self.read_blob(&desc.digest)?;
        let what = format!("manifest {}", desc.digest);
        match parse_document(&bytes, &what)? {
            Document::Index(idx) if depth == 0 => {
                let chosen = idx
                    .manifests
                    .iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                    })
                    .ok_or_else(|| {
                        self.err(format!("index {} has no linux/amd64 image", desc.digest))
                    })?;
                self.image_of(chosen, 1)
            }
            Document::Index(_) => Err(self.err(format!("{what}: an index inside an index"))),
            Document::Manifest(_) => {
                let m = parse_manifest(&bytes, &what)?;
                let cfg_bytes = self.read_blob(&m.config.digest)?;
                let config = parse_config(&cfg_bytes, &format!("config {}", m.config.digest))?;
                check_layers_match(&m, &config, &what)?;
                for l in &m.layers {
                    let p = self.blob_path(&l.digest);
                    let len = std::fs::metadata(&p).map_err(OciError::io(&p))?.len();
                    if len != l.size {
                        return Err(self.err(format!(
                            "layer {} is {len} bytes, the manifest says {}",
                            l.digest, l.size
                        )));
                    }
                }
                Ok(Image {
                    manifest_digest: desc.digest.clone(),
                    manifest_bytes: bytes,
                    config_digest: m.config.digest.clone(),
                    config_size: m.config.size,
                    layers: m.layer_descriptors(),
                    config,
                })
            }
        }
    }
}

/// Helpers to write small image layouts, for tests here and in other crates.
pub mod testing {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::path::Path;

    use crate::digest::Digest;
    use crate::manifest::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME};

    /// One file (or directory, or symlink) of a test layer.
    pub enum Entry<'a> {
        File(&'a str, &'a [u8], u32),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    /// An uncompressed tar of `entries`.
    pub fn tar(entries: &[Entry]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::File(path, data, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, *data).unwrap();
                }
                Entry::Dir(path) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
                Entry::Symlink(path, target) | Entry::Hardlink(path, target) => {
                    h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// A raw tar entry whose name is written as given (even `../x` or `/x`, which
    /// `tar::Builder` refuses to write).
    pub fn raw_tar_file(name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    pub fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A written test image: its manifest digest and every blob (manifest included).
    pub struct TestImage {
        pub manifest: Digest,
        pub manifest_bytes: Vec<u8>,
        pub config: Digest,
        /// (compressed digest, uncompressed diff_id)
        pub layers: Vec<(Digest, Digest)>,
        pub blobs: BTreeMap<Digest, Vec<u8>>,
    }

    /// Builds an image of gzip layers made of `layers` (uncompressed tars, bottom first) with
    /// an entrypoint, into memory.
    pub fn image(layers: &[Vec<u8>], entrypoint: &[&str]) -> TestImage {
        let mut blobs = BTreeMap::new();
        let mut descs = Vec::new();
        let mut pairs = Vec::new();
        for tar in layers {
            let gz = gzip(tar);
            let d = Digest::of_bytes(&gz);
            let diff = Digest::of_bytes(tar);
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d, "size": gz.len(),
            }));
            pairs.push((d.clone(), diff));
            blobs.insert(d, gz);
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": pairs.iter().map(|p| p.1.clone()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let config_digest = Digest::of_bytes(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descs,
        }))
        .unwrap();
        let manifest_digest = Digest::of_bytes(&manifest);
        blobs.insert(config_digest.clone(), config);
        blobs.insert(manifest_digest.clone(), manifest.clone());
        TestImage {
            manifest: manifest_digest,
            manifest_bytes: manifest,
            config: config_digest,
            layers: pairs,
            blobs,
        }
    }

    /// Writes `img` as an image layout in `dir`, named `name`.
    pub fn write_layout(dir: &Path, img: &TestImage, name: &str) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for (d, bytes) in &img.blobs {
            std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        }
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": img.manifest,
                "size": img.manifest_bytes.len(), "annotations": {REF_NAME: name}}],
        });
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn sample() -> TestImage {
        image(
            &[
                tar(&[Entry::File("bin/app", b"#!/bin/sh\n", 0o755)]),
                tar(&[Entry::File("etc/conf", b"x", 0o644)]),
            ],
            &["/bin/app"],
        )
    }

    #[test]
    fn reads_an_image_by_name_or_the_only_one() {
        let dir = tempfile::tempdir().unwrap();
        let img = sample();
        write_layout(dir.path(), &img, "latest");
        let l = Layout::open(dir.path()).unwrap();
        for r in [None, Some("latest")] {
            let got = l.image(r).unwrap();
            assert_eq!(got.manifest_digest, img.manifest);
            assert_eq!(got.config_digest, img.config);
            assert_eq!(got.layers.len(), 2);
            assert_eq!(got.config.entrypoint, ["/bin/app"]);
            assert_eq!(got.config.diff_ids[1], img.layers[1].1);
            assert_eq!(got.blobs().len(), 3);
        }
        let err = l.image(Some("other")).unwrap_err().to_string();
        assert!(
            err.contains("no image named \"other\" (it has: latest)"),
            "{err}"
        );
    }

    #[test]
    fn follows_a_nested_index_to_linux_amd64() {
        let dir = tempfile::tempdir().unwrap();
        let img = sample();
        write_layout(dir.path(), &img, "x");
        let nested = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": crate::manifest::OCI_INDEX,
            "manifests": [
                {"mediaType": crate::manifest::OCI_MANIFEST, "digest": format!("sha256:{}", "e".repeat(64)), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": crate::manifest::OCI_MANIFEST, "digest": img.manifest, "size": img.manifest_bytes.len(),
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ]})).unwrap();
        let nd = Digest::of_bytes(&nested);
        std::fs::write(dir.path().join("blobs/sha256").join(nd.hex()), &nested).unwrap();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": crate::manifest::OCI_INDEX, "digest": nd, "size": nested.len()}]});
        std::fs::write(
            dir.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        let got = Layout::open(dir.path()).unwrap().image(None).unwrap();
        assert_eq!(got.manifest_digest, img.manifest);
    }

    #[test]
    fn bad_layouts_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Layout::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not an OCI image layout"), "{err}");
        let img = sample();
        write_layout(dir.path(), &img, "x");
        std::fs::write(dir.path().join("index.json"), "{\"manifests\": [").unwrap();
        let err = Layout::open(dir.path())
            .unwrap()
            .image(None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("index.json is not valid JSON"), "{err}");
        // A blob whose bytes do not match its name.
        write_layout(dir.path(), &img, "x");
        std::fs::write(dir.path().join("blobs/sha256").join(img.config.hex()), "{}").unwrap();
        let err = Layout::open(dir.path())
            .unwrap()
            .image(None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("digest mismatch") && err.contains(img.config.as_str()),
            "{err}"
        );
    }
}
