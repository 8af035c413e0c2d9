//! `/v1/apps/{app}/secrets[/deploy]`: app secrets (`aloft secrets`). Lists show names, digests
//! and status, never values; a change is checked, sealed and written by the controller and the
//! deploy engine (`controller/secrets.rs`, `deploy/secrets.rs`), which also restart the app's
//! started machines unless it is staged.

use aloft_api::secrets::UpdateSecrets;
use axum::extract::{FromRequest, Request, State};
use axum::response::IntoResponse;
use axum::Json;

use crate::deploy::actions::{DeployAction, DeployOutcome};

use super::error::HttpResult;
use super::extract::{Body, P};
use super::AppState;

pub async fn list(State(st): State<AppState>, P(app): P<String>) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.ctl.list_secrets(&app).await?))
}

/// An unknown app is a 404 whatever the body (checked before the body is read).
pub async fn update(
    State(st): State<AppState>,
    P(app): P<String>,
    request: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    let Body(request) = Body::<UpdateSecrets>::from_request(request, &()).await?;
    let action = DeployAction::UpdateSecrets { app, request };
    Ok(st.deploy.execute(action).await?)
}

pub async fn deploy(State(st): State<AppState>, P(app): P<String>) -> HttpResult<DeployOutcome> {
    Ok(st
        .deploy
        .execute(DeployAction::DeploySecrets { app })
        .await?)
}
