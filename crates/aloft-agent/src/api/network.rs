//! `/v1/apps/{app}/ips` and `/v1/apps/{app}/dns`: the app's addresses and DNS lookups as its
//! machines see them.

use aloft_api::network::AllocateIpRequest;
use axum::extract::State;
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

pub async fn allocate_ip(
    State(st): State<AppState>,
    P(app): P<String>,
    Body(req): Body<AllocateIpRequest>,
) -> HttpResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(st.ctl.allocate_ip(&app, req).await?),
    ))
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
    let name = q.get("name").unwrap_or_default().to_string();
    let rtype = q.get("type").unwrap_or("AAAA").to_string();
    Ok(Json(st.dns.lookup(&st.ctl, &app, &name, &rtype).await?))
}
