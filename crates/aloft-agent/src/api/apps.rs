//! `/v1/apps` handlers.

use aloft_api::{CreateAppRequest, ListAppsResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::extract::{Body, Params, P};
use super::AppState;
use crate::error::ApiResult;

pub async fn create(
    State(st): State<AppState>,
    Body(req): Body<CreateAppRequest>,
) -> ApiResult<impl IntoResponse> {
    let app = st.ctl.create_app(req).await?;
    Ok((StatusCode::CREATED, Json(app)))
}

pub async fn list(State(st): State<AppState>, q: Params) -> ApiResult<impl IntoResponse> {
    let org = q
        .get("org_slug")
        .map(str::to_string)
        .filter(|s| !s.is_empty());
    let apps = st.ctl.list_apps(org).await?;
    Ok(Json(ListAppsResponse {
        total_apps: apps.len() as u64,
        apps,
    }))
}

pub async fn get(State(st): State<AppState>, P(app): P<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(st.ctl.get_app(&app).await?))
}

pub async fn delete(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
) -> ApiResult<impl IntoResponse> {
    let force = q.bool("force", false)?;
    st.ctl.delete_app(&app, force).await?;
    Ok(StatusCode::ACCEPTED)
}
