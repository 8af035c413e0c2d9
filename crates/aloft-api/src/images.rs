//! Uploaded app images (`PUT`/`GET`/`HEAD /v1/apps/{app}/images/{sha256hex}`).

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
