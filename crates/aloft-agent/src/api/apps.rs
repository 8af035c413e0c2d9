//! `/v1/apps` handlers.

use aloft_api::{CreateAppRequest, ListAppsResponse};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;

use super::error::HttpResult;
use super::extract::{Body, Params, P};
use super::AppState;
use crate::controller::actions::{Action, Outcome};

pub async fn create(
    State(st): State<AppState>,
    Body(req): Body<CreateAppRequest>,
) -> HttpResult<Outcome> {
    Ok(st.ctl.execute(Action::CreateApp(req)).await?)
}

pub async fn list(State(st): State<AppState>, q: Params) -> HttpResult<impl IntoResponse> {
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

pub async fn get(State(st): State<AppState>, P(app): P<String>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.ctl.get_app(&app).await?))
}

pub async fn delete(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
) -> HttpResult<Outcome> {
    let force = q.bool("force", false)?;
    Ok(st.ctl.execute(Action::DeleteApp { app, force }).await?)
}
