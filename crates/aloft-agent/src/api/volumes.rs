//! `/v1/apps/{app}/volumes[/{id}[/extend|/snapshots]]`: the Machines API volume routes
//! (`aloft volumes`). Bodies are [`aloft_api::volumes`]; the controller does the work
//! (`controller/volumes.rs`). Every answer is `200`, as Fly's.

use aloft_api::volumes::{CreateVolumeRequest, ExtendVolumeRequest, UpdateVolumeRequest};
use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::HttpResult;
use super::extract::{Body, P};
use super::AppState;

pub async fn list(State(st): State<AppState>, P(app): P<String>) -> HttpResult<Response> {
    Ok(Json(st.ctl.list_volumes(&app).await?).into_response())
}

/// An unknown app is a 404 whatever the body (checked before the body is read).
pub async fn create(
    State(st): State<AppState>,
    P(app): P<String>,
    req: Request,
) -> HttpResult<Response> {
    st.ctl.get_app(&app).await?;
    let Body(body) = Body::<CreateVolumeRequest>::from_request(req, &st).await?;
    Ok(Json(st.ctl.create_volume(&app, body).await?).into_response())
}

pub async fn get(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
) -> HttpResult<Response> {
    Ok(Json(st.ctl.get_volume(&app, &id).await?).into_response())
}

/// An unknown app or volume is a 404 whatever the body (checked before the body is read).
pub async fn update(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    req: Request,
) -> HttpResult<Response> {
    st.ctl.get_volume(&app, &id).await?;
    let Body(body) = Body::<UpdateVolumeRequest>::from_request(req, &st).await?;
    Ok(Json(st.ctl.update_volume(&app, &id, body).await?).into_response())
}

pub async fn destroy(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
) -> HttpResult<Response> {
    Ok(Json(st.ctl.destroy_volume(&app, &id).await?).into_response())
}

/// An unknown app or volume is a 404 whatever the body.
pub async fn extend(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    req: Request,
) -> HttpResult<Response> {
    st.ctl.get_volume(&app, &id).await?;
    let Body(body) = Body::<ExtendVolumeRequest>::from_request(req, &st).await?;
    Ok(Json(st.ctl.extend_volume(&app, &id, body.size_gb).await?).into_response())
}

pub async fn snapshots(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
) -> HttpResult<Response> {
    Ok(Json(st.ctl.list_volume_snapshots(&app, &id).await?).into_response())
}

pub async fn snapshot(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
) -> HttpResult<Response> {
    Ok(Json(st.ctl.create_volume_snapshot(&app, &id).await?).into_response())
}
