//! Lease handlers, answering in the `{status, data}` envelope.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;

use super::error::{HttpError, LeaseError};
use super::extract::{nonce, OptBody, Params, P};
use super::respond;
use super::AppState;
use crate::controller::actions::{AcquireLease, Action, Outcome};

/// Default lease length when the request gives none, in seconds.
const DEFAULT_TTL: u64 = 30;

#[derive(serde::Deserialize)]
pub struct LeaseBody {
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn acquire(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    q: Params,
    headers: HeaderMap,
    body: Result<OptBody<LeaseBody>, HttpError>,
) -> Result<Outcome, LeaseError> {
    let OptBody(body) = body?;
    let ttl = match body.as_ref().and_then(|b| b.ttl) {
        Some(t) => t,
        None => q.uint("ttl", true)?.unwrap_or(DEFAULT_TTL),
    };
    let description = body.and_then(|b| b.description).unwrap_or_default();
    let action = AcquireLease {
        ttl,
        description,
        nonce: nonce(&headers),
    };
    Ok(st
        .ctl
        .execute(Action::AcquireLease { app, id, action })
        .await?)
}

pub async fn get(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
) -> Result<impl IntoResponse, LeaseError> {
    Ok(respond::lease(st.ctl.get_lease(&app, &id).await?))
}

pub async fn release(
    State(st): State<AppState>,
    P((app, id)): P<(String, String)>,
    headers: HeaderMap,
) -> Result<Outcome, LeaseError> {
    let nonce = nonce(&headers);
    Ok(st
        .ctl
        .execute(Action::ReleaseLease { app, id, nonce })
        .await?)
}
