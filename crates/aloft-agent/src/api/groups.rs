//! `/v1/apps/{app}/process_groups…`: the desired machine count remembered per process group
//! (`scale count` writes it; deploy creates that many machines for a group that has none, so a
//! group scaled to 0 stays at 0), and `POST /v1/apps/{app}/scale`, `scale count` carried out by
//! the agent (`crate::deploy::scale`), and `POST /v1/apps/{app}/scale/guest`, `scale vm|memory`
//! (`crate::deploy::guest`).

use aloft_deploy::wire::{GroupCounts, ScaleCountRequest, ScaleGuestRequest, SetCount};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::deploy::guest::GuestScaled;
use crate::deploy::scale::Scaled;

use super::extract::{Body, P};
use super::AppState;
use crate::error::ApiResult;

pub async fn list(State(st): State<AppState>, P(app): P<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(GroupCounts {
        counts: st.deploy.group_counts(&app).await?,
    }))
}

pub async fn set_count(
    State(st): State<AppState>,
    P((app, group)): P<(String, String)>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    // An unknown app is a 404 whatever the body.
    st.ctl.get_app(&app).await?;
    let Body(req) = Body::<SetCount>::from_request(request, &()).await?;
    Ok(Json(GroupCounts {
        counts: st.deploy.set_group_count(&app, &group, req.count).await?,
    }))
}

/// `201 Release` (the operation runs in the agent); `200 ScalePreview` for `dry_run` or when
/// nothing changes.
pub async fn scale(
    State(st): State<AppState>,
    P(app): P<String>,
    request: Request,
) -> ApiResult<Response> {
    st.ctl.get_app(&app).await?;
    let Body(req) = Body::<ScaleCountRequest>::from_request(request, &()).await?;
    Ok(match st.deploy.scale_count(&app, req).await? {
        Scaled::Release(r) => (StatusCode::CREATED, Json(*r)).into_response(),
        Scaled::Preview(p) => Json(p).into_response(),
    })
}

/// `201 Release` (the operation runs in the agent); `200 GuestPlan` for `dry_run` or when no
/// machine changes.
pub async fn scale_guest(
    State(st): State<AppState>,
    P(app): P<String>,
    request: Request,
) -> ApiResult<Response> {
    st.ctl.get_app(&app).await?;
    let Body(req) = Body::<ScaleGuestRequest>::from_request(request, &()).await?;
    Ok(match st.deploy.scale_guest(&app, req).await? {
        GuestScaled::Release(r) => (StatusCode::CREATED, Json(*r)).into_response(),
        GuestScaled::Plan(p) => Json(*p).into_response(),
    })
}
