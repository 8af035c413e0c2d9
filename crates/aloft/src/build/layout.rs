//! What an OCI image layout written by buildah or skopeo holds, in brief: the manifest of one
//! tag (`index.json` → manifest → config, by digest under `blobs/`) and the run settings of its
//! config. Enough to tell the user what was built and for tests to look inside; shipping the
//! layout (every blob, digests checked) is `aloft-oci`'s business.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

/// The annotation naming a manifest of an OCI layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A tagged image of a layout: its manifest's digest, its layers, and how it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    pub layers: Vec<Descriptor>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in image order.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageSummary {
    /// The layers' compressed size in bytes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// A blob reference of an OCI manifest or index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: RunConfig,
}

/// The run settings of an image config (the OCI spec's `config` object; Docker's names).
#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: String,
    #[serde(default)]
    user: String,
}

/// The path of a blob of the layout.
pub fn blob_path(layout: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let Some(("sha256", hex)) = digest.split_once(':') else {
        bail!("unsupported digest {digest:?} in {}", layout.display());
    };
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("bad digest {digest:?} in {}", layout.display());
    }
    Ok(layout.join("blobs/sha256").join(hex))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The summary of the image tagged `tag` in the layout at `layout`.
pub fn read_summary(layout: &Path, tag: &str) -> anyhow::Result<ImageSummary> {
    let index: Index = read_json(&layout.join("index.json"))?;
    let entry = index
        .manifests
        .iter()
        .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        .ok_or_else(|| anyhow!("{}: no image tagged {tag:?}", layout.display()))?;
    let manifest: Manifest = read_json(&blob_path(layout, &entry.digest)?)?;
    let config: ConfigFile = read_json(&blob_path(layout, &manifest.config.digest)?)?;
    let run = config.config;
    Ok(ImageSummary {
        digest: entry.digest.clone(),
        layers: manifest.layers,
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        env: run.env.unwrap_or_default(),
        working_dir: run.working_dir,
        user: run.user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a blob under a made-up digest (the reader does not check digests).
    fn write_blob(layout: &Path, hex: &str, json: &str) -> String {
        let dir = layout.join("blobs/sha256");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(hex), json).unwrap();
        format!("sha256:{hex}")
    }

    #[test]
    fn reads_the_run_settings_of_a_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let l = tmp.path();
        let config = write_blob(
            l,
            "cc",
            r#"{"config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/bin","GREETING=hello"],"WorkingDir":"/app","User":"1000"}}"#,
        );
        let manifest = write_blob(
            l,
            "aa",
            &format!(
                r#"{{"config":{{"digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:11","size":10}},{{"digest":"sha256:22","size":5}}]}}"#
            ),
        );
        std::fs::write(
            l.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"digest":"{manifest}","size":1,"annotations":{{"{REF_NAME}":"v1"}}}}]}}"#
            ),
        )
        .unwrap();
        let s = read_summary(l, "v1").unwrap();
        assert_eq!(s.digest, "sha256:aa");
        assert_eq!(s.entrypoint, vec!["/bin/sh", "-c"]);
        assert_eq!(s.cmd, vec!["echo hi"]);
        assert_eq!(s.env, vec!["PATH=/bin", "GREETING=hello"]);
        assert_eq!(s.working_dir, "/app");
        assert_eq!(s.user, "1000");
        assert_eq!(s.layers.len(), 2);
        assert_eq!(s.size(), 15);
        let err = read_summary(l, "v2").unwrap_err().to_string();
        assert!(err.contains("no image tagged \"v2\""), "{err}");
        assert!(blob_path(l, "sha256:../../etc").is_err());
        assert!(blob_path(l, "md5:aa").is_err());
    }
}
