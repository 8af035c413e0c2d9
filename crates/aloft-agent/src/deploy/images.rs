//! The content-addressed image store: `PUT /v1/apps/{app}/images/{hex}` bodies (tarballs of an
//! app directory, as `aloft deploy` packs them) unpacked into `<data-dir>/images/<hex>/`.
//!
//! Safety: the body is streamed to a temporary file next to the store while it is hashed (never
//! held in memory), at most [`MAX_IMAGE_BYTES`] of it, and at most [`MAX_UPLOADS`] uploads at
//! once; its sha256 must equal the digest in the path. The tar is then unpacked into a temporary
//! directory (entries and symlinks confined to it, see [`aloft_deploy::image::unpack_from`]) and
//! renamed into place, so `<hex>/` either does not exist or holds the whole image, even after a
//! kill -9. The store row (app, digest, size) is written after the rename; a directory without a
//! row (crash in between) is reused by the next upload.

use std::io::Write;
use std::path::{Path, PathBuf};

use aloft_api::images::{image_ref, ImageInfo};
use aloft_store::ImageRow;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::controller::now_rfc3339;
use crate::controller::{DomainError, DomainResult};

use super::Deployer;

/// Prefix of temporary unpack directories and upload files inside the images dir.
const TMP_PREFIX: &str = ".tmp-";
/// Largest image upload accepted.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;
/// Uploads received at once; more are refused as busy.
pub const MAX_UPLOADS: usize = 2;

/// Checks a path's `{hex}`: 64 lowercase hex digits.
pub fn check_hex(hex: &str) -> DomainResult<()> {
    aloft_deploy::image::digest_hex(hex)
        .map(drop)
        .map_err(|_| {
            DomainError::invalid_request(format!(
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

/// An upload received into a temporary file, with the sha256 of its bytes.
struct Received {
    file: tempfile::NamedTempFile,
    size: u64,
    digest: String,
}

/// Streams an upload (an HTTP body's data frames; an `Err` means it was cut off) into a
/// temporary file in `root`, hashing it on the way.
async fn receive<C: AsRef<[u8]>, E: std::fmt::Display>(
    root: &Path,
    mut stream: impl Stream<Item = Result<C, E>> + Unpin,
) -> DomainResult<Received> {
    std::fs::create_dir_all(root)
        .map_err(|e| DomainError::internal(format!("cannot create {}: {e}", root.display())))?;
    let file = tempfile::Builder::new()
        .prefix(&format!("{TMP_PREFIX}upload-"))
        .tempfile_in(root)
        .map_err(|e| write_failure(root, e))?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            DomainError::invalid_request(format!("the image upload was cut off: {e}"))
        })?;
        let chunk = chunk.as_ref();
        size += chunk.len() as u64;
        if size > MAX_IMAGE_BYTES {
            return Err(DomainError::TooLarge(format!(
                "the image is larger than {} MiB, the most this agent accepts",
                MAX_IMAGE_BYTES >> 20
            )));
        }
        hasher.update(chunk);
        // Small synchronous writes into the page cache: cheaper than a blocking-pool hop per chunk.
        out.write_all(chunk).map_err(|e| write_failure(root, e))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| write_failure(root, e.into_error()))?;
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Received {
        file,
        size,
        digest: format!("sha256:{hex}"),
    })
}

/// A failed write into the images dir: a full disk is the client's to know (insufficient storage), not an internal error.
fn write_failure(root: &Path, e: std::io::Error) -> DomainError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return DomainError::insufficient_storage(format!(
            "no space left for the image in {}: free disk space on the agent's host, or \
                 remove unused images",
            root.display()
        ));
    }
    DomainError::internal(format!(
        "cannot write the image into {}: {e}",
        root.display()
    ))
}

/// Unpacks the received tar (whose sha256 must be `hex`) into `<root>/<hex>` through a
/// temporary directory.
fn unpack_atomically(root: &Path, hex: &str, tar: &Received) -> DomainResult<PathBuf> {
    let dest = root.join(hex);
    let digest = format!("sha256:{hex}");
    if tar.digest != digest {
        return Err(DomainError::invalid_request(format!(
            "image digest mismatch: the path says {digest}, the uploaded bytes are {}; upload again",
            tar.digest
        )));
    }
    if dest.is_dir() {
        return Ok(dest);
    }
    let io = |what: &str, p: &Path, e: std::io::Error| {
        DomainError::internal(format!("{what} {}: {e}", p.display()))
    };
    let tmp = root.join(format!("{TMP_PREFIX}{hex}-{}", ulid::Ulid::new()));
    let reader = tar
        .file
        .reopen()
        .map_err(|e| io("cannot read the upload", tar.file.path(), e))?;
    let reader = std::io::BufReader::with_capacity(256 * 1024, reader);
    if let Err(e) = aloft_deploy::image::unpack_from(reader, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        if let aloft_deploy::image::ImageError::Io { source, .. } = &e {
            if source.kind() == std::io::ErrorKind::StorageFull {
                return Err(write_failure(
                    root,
                    std::io::Error::from(std::io::ErrorKind::StorageFull),
                ));
            }
        }
        return Err(DomainError::invalid_request(format!(
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
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl Deployer {
    /// An uploaded image of the app, or not found.
    pub async fn image(&self, app: &str, hex: &str) -> DomainResult<ImageInfo> {
        self.ctl.get_app(app).await?;
        check_hex(hex)?;
        let (a, digest) = (app.to_string(), format!("sha256:{hex}"));
        let row = self
            .ctl
            .db(move |s| s.read(|tx| tx.image(&a, &digest)))
            .await?;
        match row {
            Some(row) if self.images_dir.join(hex).is_dir() => Ok(info(app, &row)),
            _ => Err(DomainError::not_found(format!(
                "image sha256:{hex} has not been uploaded to app {app:?}"
            ))),
        }
    }

    /// Stores an uploaded image, streamed from `body`; `(created, info)` — `created` is false
    /// when it was already there (the body is then not read).
    pub async fn put_image<C: AsRef<[u8]>, E: std::fmt::Display>(
        &self,
        app: &str,
        hex: &str,
        body: impl Stream<Item = Result<C, E>> + Unpin,
    ) -> DomainResult<(bool, ImageInfo)> {
        check_hex(hex)?;
        if let Ok(info) = self.image(app, hex).await {
            return Ok((false, info));
        }
        let _slot = self.uploads.clone().try_acquire_owned().map_err(|_| {
            DomainError::Busy(format!(
                    "{MAX_UPLOADS} image uploads are already in progress on this agent; retry when one has finished"
                ),
            )
        })?;
        let root = self.images_dir.clone();
        let received = receive(&root, body).await?;
        let size = received.size;
        let h = hex.to_string();
        let dir = tokio::task::spawn_blocking(move || unpack_atomically(&root, &h, &received))
            .await
            .map_err(|e| DomainError::internal(format!("unpacking the image failed: {e}")))??;
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
            return Err(DomainError::app_not_found(app));
        }
        Ok((true, info(app, &row)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(tar: &[u8]) -> Received {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(tar).unwrap();
        Received {
            file,
            size: tar.len() as u64,
            digest: aloft_deploy::image::digest_of(tar),
        }
    }

    #[test]
    fn unpacks_atomically_and_checks_the_digest() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("app.sh"), "echo hi\n").unwrap();
        let packed = aloft_deploy::image::pack_dir(src.path()).unwrap();
        let hex = packed.digest.strip_prefix("sha256:").unwrap();
        let root = tempfile::tempdir().unwrap();
        let wrong = "0".repeat(64);
        let tar = received(&packed.tar);
        let err = unpack_atomically(root.path(), &wrong, &tar).unwrap_err();
        assert!(err.message().contains("digest mismatch"), "{err}");
        assert!(!root.path().join(&wrong).exists());
        let dir = unpack_atomically(root.path(), hex, &tar).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("app.sh")).unwrap(),
            "echo hi\n"
        );
        // Again: reused, and no temporary directory is left behind.
        unpack_atomically(root.path(), hex, &tar).unwrap();
        let names: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![hex.to_string()]);
        std::fs::create_dir(root.path().join(format!("{TMP_PREFIX}x"))).unwrap();
        std::fs::write(root.path().join(format!("{TMP_PREFIX}upload-y")), "").unwrap();
        clean_temporaries(root.path());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        assert!(check_hex("ABC").is_err());
        assert!(check_hex(hex).is_ok());
    }

    #[tokio::test]
    async fn uploads_stream_to_disk_and_are_hashed_on_the_way() {
        let root = tempfile::tempdir().unwrap();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            vec![Ok(b"hello ".to_vec()), Ok(b"world".to_vec())];
        let body = futures_util::stream::iter(chunks);
        let got = receive(root.path(), body).await.unwrap();
        assert_eq!(got.size, 11);
        assert_eq!(got.digest, aloft_deploy::image::digest_of(b"hello world"));
        assert_eq!(std::fs::read(got.file.path()).unwrap(), b"hello world");
        let path = got.file.path().to_path_buf();
        drop(got);
        assert!(!path.exists(), "the temporary file goes with the upload");
    }
}
