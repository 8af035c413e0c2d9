//! `/v1/tokens` (create, list, revoke API tokens; org tokens only, see `scope`) and
//! `/v1/apps/{app}/events` (who changed the app). Creating or revoking a token bound to an app
//! is an event of that app.

use aloft_api::tokens::CreateTokenRequest;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use axum::Json;

use super::error::HttpResult;
use super::extract::{Body, Params, P};
use super::AppState;
use crate::tokens::Caller;

/// Events listed when no `limit` is given.
const DEFAULT_EVENTS: u64 = 100;

pub async fn create(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<CreateTokenRequest>,
) -> HttpResult<impl IntoResponse> {
    let created = st.tokens.create(req).await?;
    st.tokens
        .record_token_change(&caller, &created.info, "created");
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(State(st): State<AppState>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.tokens.list().await?))
}

pub async fn revoke(State(st): State<AppState>, P(id): P<String>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.tokens.revoke(&id).await?))
}

pub async fn app_events(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
) -> HttpResult<impl IntoResponse> {
    let limit = q.uint("limit", false)?.unwrap_or(DEFAULT_EVENTS);
    let limit = limit.min(crate::tokens::MAX_EVENTS as u64) as usize;
    Ok(Json(st.tokens.app_events(&app, limit).await?))
}
