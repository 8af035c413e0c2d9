//! The JSON documents of an image, in their OCI form and Docker's v2 schema2 form (same shapes,
//! other media types): an index (or Docker manifest list) naming manifests per platform, a
//! manifest naming a config blob and layer blobs, and the image config (process defaults and
//! the uncompressed layer digests, `rootfs.diff_ids`).
//!
//! Only the fields Aloft uses are read; unknown fields are ignored, as the specs ask.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{OciError, OciResult};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Annotation naming a manifest inside an image layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer of `media_type`, or an error for what is not a layer.
    pub fn of_layer(media_type: &str) -> OciResult<Compression> {
        let base = media_type.replace(".nondistributable", "");
        Ok(match base.as_str() {
            "application/vnd.oci.image.layer.v1.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd" => Compression::Zstd,
            _ => {
                return Err(OciError::UnsupportedMediaType {
                    what: "layer".into(),
                    media_type: media_type.into(),
                })
            }
        })
    }
}

/// A content descriptor: what a blob is, its digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An image index (or Docker manifest list).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema2).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A layer as a manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDescriptor {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// A parsed document: what a manifest digest may name.
#[derive(Clone, Debug)]
pub enum Document {
    Index(Index),
    Manifest(Manifest),
}

/// Parses a manifest or index, telling them apart by `mediaType` (or, where it is absent as
/// older writers allow, by which list it has). `what` names it in errors.
pub fn parse_document(bytes: &[u8], what: &str) -> OciResult<Document> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let bad = |source| OciError::BadJson {
        what: what.to_string(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(bad)?;
    match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => {
            Ok(Document::Index(serde_json::from_slice(bytes).map_err(bad)?))
        }
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => {
            Ok(Document::Manifest(parse_manifest_json(bytes, what)?))
        }
        Some(other) => Err(OciError::UnsupportedMediaType {
            what: what.to_string(),
            media_type: other.to_string(),
        }),
        None if probe.manifests.is_some() => {
            Ok(Document::Index(serde_json::from_slice(bytes).map_err(bad)?))
        }
        None => Ok(Document::Manifest(parse_manifest_json(bytes, what)?)),
    }
}

/// Parses an image manifest (not an index) and checks what it names: a config and layers of
/// media types Aloft can use.
pub fn parse_manifest(bytes: &[u8], what: &str) -> OciResult<Manifest> {
    match parse_document(bytes, what)? {
        Document::Manifest(m) => Ok(m),
        Document::Index(_) => Err(OciError::Invalid {
            what: what.to_string(),
            why: "is an image index, not an image manifest; push the manifest of one platform (linux/amd64)".into(),
        }),
    }
}

fn parse_manifest_json(bytes: &[u8], what: &str) -> OciResult<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|source| OciError::BadJson {
        what: what.to_string(),
        source,
    })?;
    if m.schema_version != 2 {
        return Err(OciError::Invalid {
            what: what.into(),
            why: format!(
                "schemaVersion {} is not supported (only 2)",
                m.schema_version
            ),
        });
    }
    match m.config.media_type.as_str() {
        OCI_CONFIG | DOCKER_CONFIG => {}
        other => {
            return Err(OciError::UnsupportedMediaType {
                what: format!("{what}: config"),
                media_type: other.into(),
            })
        }
    }
    for l in &m.layers {
        Compression::of_layer(&l.media_type).map_err(|_| OciError::UnsupportedMediaType {
            what: format!("{what}: layer {}", l.digest),
            media_type: l.media_type.clone(),
        })?;
    }
    Ok(m)
}

impl Manifest {
    /// Its layers, bottom first.
    pub fn layer_descriptors(&self) -> Vec<LayerDescriptor> {
        self.layers
            .iter()
            .map(|l| LayerDescriptor {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect()
    }

    /// Every blob it references: config, then layers.
    pub fn blobs(&self) -> Vec<(Digest, u64)> {
        std::iter::once((self.config.digest.clone(), self.config.size))
            .chain(self.layers.iter().map(|l| (l.digest.clone(), l.size)))
            .collect()
    }
}

/// The parts of an image config Aloft uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V`.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `8080/tcp`…
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// The sha256 of each layer's uncompressed tar, bottom first.
    pub diff_ids: Vec<Digest>,
    pub os: String,
    pub architecture: String,
}

/// Parses an image config blob; `what` names it in errors.
pub fn parse_config(bytes: &[u8], what: &str) -> OciResult<ImageConfig> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        architecture: String,
        #[serde(default)]
        os: String,
        #[serde(default)]
        config: Option<Process>,
        rootfs: RootFs,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct Process {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        env: Option<Vec<String>>,
        #[serde(default)]
        entrypoint: Option<Vec<String>>,
        #[serde(default)]
        cmd: Option<Vec<String>>,
        #[serde(default)]
        working_dir: Option<String>,
        #[serde(default)]
        exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(rename = "type")]
        kind: String,
        diff_ids: Vec<Digest>,
    }
    let f: File = serde_json::from_slice(bytes).map_err(|source| OciError::BadJson {
        what: what.to_string(),
        source,
    })?;
    if f.rootfs.kind != "layers" {
        return Err(OciError::Invalid {
            what: what.into(),
            why: format!("rootfs.type is {:?}, not \"layers\"", f.rootfs.kind),
        });
    }
    let p = f.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ImageConfig {
        entrypoint: p.entrypoint.unwrap_or_default(),
        cmd: p.cmd.unwrap_or_default(),
        env: p.env.unwrap_or_default(),
        workdir: non_empty(p.working_dir),
        user: non_empty(p.user),
        exposed_ports: p.exposed_ports.unwrap_or_default().into_keys().collect(),
        labels: p.labels.unwrap_or_default(),
        diff_ids: f.rootfs.diff_ids,
        os: f.os,
        architecture: f.architecture,
    })
}

/// Checks that a manifest and its config agree: one diff_id per layer.
pub fn check_layers_match(m: &Manifest, c: &ImageConfig, what: &str) -> OciResult<()> {
    if m.layers.len() != c.diff_ids.len() {
        return Err(OciError::Invalid {
            what: what.into(),
            why: format!(
                "the manifest names {} layers but the config's rootfs.diff_ids has {}",
                m.layers.len(),
                c.diff_ids.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn reads_oci_and_docker_manifests() {
        for (mt, cfg, layer) in [
            (
                OCI_MANIFEST,
                OCI_CONFIG,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
            (
                DOCKER_MANIFEST,
                DOCKER_CONFIG,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
        ] {
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"{cfg}","digest":"{}","size":3}},"layers":[{{"mediaType":"{layer}","digest":"{}","size":7}}],"extra":1}}"#,
                d('a'),
                d('b')
            );
            let m = parse_manifest(json.as_bytes(), "m").unwrap();
            assert_eq!(m.blobs().len(), 2);
            assert_eq!(m.layers[0].size, 7);
        }
    }

    #[test]
    fn bad_documents_are_errors_that_say_what() {
        let err = parse_manifest(b"{not json", "manifest x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest x is not valid JSON"), "{err}");
        let json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},"layers":[{{"mediaType":"text/plain","digest":"{}","size":7}}]}}"#,
            d('a'),
            d('b')
        );
        let err = parse_manifest(json.as_bytes(), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("text/plain"), "{err}");
        let json = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":3},"layers":[]}"#;
        let err = parse_manifest(json.as_bytes(), "m")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256:zz"), "{err}");
    }

    #[test]
    fn reads_the_process_defaults_of_a_config() {
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"User":"app","Env":["PATH=/bin","A=1"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"WorkingDir":"/srv","ExposedPorts":{{"8080/tcp":{{}}}},"Labels":{{"k":"v"}}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d('c')
        );
        let c = parse_config(json.as_bytes(), "config").unwrap();
        assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(c.cmd, ["echo hi"]);
        assert_eq!(c.env, ["PATH=/bin", "A=1"]);
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.exposed_ports, ["8080/tcp"]);
        assert_eq!(c.labels["k"], "v");
        assert_eq!(c.diff_ids[0].as_str(), d('c'));
        // A FROM scratch image without a process section is fine.
        let c = parse_config(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#, "c").unwrap();
        assert!(c.entrypoint.is_empty() && c.user.is_none());
    }
}
