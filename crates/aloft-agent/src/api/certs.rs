//! `/v1/apps/{app}/certificates[/{hostname}]`: custom hostnames of an app and their
//! certificates (`aloft certs`). The controller checks and stores them
//! (`controller/certs.rs`); after a change the proxy is brought in step
//! (`Routing::reload_certificates`) before the answer leaves, so the next request or TLS
//! handshake already sees it. An added `acme` hostname wakes the issuance task (`crate::acme`).

use aloft_api::certs::{AddCertificate, SOURCE_ACME};
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{HttpError, HttpResult};
use super::extract::{Body, P};
use super::AppState;
use crate::controller::certs::Added;

/// Tells the proxy (when there is one) about a change of the stored certificates.
async fn sync_proxy(st: &AppState) -> HttpResult<()> {
    match &st.routing {
        Some(r) => r.reload_certificates().await.map_err(HttpError::internal),
        None => Ok(()),
    }
}

pub async fn list(State(st): State<AppState>, P(app): P<String>) -> HttpResult<Response> {
    Ok(Json(st.ctl.list_certificates(&app).await?).into_response())
}

/// An unknown app is a 404 whatever the body (checked before the body is read).
pub async fn add(
    State(st): State<AppState>,
    P(app): P<String>,
    req: Request,
) -> HttpResult<Response> {
    st.ctl.get_app(&app).await?;
    let Body(body) = Body::<AddCertificate>::from_request(req, &st).await?;
    let (cert, added) = st.ctl.add_certificate(&app, body).await?;
    sync_proxy(&st).await?;
    if let (Some(acme), SOURCE_ACME) = (&st.acme, cert.source.as_str()) {
        acme.hostname_added(&cert.hostname);
    }
    let status = match added {
        Added::Created => StatusCode::CREATED,
        Added::Replaced => StatusCode::OK,
    };
    Ok((status, Json(cert)).into_response())
}

pub async fn get(
    State(st): State<AppState>,
    P((app, hostname)): P<(String, String)>,
) -> HttpResult<Response> {
    Ok(Json(st.ctl.get_certificate(&app, &hostname).await?).into_response())
}

pub async fn remove(
    State(st): State<AppState>,
    P((app, hostname)): P<(String, String)>,
) -> HttpResult<Response> {
    let cert = st.ctl.remove_certificate(&app, &hostname).await?;
    sync_proxy(&st).await?;
    Ok(Json(cert).into_response())
}
