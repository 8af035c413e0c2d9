//! `/v1/apps/{app}/process_groups…`: the desired machine count remembered per process group
//! (`scale count` writes it; deploy creates that many machines for a group that has none, so a
//! group scaled to 0 stays at 0).

use aloft_deploy::wire::{GroupCounts, SetCount};
use axum::extract::{FromRequest, Request, State};
use axum::response::IntoResponse;
use axum::Json;

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
