//! The content-addressed image store: `PUT /v1/apps/{app}/images/{hex}` bodies (tarballs of an
//! app directory, as `aloft deploy` packs them) unpacked into `<data-dir>/images/<hex>/`.
//!
//! Safety: the sha256 of the uploaded bytes must equal the digest in the path; the tar is
//! unpacked into a temporary directory next to the store (entries confined to it, see
//! [`aloft_deploy::image::unpack`]) and renamed into place, so `<hex>/` either does not exist or
//! holds the whole image, even after a kill -9. The store row (app, digest, size) is written
//! after the rename; a directory without a row (crash in between) is reused by the next upload.

use std::path::{Path, PathBuf};

use aloft_deploy::wire::{image_ref, ImageInfo};
use aloft_store::ImageRow;

use crate::controller::now_rfc3339;
use crate::error::{ApiError, ApiResult};

use super::Deployer;

/// Prefix of temporary unpack directories inside the images dir.
const TMP_PREFIX: &str = ".tmp-";

/// Checks a path's `{hex}`: 64 lowercase hex digits.
pub fn check_hex(hex: &str) -> ApiResult<()> {
    aloft_deploy::image::digest_hex(hex)
        .map(drop)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "image digest {hex:?} is not 64 lowercase hex digits (the sha256 of the tar, without `sha256:`)"
            ))
        })
}

fn info(app: &str, row: &ImageRow) -> ImageInfo {
    ImageInfo {
        digest: row.digest.clone(),
        size: row.size,
        image_ref: image_ref(app, &row.digest),
    }
}

/// Unpacks `tar` (whose sha256 must be `hex`) into `<root>/<hex>` through a temporary directory.
fn unpack_atomically(root: &Path, hex: &str, tar: &[u8]) -> ApiResult<PathBuf> {
    let dest = root.join(hex);
    let digest = format!("sha256:{hex}");
    let actual = aloft_deploy::image::digest_of(tar);
    if actual != digest {
        return Err(ApiError::bad_request(format!(
            "image digest mismatch: the path says {digest}, the uploaded bytes are {actual}; upload again"
        )));
    }
    if dest.is_dir() {
        return Ok(dest);
    }
    let io = |what: &str, p: &Path, e: std::io::Error| {
        ApiError::internal(format!("{what} {}: {e}", p.display()))
    };
    std::fs::create_dir_all(root).map_err(|e| io("cannot create", root, e))?;
    let tmp = root.join(format!("{TMP_PREFIX}{hex}-{}", ulid::Ulid::new()));
    if let Err(e) = aloft_deploy::image::unpack(tar, &digest, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(ApiError::bad_request(format!(
            "the uploaded image cannot be unpacked: {e}"
        )));
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        // Another upload of the same digest won the race: its directory is identical.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(io("cannot move the unpacked image to", &dest, e))
        }
    }
}

/// Removes temporary unpack directories left by an agent killed during an upload.
pub fn clean_temporaries(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Deployer {
    /// An uploaded image of the app, or 404.
    pub async fn image(&self, app: &str, hex: &str) -> ApiResult<ImageInfo> {
        self.ctl.get_app(app).await?;
        check_hex(hex)?;
        let (a, digest) = (app.to_string(), format!("sha256:{hex}"));
        let row = self
            .ctl
            .db(move |s| s.read(|tx| tx.image(&a, &digest)))
            .await?;
        match row {
            Some(row) if self.images_dir.join(hex).is_dir() => Ok(info(app, &row)),
            _ => Err(ApiError::not_found(format!(
                "image sha256:{hex} has not been uploaded to app {app:?}"
            ))),
        }
    }

    /// Stores an uploaded image; `(created, info)` — `created` is false when it was already there.
    pub async fn put_image(
        &self,
        app: &str,
        hex: &str,
        tar: axum::body::Bytes,
    ) -> ApiResult<(bool, ImageInfo)> {
        check_hex(hex)?;
        if self.image(app, hex).await.is_ok() {
            return Ok((false, self.image(app, hex).await?));
        }
        let root = self.images_dir.clone();
        let h = hex.to_string();
        let size = tar.len() as u64;
        let dir = tokio::task::spawn_blocking(move || unpack_atomically(&root, &h, &tar))
            .await
            .map_err(|e| ApiError::internal(format!("unpacking the image failed: {e}")))??;
        let row = ImageRow {
            app: app.to_string(),
            digest: format!("sha256:{hex}"),
            size,
            path: dir.display().to_string(),
            created_at: now_rfc3339(),
        };
        let r = row.clone();
        let a = app.to_string();
        let stored = self
            .ctl
            .db(move |s| {
                s.write(|tx| {
                    if tx.app(&a)?.is_none() {
                        return Ok(false);
                    }
                    tx.put_image(&r)?;
                    Ok(true)
                })
            })
            .await?;
        if !stored {
            return Err(ApiError::app_not_found(app));
        }
        Ok((true, info(app, &row)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_atomically_and_checks_the_digest() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("app.sh"), "echo hi\n").unwrap();
        let packed = aloft_deploy::image::pack_dir(src.path()).unwrap();
        let hex = packed.digest.strip_prefix("sha256:").unwrap();
        let root = tempfile::tempdir().unwrap();
        let wrong = "0".repeat(64);
        let err = unpack_atomically(root.path(), &wrong, &packed.tar).unwrap_err();
        assert!(err.message.contains("digest mismatch"), "{}", err.message);
        assert!(!root.path().join(&wrong).exists());
        let dir = unpack_atomically(root.path(), hex, &packed.tar).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("app.sh")).unwrap(),
            "echo hi\n"
        );
        // Again: reused, and no temporary directory is left behind.
        unpack_atomically(root.path(), hex, &packed.tar).unwrap();
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![hex.to_string()]);
        std::fs::create_dir(root.path().join(format!("{TMP_PREFIX}x"))).unwrap();
        clean_temporaries(root.path());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        assert!(check_hex("ABC").is_err());
        assert!(check_hex(hex).is_ok());
    }
}
