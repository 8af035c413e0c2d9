//! `/v1/apps/{app}/ips` and `/v1/apps/{app}/dns`: the app's addresses and DNS lookups as its
//! machines see them.

use aloft_api::network::AllocateIpRequest;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

use super::error::HttpResult;
use super::extract::{Body, Params, P};
use super::AppState;

pub async fn list_ips(
    State(st): State<AppState>,
    P(app): P<String>,
) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.ctl.list_ips(&app).await?))
}

/// An unknown app is a 404 whatever the body (checked before the body is read).
pub async fn allocate_ip(
    State(st): State<AppState>,
    P(app): P<String>,
    req: Request,
) -> HttpResult<impl IntoResponse> {
    st.ctl.get_app(&app).await?;
    let Body(body) = Body::<AllocateIpRequest>::from_request(req, &st).await?;
    let ip = st.ctl.allocate_ip(&app, body).await?;
    Ok((StatusCode::CREATED, Json(ip)))
}

pub async fn release_ip(
    State(st): State<AppState>,
    P((app, address)): P<(String, String)>,
) -> HttpResult<impl IntoResponse> {
    Ok(Json(st.ctl.release_ip(&app, &address).await?))
}

pub async fn dns(
    State(st): State<AppState>,
    P(app): P<String>,
    q: Params,
) -> HttpResult<impl IntoResponse> {
    st.ctl.get_app(&app).await?;
    let name = q.get("name").unwrap_or_default().to_string();
    let rtype = q.get("type").unwrap_or("AAAA").to_string();
    Ok(Json(st.dns.lookup(&st.ctl, &app, &name, &rtype).await?))
}
