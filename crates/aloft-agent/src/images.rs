//! Image resolution: what `config.image` names and how the runtime runs it.
//!
//! For now an image is a directory on the agent's host, named `dir:///abs/path` or `/abs/path`;
//! it becomes the machine's working directory. The optional file `<dir>/.aloft/image.json`
//! (`{"entrypoint": [...], "cmd": [...]}`) carries the image ENTRYPOINT/CMD, as the deploy engine
//! writes it from a Dockerfile. Uploaded, content-addressed images (`<data-dir>/images/<sha256>/`)
//! plug in here as another scheme.

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
}

impl ResolvedImage {
    /// The `image_ref` object of the machine.
    pub fn image_ref(&self) -> ImageRef {
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

/// Resolves `config.image`; the error is a sentence for the API client.
pub fn resolve(image: &str) -> Result<ResolvedImage, String> {
    let image = image.trim();
    if image.is_empty() {
        return Err(
            "config.image is required: a directory such as dir:///srv/app or /srv/app".into(),
        );
    }
    let path = match image.strip_prefix("dir://") {
        Some(rest) => rest,
        None if image.starts_with('/') => image,
        None => {
            return Err(format!(
                "image {image:?} cannot be run here: this agent runs directory images \
                 (dir:///abs/path or an absolute path); registry images are not supported yet"
            ))
        }
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
}
