//! What an OCI image layout written by buildah or skopeo holds, in brief: the image of one tag
//! and the run settings of its config, read with `aloft-oci` (the same reader that ships the
//! layout), to tell the user what was built.

use std::path::Path;

use anyhow::Context as _;

/// A tagged image of a layout: its manifest's digest, its layers, and how it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSummary {
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    pub layers: Vec<aloft_oci::LayerDescriptor>,
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

/// The summary of the image tagged `tag` in the layout at `layout`.
pub fn read_summary(layout: &Path, tag: &str) -> anyhow::Result<ImageSummary> {
    let image = aloft_oci::layout::Layout::open(layout)
        .and_then(|l| l.image(Some(tag)))
        .with_context(|| format!("reading the image {tag:?} of {}", layout.display()))?;
    let config = image.config;
    Ok(ImageSummary {
        digest: image.manifest_digest.to_string(),
        layers: image.layers,
        entrypoint: config.entrypoint,
        cmd: config.cmd,
        env: config.env,
        working_dir: config.workdir.unwrap_or_default(),
        user: config.user.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_run_settings_of_a_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let image = aloft_oci::layout::testing::image(&[b"one".to_vec()], &["/bin/sh", "-c"]);
        let layout = tmp.path().join("layout");
        aloft_oci::layout::testing::write_layout(&layout, &image, "v1");
        let s = read_summary(&layout, "v1").unwrap();
        assert_eq!(s.digest, image.manifest.to_string());
        assert_eq!(s.entrypoint, vec!["/bin/sh", "-c"]);
        assert_eq!(s.layers.len(), 1);
        assert!(s.size() > 0);
        let err = format!("{:#}", read_summary(&layout, "v2").unwrap_err());
        assert!(err.contains("\"v2\""), "{err}");
    }
}
