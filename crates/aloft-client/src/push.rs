//! Pushing an OCI image (an image layout directory, as a builder writes it) to the agent:
//! [`Client::push_image`] reads the layout with `aloft_oci`, asks which blobs the agent already
//! has (`HEAD`), sends only the missing ones in [`CHUNK`]-sized `PATCH`es, resuming at the
//! agent's offset when an earlier push was cut off, commits each with a verifying `PUT`, then
//! puts the manifest, which the agent unpacks and records for the app.

use std::path::Path;

use aloft_api::images::{BlobInfo, OciImageInfo, OciImageList, UploadOffset};
use aloft_api::routes;
use aloft_oci::layout::Layout;
use aloft_oci::Digest;
use anyhow::Context;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::client::{is_not_found, status_error, Client};

/// Bytes sent per `PATCH`.
pub const CHUNK: u64 = 8 << 20;
/// `PATCH`es refused for a wrong offset before the push gives up.
const MAX_OFFSET_RETRIES: u32 = 3;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedImage {
    /// `aloft/<app>@sha256:<hex>`: what machines run.
    pub image_ref: String,
    pub manifest_digest: String,
    pub blobs_sent: u64,
    /// Blobs the agent already had.
    pub blobs_skipped: u64,
    /// Bytes of blobs sent (the manifest aside).
    pub bytes_sent: u64,
    pub image: OciImageInfo,
}

/// Progress of a push, for a progress line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushProgress {
    /// The agent has this blob: not sent.
    Skipped { digest: String, size: u64 },
    /// `sent` of `size` bytes of this blob are on the agent.
    Sending {
        digest: String,
        sent: u64,
        size: u64,
    },
    /// The blob is committed.
    Sent { digest: String, size: u64 },
    /// The manifest is being stored and the image unpacked.
    Manifest { digest: String },
}

impl Client {
    /// Pushes the only image of the layout at `layout_dir` to `app`. See the module docs.
    pub async fn push_image(
        &self,
        app: &str,
        layout_dir: &Path,
        on_progress: impl FnMut(PushProgress),
    ) -> anyhow::Result<PushedImage> {
        self.push_image_ref(app, layout_dir, None, on_progress)
            .await
    }

    /// Pushes the image named `reference` (the layout's `org.opencontainers.image.ref.name`;
    /// the only one when `None`).
    pub async fn push_image_ref(
        &self,
        app: &str,
        layout_dir: &Path,
        reference: Option<&str>,
        mut on_progress: impl FnMut(PushProgress),
    ) -> anyhow::Result<PushedImage> {
        let dir = layout_dir.to_path_buf();
        let r = reference.map(str::to_string);
        let (layout, image) = tokio::task::spawn_blocking(move || {
            let layout = Layout::open(&dir)?;
            let image = layout.image(r.as_deref())?;
            Ok::<_, aloft_oci::OciError>((layout, image))
        })
        .await
        .context("reading the image layout")??;
        let (mut sent, mut skipped, mut bytes) = (0, 0, 0);
        for (digest, size) in image.blobs() {
            if self.blob_exists(app, &digest).await? {
                skipped += 1;
                on_progress(PushProgress::Skipped {
                    digest: digest.to_string(),
                    size,
                });
                continue;
            }
            bytes += self
                .upload_blob(app, &layout, &digest, size, &mut on_progress)
                .await?;
            sent += 1;
            on_progress(PushProgress::Sent {
                digest: digest.to_string(),
                size,
            });
        }
        on_progress(PushProgress::Manifest {
            digest: image.manifest_digest.to_string(),
        });
        let info = self
            .put_manifest(app, &image.manifest_digest, image.manifest_bytes.clone())
            .await?;
        Ok(PushedImage {
            image_ref: info.image_ref.clone(),
            manifest_digest: image.manifest_digest.to_string(),
            blobs_sent: sent,
            blobs_skipped: skipped,
            bytes_sent: bytes,
            image: info,
        })
    }

    /// Whether the agent has blob `digest` (`HEAD`).
    pub async fn blob_exists(&self, app: &str, digest: &Digest) -> anyhow::Result<bool> {
        let path = routes::blob(app, digest.as_str());
        match self
            .send(Method::HEAD, &path, self.request(Method::HEAD, &path))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Where the agent's upload of `digest` is.
    pub async fn blob_offset(&self, app: &str, digest: &Digest) -> anyhow::Result<u64> {
        let o: UploadOffset = self
            .json(
                Method::GET,
                &routes::blob_upload(app, digest.as_str()),
                None::<&()>,
            )
            .await?;
        Ok(o.offset)
    }

    /// Sends blob `digest` from the layout, from the agent's offset on, and commits it; returns
    /// the bytes sent.
    async fn upload_blob(
        &self,
        app: &str,
        layout: &Layout,
        digest: &Digest,
        size: u64,
        on_progress: &mut impl FnMut(PushProgress),
    ) -> anyhow::Result<u64> {
        let file_path = layout.blob_path(digest);
        let mut file = tokio::fs::File::open(&file_path)
            .await
            .with_context(|| format!("opening {}", file_path.display()))?;
        let path = routes::blob(app, digest.as_str());
        let mut offset = self.blob_offset(app, digest).await?;
        if offset > size {
            anyhow::bail!(
                "the agent holds {offset} bytes of {digest}, more than its {size}: the layout changed under the push; build again"
            );
        }
        let mut sent = 0;
        let mut retries = 0;
        while offset < size {
            let len = CHUNK.min(size - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            file.read_exact(&mut buf)
                .await
                .with_context(|| format!("reading {}", file_path.display()))?;
            let q = format!("{path}?offset={offset}");
            let rb = self
                .request(Method::PATCH, &q)
                .header("content-type", "application/octet-stream")
                .body(buf);
            match self.send(Method::PATCH, &q, rb).await {
                Ok(_) => {
                    offset += len;
                    sent += len;
                    retries = 0;
                }
                Err(e)
                    if status_error(&e).is_some_and(|s| s.status == StatusCode::CONFLICT)
                        && retries < MAX_OFFSET_RETRIES =>
                {
                    retries += 1;
                    offset = self.blob_offset(app, digest).await?;
                }
                Err(e) => return Err(e),
            }
            on_progress(PushProgress::Sending {
                digest: digest.to_string(),
                sent: offset,
                size,
            });
        }
        let q = format!("{path}?size={size}");
        let rb = self.request(Method::PUT, &q);
        let resp = self.send(Method::PUT, &q, rb).await?;
        let text = resp.text().await?;
        let _: BlobInfo = serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer to PUT {q}: {text}"))?;
        Ok(sent)
    }

    /// Stores a manifest whose blobs the agent has; the agent unpacks the image.
    pub async fn put_manifest(
        &self,
        app: &str,
        digest: &Digest,
        manifest: Vec<u8>,
    ) -> anyhow::Result<OciImageInfo> {
        let path = routes::manifest(app, digest.as_str());
        let rb = self
            .request(Method::PUT, &path)
            .header("content-type", aloft_oci::manifest::OCI_MANIFEST)
            .body(manifest);
        let resp = self.send(Method::PUT, &path, rb).await?;
        let text = resp.text().await?;
        serde_json::from_str(&text)
            .with_context(|| format!("unexpected answer to PUT {path}: {text}"))
    }

    /// The app's OCI images.
    pub async fn oci_images(&self, app: &str) -> anyhow::Result<OciImageList> {
        self.json(Method::GET, &routes::oci_images(app), None::<&()>)
            .await
    }

    /// One OCI image of the app (`digest`: `sha256:<hex>`).
    pub async fn oci_image(&self, app: &str, digest: &str) -> anyhow::Result<OciImageInfo> {
        self.json(Method::GET, &routes::oci_image(app, digest), None::<&()>)
            .await
    }
}
