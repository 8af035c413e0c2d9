//! Image resolution: what `config.image` names and how the runtime runs it.
//!
//! An image is a directory on the agent's host that becomes the machine's working directory:
//! * `dir:///abs/path` or `/abs/path` — a directory as it is;
//! * `aloft/<app>@sha256:<hex>` — an app directory uploaded by `aloft deploy` and unpacked into
//!   the content-addressed store `<data-dir>/images/<hex>/` (see [`crate::deploy::images`]).
//!
//! The optional file `<dir>/.aloft/image.json` (`{"entrypoint": [...], "cmd": [...]}`) carries
//! the image ENTRYPOINT/CMD of a directory image that has one (the CLI no longer writes it: an
//! app with a Dockerfile is built into an OCI image).

use std::path::{Path, PathBuf};

use aloft_api::ImageRef;

/// An image ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    pub dir: PathBuf,
    /// The reference shown to the machine as `FLY_IMAGE_REF`.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// An OCI image: the machine runs as a container of it (`dir` is then its top layer).
    pub container: Option<aloft_runtime::ContainerImage>,
}

impl ResolvedImage {
    /// An OCI image from the agent's store: the machine runs as a container of it.
    pub fn container(reference: &str, image: aloft_oci::PreparedImage) -> ResolvedImage {
        let config = image.config;
        ResolvedImage {
            dir: image.layer_dirs.last().cloned().unwrap_or_default(),
            reference: reference.trim().to_string(),
            entrypoint: config.entrypoint,
            cmd: config.cmd,
            container: Some(aloft_runtime::ContainerImage {
                layers: image.layer_dirs,
                env: config.env,
                workdir: config.workdir.unwrap_or_default(),
                user: config.user.unwrap_or_default(),
            }),
        }
    }

    /// The `image_ref` object of the machine.
    pub fn image_ref(&self) -> ImageRef {
        if let Some((repository, digest)) = self.reference.split_once('@') {
            // As Fly's: the registry, then the app's repository in it.
            return ImageRef {
                registry: "aloft".into(),
                repository: repository
                    .strip_prefix("aloft/")
                    .unwrap_or(repository)
                    .to_string(),
                tag: String::new(),
                digest: digest.to_string(),
                labels: Default::default(),
            };
        }
        ImageRef {
            registry: "dir".into(),
            repository: self.dir.display().to_string(),
            tag: String::new(),
            digest: String::new(),
            labels: Default::default(),
        }
    }
}

/// Image metadata file inside an image directory.
#[derive(Debug, Default, serde::Deserialize)]
struct ImageMeta {
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
}

/// Path of the image metadata file inside an image directory.
pub const IMAGE_META: &str = ".aloft/image.json";

/// The digest hex of an uploaded-image reference `aloft/<app>@sha256:<hex>`, if `image` is one.
pub fn uploaded_digest_hex(image: &str) -> Option<&str> {
    let (repo, digest) = image.split_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    let well_formed = repo.starts_with("aloft/")
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then_some(hex)
}

/// Resolves `config.image` without an image store (directory images only).
pub fn resolve(image: &str) -> Result<ResolvedImage, String> {
    resolve_in(image, None)
}

/// Resolves `config.image`; uploaded images are looked up under `images_root`
/// (`<data-dir>/images`). The error is a sentence for the API client.
pub fn resolve_in(image: &str, images_root: Option<&Path>) -> Result<ResolvedImage, String> {
    let image = image.trim();
    if image.is_empty() {
        return Err(
            "config.image is required: a directory such as dir:///srv/app or /srv/app".into(),
        );
    }
    let uploaded;
    let path = match image.strip_prefix("dir://") {
        Some(rest) => rest,
        None if image.starts_with('/') => image,
        None => match (uploaded_digest_hex(image), images_root) {
            (Some(hex), Some(root)) => {
                uploaded = root.join(hex);
                if !uploaded.is_dir() {
                    return Err(format!(
                        "image {image:?} has not been uploaded to this agent: deploy again (aloft \
                         deploy uploads the app directory), or PUT it to /v1/apps/<app>/images/{hex}"
                    ));
                }
                uploaded.to_str().unwrap_or_default()
            }
            _ => {
                return Err(format!(
                    "image {image:?} cannot be run here: this agent runs directory images \
                     (dir:///abs/path or an absolute path) and images uploaded by `aloft deploy` \
                     (aloft/<app>@sha256:<hex>); registry images are not supported yet"
                ))
            }
        },
    };
    let dir = Path::new(path);
    if !dir.is_absolute() {
        return Err(format!(
            "image {image:?}: the directory path must be absolute"
        ));
    }
    if !dir.is_dir() {
        return Err(format!(
            "image {image:?}: directory {} does not exist on the agent's host",
            dir.display()
        ));
    }
    let meta_path = dir.join(IMAGE_META);
    let meta = match std::fs::read(&meta_path) {
        Ok(bytes) => serde_json::from_slice::<ImageMeta>(&bytes).map_err(|e| {
            format!(
                "image {image:?}: {} is not valid image metadata: {e}",
                meta_path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ImageMeta::default(),
        Err(e) => {
            return Err(format!(
                "image {image:?}: cannot read {}: {e}",
                meta_path.display()
            ))
        }
    };
    Ok(ResolvedImage {
        dir: dir.to_path_buf(),
        reference: image.to_string(),
        entrypoint: meta.entrypoint,
        cmd: meta.cmd,
        container: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().display().to_string();
        let r = resolve(&format!("dir://{p}")).unwrap();
        assert_eq!(r.dir, tmp.path());
        assert!(r.cmd.is_empty());
        std::fs::create_dir(tmp.path().join(".aloft")).unwrap();
        std::fs::write(tmp.path().join(IMAGE_META), r#"{"cmd":["sleep","9"]}"#).unwrap();
        assert_eq!(resolve(&p).unwrap().cmd, vec!["sleep", "9"]);
        std::fs::write(tmp.path().join(IMAGE_META), "{").unwrap();
        assert!(resolve(&p)
            .unwrap_err()
            .contains("not valid image metadata"));
        assert!(resolve("nginx:latest")
            .unwrap_err()
            .contains("directory images"));
        assert!(resolve("/definitely/not/here")
            .unwrap_err()
            .contains("does not exist"));
        assert!(resolve("").is_err());
    }

    #[test]
    fn uploaded_images_resolve_under_the_store() {
        let root = tempfile::tempdir().unwrap();
        let hex = "ab".repeat(32);
        let image = format!("aloft/app@sha256:{hex}");
        assert_eq!(uploaded_digest_hex(&image), Some(hex.as_str()));
        assert_eq!(uploaded_digest_hex("aloft/app@sha256:xyz"), None);
        assert_eq!(uploaded_digest_hex("nginx@sha256:ab"), None);
        let err = resolve_in(&image, Some(root.path())).unwrap_err();
        assert!(err.contains("has not been uploaded"), "{err}");
        assert!(resolve(&image).unwrap_err().contains("cannot be run here"));
        std::fs::create_dir_all(root.path().join(&hex).join(".aloft")).unwrap();
        std::fs::write(
            root.path().join(&hex).join(IMAGE_META),
            r#"{"entrypoint":["/bin/sh","entry.sh"]}"#,
        )
        .unwrap();
        let r = resolve_in(&image, Some(root.path())).unwrap();
        assert_eq!(r.dir, root.path().join(&hex));
        assert_eq!(r.entrypoint, vec!["/bin/sh", "entry.sh"]);
        assert_eq!(r.reference, image);
        let iref = r.image_ref();
        assert_eq!(
            (iref.registry.as_str(), iref.repository.as_str()),
            ("aloft", "app")
        );
        assert_eq!(iref.digest, format!("sha256:{hex}"));
    }
}
