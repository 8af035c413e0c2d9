//! `/v1/apps/{app}/images/{hex}`: app directories uploaded by `aloft deploy` (content-addressed
//! tarballs, see `crate::deploy::images`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::extract::P;
use super::AppState;
use crate::error::ApiResult;

/// `201 ImageInfo` stored, `200` already present, `400` digest mismatch or a bad tar, `413` too
/// large, `429` too many uploads at once, `507` no space left. The body is streamed to disk.
pub async fn put(
    State(st): State<AppState>,
    P((app, hex)): P<(String, String)>,
    req: Request,
) -> ApiResult<impl IntoResponse> {
    st.ctl.get_app(&app).await?;
    crate::deploy::images::check_hex(&hex)?;
    let (created, info) = st.deploy.put_image(&app, &hex, req.into_body()).await?;
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
