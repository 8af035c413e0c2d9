//! Uploaded app images: app directories (`PUT`/`GET`/`HEAD /v1/apps/{app}/images/{sha256hex}`)
//! and OCI images (blobs, manifests, the image list and the store's counters; routes in
//! [`crate::routes`]).

use serde::{Deserialize, Serialize};

/// An uploaded image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    /// The image reference machines get: `aloft/<app>@sha256:<hex>`.
    pub image_ref: String,
}

/// The image reference of an uploaded app image.
pub fn image_ref(app: &str, digest: &str) -> String {
    format!("aloft/{app}@{digest}")
}

/// Where an interrupted blob upload resumes (`GET /v1/apps/{app}/blobs/{digest}/upload`, and
/// the answer to a `PATCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadOffset {
    pub offset: u64,
}

/// A committed blob (`PUT /v1/apps/{app}/blobs/{digest}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub digest: String,
    pub size: u64,
}

/// One layer of an OCI image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciLayerInfo {
    /// The compressed blob's `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// The uncompressed tar's `sha256:<hex>`.
    pub diff_id: String,
    /// Its files once unpacked.
    pub unpacked_size: u64,
}

/// The process defaults of an OCI image's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciProcessInfo {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
}

/// An OCI image stored for an app (`PUT /v1/apps/{app}/manifests/{digest}`, `GET
/// /v1/apps/{app}/oci-images[/{digest}]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciImageInfo {
    /// The manifest's `sha256:<hex>`.
    pub digest: String,
    /// What machines run: `aloft/<app>@sha256:<hex>`.
    pub image_ref: String,
    /// Bytes of its blobs (manifest, config, compressed layers).
    pub size: u64,
    /// Bytes of its layers once unpacked.
    #[serde(default)]
    pub unpacked_size: u64,
    /// Bottom first.
    pub layers: Vec<OciLayerInfo>,
    #[serde(default)]
    pub config: OciProcessInfo,
    #[serde(default)]
    pub created_at: String,
}

/// An app's OCI images, with the disk they use together (shared blobs and layers once).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciImageList {
    pub images: Vec<OciImageInfo>,
    pub total_size: u64,
    pub total_unpacked_size: u64,
    /// Every image of the agent's store (all apps), shared parts once.
    #[serde(default)]
    pub store_size: u64,
    #[serde(default)]
    pub store_unpacked_size: u64,
}

/// The agent's blob counters since it started (`GET /v1/images/stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStats {
    /// Blobs uploaded whole and verified.
    pub blobs_received: u64,
    /// Bytes appended to uploads.
    pub bytes_received: u64,
    /// Blobs a client asked about (or committed) that were already there.
    pub blobs_present_skipped: u64,
}

/// What `POST /v1/images/gc` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageGcReport {
    pub images_removed: u64,
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub uploads_removed: u64,
    pub bytes_freed: u64,
}
