//! OCI image routes (`/v1/apps/{app}/blobs/…`, `/manifests/…`, `/oci-images…`,
//! `/v1/images/…`): parsed here into the deploy engine's actions and queries
//! (`crate::deploy::oci`); bodies stream, never held whole (a manifest aside, at most
//! `MAX_MANIFEST_BYTES`).

use aloft_api::images::UploadOffset;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};

use super::error::{HttpError, HttpResult};
use super::extract::{Params, P};
use super::AppState;
use crate::deploy::actions::{DeployAction, DeployOutcome, UploadBody};
use crate::deploy::oci::MAX_MANIFEST_BYTES;

fn stream(req: Request) -> UploadBody {
    req.into_body()
        .into_data_stream()
        .map_err(|e| e.to_string())
        .boxed()
}

/// `HEAD …/blobs/{digest}`: `200` with `Content-Length` when stored, `404` otherwise.
pub async fn head_blob(
    State(st): State<AppState>,
    P((app, digest)): P<(String, String)>,
) -> HttpResult<impl IntoResponse> {
    let size = st.deploy.blob_size(&app, &digest).await?;
    Ok((StatusCode::OK, [(CONTENT_LENGTH, size.to_string())]))
}

/// `GET …/blobs/{digest}/upload`: `200 UploadOffset`.
pub async fn upload_offset(
    State(st): State<AppState>,
    P((app, digest)): P<(String, String)>,
) -> HttpResult<Json<UploadOffset>> {
    let offset = st.deploy.blob_offset(&app, &digest).await?;
    Ok(Json(UploadOffset { offset }))
}

/// `PATCH …/blobs/{digest}?offset=N`: `202 UploadOffset`, `409` at a wrong offset.
pub async fn patch_blob(
    State(st): State<AppState>,
    P((app, digest)): P<(String, String)>,
    q: Params,
    req: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    let offset = q.uint("offset", false)?.ok_or_else(|| {
        HttpError::bad_request(
            "query parameter offset is required: where the bytes go (GET …/upload tells)",
        )
    })?;
    let body = stream(req);
    Ok(st
        .deploy
        .execute(DeployAction::AppendBlob {
            app,
            digest,
            offset,
            body,
        })
        .await?)
}

/// `PUT …/blobs/{digest}?size=S`: `201 BlobInfo` committed, `200` already there, `400` mismatch.
pub async fn put_blob(
    State(st): State<AppState>,
    P((app, digest)): P<(String, String)>,
    q: Params,
    req: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    let size = q.uint("size", false)?;
    let body = stream(req);
    Ok(st
        .deploy
        .execute(DeployAction::CommitBlob {
            app,
            digest,
            size,
            body,
        })
        .await?)
}

/// `PUT …/manifests/{digest}`: `201 OciImageInfo`; `400` bad or missing blobs.
pub async fn put_manifest(
    State(st): State<AppState>,
    P((app, digest)): P<(String, String)>,
    req: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    let body = axum::body::to_bytes(req.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| {
            HttpError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!(
                    "the manifest could not be read ({e}); at most {} MiB is accepted",
                    MAX_MANIFEST_BYTES >> 20
                ),
            )
        })?;
    Ok(st
        .deploy
        .execute(DeployAction::PutManifest { app, digest, body })
        .await?)
}

/// `GET …/oci-images`: `200 OciImageList`.
pub async fn list(State(st): State<AppState>, P(app): P<String>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.deploy.oci_images(&app).await?))
}

/// `GET …/oci-images/{digest}`: `200 OciImageInfo` / `404`.
pub async fn show(
    State(st): State<AppState>,
    P((app, digest)): P<(String, String)>,
) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.deploy.oci_image(&app, &digest).await?))
}

/// `GET /v1/images/stats`: `200 BlobStats`.
pub async fn stats(State(st): State<AppState>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.deploy.blob_stats()?))
}

/// `POST /v1/images/gc`: `200 ImageGcReport`.
pub async fn gc(State(st): State<AppState>) -> HttpResult<DeployOutcome> {
    Ok(st.deploy.execute(DeployAction::CollectImages).await?)
}
