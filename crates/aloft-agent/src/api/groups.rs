//! `/v1/apps/{app}/process_groups…`: the desired machine count remembered per process group
//! (`scale count` writes it; deploy creates that many machines for a group that has none, so a
//! group scaled to 0 stays at 0), and `POST /v1/apps/{app}/scale`, `scale count` carried out by
//! the agent (`crate::deploy::scale`), and `POST /v1/apps/{app}/scale/guest`, `scale vm|memory`
//! (`crate::deploy::guest`).

use aloft_api::groups::{GroupCounts, ScaleCountRequest, ScaleGuestRequest, SetCount};
use axum::extract::{FromRequest, Request, State};
use axum::response::IntoResponse;
use axum::Json;

use crate::deploy::actions::{DeployAction, DeployOutcome};

use super::error::HttpResult;
use super::extract::{Body, P};
use super::AppState;

pub async fn list(State(st): State<AppState>, P(app): P<String>) -> HttpResult<impl IntoResponse> {
    Ok(Json(GroupCounts {
        counts: st.deploy.group_counts(&app).await?,
    }))
}

pub async fn set_count(
    State(st): State<AppState>,
    P((app, group)): P<(String, String)>,
    request: Request,
) -> HttpResult<DeployOutcome> {
    // An unknown app is a 404 whatever the body.
    st.ctl.get_app(&app).await?;
    let Body(SetCount { count }) = Body::<SetCount>::from_request(request, &()).await?;
    let action = DeployAction::SetGroupCount { app, group, count };
    Ok(st.deploy.execute(action).await?)
}

/// `201 Release` (the operation runs in the agent); `200 ScalePreview` for `dry_run` or when
/// nothing changes.
pub async fn scale(
    State(st): State<AppState>,
    P(app): P<String>,
    request: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    let Body(request) = Body::<ScaleCountRequest>::from_request(request, &()).await?;
    let action = DeployAction::ScaleCount { app, request };
    Ok(st.deploy.execute(action).await?)
}

/// `201 Release` (the operation runs in the agent); `200 GuestPlan` for `dry_run` or when no
/// machine changes.
pub async fn scale_guest(
    State(st): State<AppState>,
    P(app): P<String>,
    request: Request,
) -> HttpResult<DeployOutcome> {
    st.ctl.get_app(&app).await?;
    let Body(request) = Body::<ScaleGuestRequest>::from_request(request, &()).await?;
    let action = DeployAction::ScaleGuest { app, request };
    Ok(st.deploy.execute(action).await?)
}
