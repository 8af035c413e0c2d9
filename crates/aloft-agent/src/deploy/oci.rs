//! OCI image uploads, registry-like: blobs by digest (`HEAD` to skip what the agent has, resumable
//! `PATCH` appends, a verifying `PUT` commit), then the manifest, which is verified, unpacked
//! and recorded for the app (`oci_images`). Also the app's image list, the store's counters and
//! garbage collection.
//!
//! Upload bodies stream from the connection to a blocking thread that appends them to
//! `<data-dir>/oci/uploads/<hex>.partial` ([`aloft_oci::ContentStore::append`]): the disk is
//! never touched from an async worker thread, and a body cut off keeps what arrived, so the
//! client resumes at `GET …/upload`'s offset. Same limits as app-directory uploads
//! ([`super::images::MAX_IMAGE_BYTES`] per blob, [`super::images::MAX_UPLOADS`] at once).
//!
//! Garbage collection keeps the images of every machine that is not destroyed and of each
//! app's last `Limits::keep_releases` deploys; it runs after each release and on `POST /v1/images/gc`.

use std::collections::HashSet;

use aloft_api::images::{
    image_ref, BlobInfo, BlobStats, ImageGcReport, OciImageInfo, OciImageList, OciLayerInfo,
    OciProcessInfo,
};
use aloft_api::metadata::SCALE_VERSION_BASE;
use aloft_oci::{Digest, PreparedImage};
use aloft_store::OciImageRow;
use futures_util::StreamExt;

use super::actions::UploadBody;
use super::images::{MAX_IMAGE_BYTES, MAX_UPLOADS};
use super::{decode, Deployer};
use crate::controller::{now_rfc3339, oci_digest, DomainError, DomainResult};
use crate::images::uploaded_digest_hex;

/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A blocking reader over the chunks an async task forwards (`Err` = the body was cut off).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(why)) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        why,
                    ))
                }
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The API form of a prepared image of `app`.
pub fn oci_info(app: &str, p: &PreparedImage, created_at: &str) -> OciImageInfo {
    OciImageInfo {
        digest: p.manifest_digest.to_string(),
        image_ref: image_ref(app, p.manifest_digest.as_str()),
        size: p.size_bytes,
        unpacked_size: p.unpacked_bytes(),
        layers: p
            .layers
            .iter()
            .map(|l| OciLayerInfo {
                digest: l.digest.to_string(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: l.diff_id.to_string(),
                unpacked_size: l.unpacked_size,
            })
            .collect(),
        config: OciProcessInfo {
            entrypoint: p.config.entrypoint.clone(),
            cmd: p.config.cmd.clone(),
            env: p.config.env.clone(),
            workdir: p.config.workdir.clone(),
            user: p.config.user.clone(),
            exposed_ports: p.exposed_ports.clone(),
        },
        created_at: created_at.to_string(),
    }
}

impl Deployer {
    /// `HEAD …/blobs/{digest}`: the size of a stored blob (counted as a skipped upload), or
    /// not found.
    pub async fn blob_size(&self, app: &str, digest: &str) -> DomainResult<u64> {
        self.ctl.get_app(app).await?;
        let d = oci_digest(digest)?;
        let d2 = d.clone();
        self.ctl
            .with_oci(move |s| Ok(s.probe(&d2)))
            .await?
            .ok_or_else(|| DomainError::not_found(format!("blob {d} is not on this agent")))
    }

    /// Where an upload of `digest` resumes.
    pub async fn blob_offset(&self, app: &str, digest: &str) -> DomainResult<u64> {
        self.ctl.get_app(app).await?;
        let d = oci_digest(digest)?;
        self.ctl.with_oci(move |s| s.upload_offset(&d)).await
    }

    /// Appends `body` to the upload of `digest` at `offset` (`None`: wherever it is); returns
    /// the new offset. What arrives is on disk at once, also when the body is cut off.
    pub async fn append_blob(
        &self,
        app: &str,
        digest: &str,
        offset: Option<u64>,
        mut body: UploadBody,
    ) -> DomainResult<u64> {
        self.ctl.get_app(app).await?;
        let d = oci_digest(digest)?;
        let _slot = self.uploads.clone().try_acquire_owned().map_err(|_| {
            DomainError::Busy(format!(
                "{MAX_UPLOADS} image uploads are already in progress on this agent; retry when one has finished"
            ))
        })?;
        let store = self.ctl.oci_store()?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let d2 = d.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let at = match offset {
                Some(o) => o,
                None => store.upload_offset(&d2)?,
            };
            let reader = ChannelReader {
                rx,
                current: bytes::Bytes::new(),
            };
            store.append(&d2, at, reader).map(|end| (at, end))
        });
        let mut received = 0u64;
        let mut too_large = false;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(why) => {
                    let _ = tx.send(Err(why)).await;
                    break;
                }
            };
            received += chunk.len() as u64;
            if offset.unwrap_or(0) + received > MAX_IMAGE_BYTES {
                too_large = true;
                let _ = tx.send(Err("too large".into())).await;
                break;
            }
            if tx.send(Ok(chunk)).await.is_err() {
                break; // the writer stopped (wrong offset, disk error): its error tells
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| DomainError::internal(format!("the upload task failed: {e}")))?;
        if too_large {
            let _ = self.ctl.with_oci(move |s| s.discard_upload(&d)).await;
            return Err(DomainError::TooLarge(format!(
                "the blob is larger than {} MiB, the most this agent accepts",
                MAX_IMAGE_BYTES >> 20
            )));
        }
        let (_, end) = written.map_err(crate::controller::oci_error)?;
        Ok(end)
    }

    /// `PUT …/blobs/{digest}?size=S`: appends the optional last bytes, then verifies and
    /// commits; `(created, info)`.
    pub async fn commit_blob(
        &self,
        app: &str,
        digest: &str,
        size: Option<u64>,
        body: UploadBody,
    ) -> DomainResult<(bool, BlobInfo)> {
        let d = oci_digest(digest)?;
        let mut body = body.peekable();
        if std::pin::Pin::new(&mut body).peek().await.is_some() {
            self.append_blob(app, digest, None, body.boxed()).await?;
        } else {
            self.ctl.get_app(app).await?;
        }
        let d2 = d.clone();
        let c = self.ctl.with_oci(move |s| s.commit(&d2, size)).await?;
        Ok((
            !c.already_present,
            BlobInfo {
                digest: d.to_string(),
                size: c.size,
            },
        ))
    }

    /// `PUT …/manifests/{digest}`: stores, unpacks and records the image for `app`.
    pub async fn put_manifest(
        &self,
        app: &str,
        digest: &str,
        bytes: bytes::Bytes,
    ) -> DomainResult<OciImageInfo> {
        self.ctl.get_app(app).await?;
        let d = oci_digest(digest)?;
        let d2 = d.clone();
        let prepared = self
            .ctl
            .with_oci(move |s| s.put_manifest(&d2, &bytes))
            .await?;
        let row = OciImageRow {
            app: app.to_string(),
            digest: d.to_string(),
            size: prepared.size_bytes,
            created_at: now_rfc3339(),
        };
        let a = app.to_string();
        let stored = self
            .ctl
            .db(move |s| {
                s.write(|tx| {
                    if tx.app(&a)?.is_none() {
                        return Ok(None);
                    }
                    tx.put_oci_image(&row)?;
                    tx.oci_image(&a, &row.digest)
                })
            })
            .await?;
        let Some(row) = stored else {
            return Err(DomainError::app_not_found(app));
        };
        Ok(oci_info(app, &prepared, &row.created_at))
    }

    /// One OCI image of `app`, or not found.
    pub async fn oci_image(&self, app: &str, digest: &str) -> DomainResult<OciImageInfo> {
        self.ctl.get_app(app).await?;
        let d = oci_digest(digest)?;
        let (a, ds) = (app.to_string(), d.to_string());
        let row = self
            .ctl
            .db(move |s| s.read(|tx| tx.oci_image(&a, &ds)))
            .await?;
        let missing =
            || DomainError::not_found(format!("OCI image {d} has not been pushed to app {app:?}"));
        let row = row.ok_or_else(missing)?;
        let d2 = d.clone();
        let p = self.ctl.with_oci(move |s| s.prepared(&d2)).await?;
        Ok(oci_info(app, &p.ok_or_else(missing)?, &row.created_at))
    }

    /// The OCI images of `app`, newest first, with their total size (shared parts once).
    pub async fn oci_images(&self, app: &str) -> DomainResult<OciImageList> {
        self.ctl.get_app(app).await?;
        let a = app.to_string();
        let rows = self
            .ctl
            .db(move |s| s.read(|tx| tx.oci_images(Some(&a))))
            .await?;
        let found = self
            .ctl
            .with_oci(move |s| {
                let mut out = Vec::new();
                for r in rows {
                    let Ok(d) = Digest::parse(&r.digest) else {
                        continue;
                    };
                    if let Some(p) = s.prepared(&d)? {
                        out.push((p, r.created_at));
                    }
                }
                let mut all = Vec::new();
                for d in s.prepared_manifests()? {
                    all.extend(s.prepared(&d)?);
                }
                Ok((out, aloft_oci::usage::usage(&all)))
            })
            .await?;
        let (found, store) = found;
        let prepared: Vec<PreparedImage> = found.iter().map(|(p, _)| p.clone()).collect();
        let usage = aloft_oci::usage::usage(&prepared);
        Ok(OciImageList {
            images: found.iter().map(|(p, at)| oci_info(app, p, at)).collect(),
            total_size: usage.blob_bytes,
            total_unpacked_size: usage.unpacked_bytes,
            store_size: store.blob_bytes,
            store_unpacked_size: store.unpacked_bytes,
        })
    }

    /// The store's counters since the agent started.
    pub fn blob_stats(&self) -> DomainResult<BlobStats> {
        let c = self.ctl.oci_store()?.counters();
        Ok(BlobStats {
            blobs_received: c.blobs_received,
            bytes_received: c.bytes_received,
            blobs_present_skipped: c.blobs_present_skipped,
        })
    }

    /// Manifest digests garbage collection keeps: every live machine's image and each app's
    /// last `Limits::keep_releases` deploys' images.
    async fn gc_roots(&self) -> DomainResult<Vec<Digest>> {
        let keep = self.ctl.limits().keep_releases.max(1);
        let (machines, releases) = self
            .ctl
            .db(move |s| {
                s.read(|tx| {
                    let machines = tx.live_machine_images()?;
                    let mut releases = Vec::new();
                    for app in tx.apps(None)? {
                        let rows = tx.releases(&app.name)?;
                        releases.extend(
                            rows.into_iter()
                                .filter(|r| r.version < SCALE_VERSION_BASE)
                                .take(keep),
                        );
                    }
                    Ok((machines, releases))
                })
            })
            .await?;
        let mut refs = machines;
        for row in &releases {
            if let Ok(r) = decode(row) {
                refs.push(r.spec.image.clone());
            }
        }
        let roots: HashSet<Digest> = refs
            .iter()
            .filter_map(|r| uploaded_digest_hex(r.trim()))
            .filter_map(|hex| Digest::from_hex(hex).ok())
            .collect();
        Ok(roots.into_iter().collect())
    }

    /// Removes the OCI images, blobs and layers nothing keeps, and forgets their records.
    pub async fn collect_images(&self) -> DomainResult<ImageGcReport> {
        let keep = self.gc_roots().await?;
        let (report, left) = self
            .ctl
            .with_oci(move |s| {
                let report = s.gc(&keep)?;
                let left: HashSet<Digest> = s.prepared_manifests()?.into_iter().collect();
                Ok((report, left))
            })
            .await?;
        self.ctl
            .db(move |s| {
                s.write(|tx| {
                    for row in tx.oci_images(None)? {
                        let present = Digest::parse(&row.digest).is_ok_and(|d| left.contains(&d));
                        if !present {
                            tx.delete_oci_image(&row.app, &row.digest)?;
                        }
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(ImageGcReport {
            images_removed: report.images_removed,
            blobs_removed: report.blobs_removed,
            layers_removed: report.layers_removed,
            uploads_removed: report.uploads_removed,
            bytes_freed: report.bytes_freed,
        })
    }
}
