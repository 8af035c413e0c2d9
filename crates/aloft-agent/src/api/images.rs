//! `/v1/apps/{app}/images/{hex}`: app directories uploaded by `aloft deploy` (content-addressed
//! tarballs, see `crate::deploy::images`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::extract::P;
use super::AppState;
use crate::error::{ApiError, ApiResult};

/// Largest image upload accepted.
pub const MAX_IMAGE_BYTES: usize = 1 << 30;

/// `201 ImageInfo` stored, `200` already present, `400` digest mismatch or a bad tar.
pub async fn put(
    State(st): State<AppState>,
    P((app, hex)): P<(String, String)>,
    req: Request,
) -> ApiResult<impl IntoResponse> {
    st.ctl.get_app(&app).await?;
    crate::deploy::images::check_hex(&hex)?;
    let bytes = axum::body::to_bytes(req.into_body(), MAX_IMAGE_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!(
                    "cannot read the image (at most {} MiB): {e}",
                    MAX_IMAGE_BYTES >> 20
                ),
            )
        })?;
    let (created, info) = st.deploy.put_image(&app, &hex, bytes).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// `200 ImageInfo` or `404`; the router answers `HEAD` with this handler too (status only).
pub async fn get(
    State(st): State<AppState>,
    P((app, hex)): P<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(st.deploy.image(&app, &hex).await?))
}
