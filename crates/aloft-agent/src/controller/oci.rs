//! The controller's view of the OCI image store (`<data-dir>/oci`, an
//! [`aloft_oci::ContentStore`]): which app owns an image (the `oci_images` table: an image runs
//! only in the app it was uploaded to) and the prepared image a launch needs
//! ([`Controller::prepared_image`]). Uploads and listings are the deploy engine's
//! (`crate::deploy::oci`). Every call into the store runs on a blocking thread.

use aloft_oci::{ContentStore, Digest, OciError, PreparedImage};

use super::{Controller, DomainError, DomainResult};
use crate::images::uploaded_digest_hex;

/// An OCI error as the controller's: bad input is the client's (400), a full disk is
/// "insufficient storage", a wrong upload offset a conflict, the rest the agent's own failure.
pub fn oci_error(e: OciError) -> DomainError {
    if e.is_storage_full() {
        return DomainError::insufficient_storage(format!(
            "no space left for the image on the agent ({e}): free disk space on the agent's host, or remove unused images (POST /v1/images/gc)"
        ));
    }
    match e {
        OciError::WrongOffset { .. } => DomainError::WrongOffset(e.to_string()),
        OciError::NotFound(_) => DomainError::not_found(e.to_string()),
        OciError::UploadBusy(_) => DomainError::Busy(e.to_string()),
        e if e.is_bad_input() => DomainError::invalid_request(e.to_string()),
        e => DomainError::internal(e.to_string()),
    }
}

/// A digest from a request path: `sha256:<64 lowercase hex>`.
pub fn oci_digest(s: &str) -> DomainResult<Digest> {
    Digest::parse(s).map_err(|e| DomainError::invalid_request(e.to_string()))
}

impl Controller {
    /// Sets the OCI image store; the first call wins.
    pub fn set_oci_store(&self, store: ContentStore) {
        let _ = self.oci.set(store);
    }

    /// The OCI image store, or an internal error when the agent runs without one.
    pub fn oci_store(&self) -> DomainResult<ContentStore> {
        self.oci
            .get()
            .cloned()
            .ok_or_else(|| DomainError::internal("this agent has no OCI image store"))
    }

    /// Runs `f` over the OCI store on a blocking thread.
    pub async fn with_oci<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ContentStore) -> Result<T, OciError> + Send + 'static,
    ) -> DomainResult<T> {
        let store = self.oci_store()?;
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(oci_error),
            Err(e) => Err(DomainError::internal(format!(
                "OCI image store task failed: {e}"
            ))),
        }
    }

    /// Whether OCI image (manifest) `digest` was uploaded to `app`.
    pub async fn oci_image_owned(&self, app: &str, digest: &Digest) -> DomainResult<bool> {
        let (a, d) = (app.to_string(), digest.to_string());
        Ok(self
            .db(move |s| s.read(|tx| tx.oci_image(&a, &d)))
            .await?
            .is_some())
    }

    /// The prepared OCI image `image_ref` names, when it is `aloft/<app>@sha256:<hex>` and names
    /// an OCI manifest uploaded to `app`; `None` for anything else (a directory image, an app
    /// directory upload, another app's image). Reads one small record, never a layer.
    pub async fn prepared_image(
        &self,
        app: &str,
        image_ref: &str,
    ) -> DomainResult<Option<PreparedImage>> {
        let image_ref = image_ref.trim();
        let Some(hex) = uploaded_digest_hex(image_ref) else {
            return Ok(None);
        };
        if image_ref.split_once('@').map(|(repo, _)| repo) != Some(&format!("aloft/{app}")) {
            return Ok(None);
        }
        let digest = Digest::from_hex(hex).map_err(|e| oci_error(e.into()))?;
        if self.oci.get().is_none() || !self.oci_image_owned(app, &digest).await? {
            return Ok(None);
        }
        self.with_oci(move |s| match s.prepared(&digest)? {
            Some(p) => Ok(Some(p)),
            // Recorded but its layers are gone (removed by hand): unpack again from the blobs.
            None if s.has(&digest) => s.prepare(&digest).map(Some),
            None => Ok(None),
        })
        .await
    }
}
