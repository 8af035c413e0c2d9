//! `/v1/apps/{app}/images/{hex}`: app directories uploaded by `aloft deploy` (content-addressed
//! tarballs, see `crate::deploy::images`).

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};

use super::error::HttpResult;
use super::extract::P;
use super::AppState;
use crate::deploy::actions::{DeployAction, DeployOutcome};

/// `201 ImageInfo` stored, `200` already present, `400` digest mismatch or a bad tar, `413` too
/// large, `429` too many uploads at once, `507` no space left. The body is streamed to disk.
pub async fn put(
    State(st): State<AppState>,
    P((app, hex)): P<(String, String)>,
    req: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    crate::deploy::images::check_hex(&hex)?;
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(|e| e.to_string())
        .boxed();
    Ok(st
        .deploy
        .execute(DeployAction::PutImage { app, hex, body })
        .await?)
}

/// `200 ImageInfo` or `404`; the router answers `HEAD` with this handler too (status only).
pub async fn get(
    State(st): State<AppState>,
    P((app, hex)): P<(String, String)>,
) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.deploy.image(&app, &hex).await?))
}
