//! Lease handlers, answering in the `{status, data}` envelope.

use aloft_api::{Lease, LeaseEnvelope};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::extract::{nonce, OptBody, Params, P};
use super::AppState;
use crate::controller::actions::AcquireLease;
use crate::error::{ApiError, LeaseError};

/// Default lease length when the request gives none, in seconds.
const DEFAULT_TTL: u64 = 30;

#[derive(serde::Deserialize)]
pub struct LeaseBody {
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

fn ok<T: serde::Serialize>(code: StatusCode, data: T) -> impl IntoResponse {
    (
        code,
        Json(LeaseEnvelope {
            status: "success".into(),
            data: Some(data),
            message: None,
            code: None,
        }),
    )
}

pub async fn acquire(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    q: Params,
    headers: HeaderMap,
    body: Result<OptBody<LeaseBody>, ApiError>,
) -> Result<impl IntoResponse, LeaseError> {
    let OptBody(body) = body?;
    let ttl = match body.as_ref().and_then(|b| b.ttl) {
        Some(t) => t,
        None => q.uint("ttl", true)?.unwrap_or(DEFAULT_TTL),
    };
    let description = body.and_then(|b| b.description).unwrap_or_default();
    let lease: Lease = st
        .ctl
        .acquire_lease(
            &app,
            &id,
            AcquireLease {
                ttl,
                description,
                nonce: nonce(&headers),
            },
        )
        .await?;
    Ok(ok(StatusCode::CREATED, lease))
}

pub async fn get(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
) -> Result<impl IntoResponse, LeaseError> {
    Ok(ok(StatusCode::OK, st.ctl.get_lease(&app, &id).await?))
}

pub async fn release(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, LeaseError> {
    st.ctl.release_lease(&app, &id, nonce(&headers)).await?;
    Ok(ok(StatusCode::OK, serde_json::json!({"ok": true})))
}
