//! How the outcome of each action is answered: status and body, in one place (errors are
//! answered in `error`). Handlers parse a request into an action, the controller (or the
//! deployer) executes it, and the outcome leaves through here.

use aloft_api::groups::GroupCounts;
use aloft_api::images::UploadOffset;
use aloft_api::LeaseEnvelope;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::controller::actions::Outcome;
use crate::deploy::actions::DeployOutcome;

/// A lease endpoint's success envelope.
fn lease_envelope<T: serde::Serialize>(status: StatusCode, data: T) -> Response {
    let body = LeaseEnvelope {
        status: "success".into(),
        data: Some(data),
        message: None,
        code: None,
    };
    (status, Json(body)).into_response()
}

/// `{"ok": true}`.
pub fn ok() -> Response {
    Json(json!({"ok": true})).into_response()
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        match self {
            Outcome::AppCreated(app) => (StatusCode::CREATED, Json(app)).into_response(),
            Outcome::AppDeleted => StatusCode::ACCEPTED.into_response(),
            Outcome::Machine(m) => Json(m).into_response(),
            Outcome::Started { previous } => {
                Json(json!({"previous_state": previous, "migrated": false, "new_host": ""}))
                    .into_response()
            }
            Outcome::Done => ok(),
            Outcome::MetadataWritten => StatusCode::NO_CONTENT.into_response(),
            Outcome::LeaseAcquired(lease) => lease_envelope(StatusCode::CREATED, lease),
            Outcome::LeaseReleased => lease_envelope(StatusCode::OK, json!({"ok": true})),
        }
    }
}

impl IntoResponse for DeployOutcome {
    fn into_response(self) -> Response {
        match self {
            DeployOutcome::Release(r) => (StatusCode::CREATED, Json(*r)).into_response(),
            DeployOutcome::Plan(p) => Json(p).into_response(),
            DeployOutcome::ConfirmationRequired(body) => {
                (StatusCode::CONFLICT, Json(body)).into_response()
            }
            DeployOutcome::Image { created, info } => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (status, Json(info)).into_response()
            }
            DeployOutcome::UploadOffset(offset) => {
                (StatusCode::ACCEPTED, Json(UploadOffset { offset })).into_response()
            }
            DeployOutcome::Blob { created, info } => {
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (status, Json(info)).into_response()
            }
            DeployOutcome::OciImage(info) => (StatusCode::CREATED, Json(*info)).into_response(),
            DeployOutcome::ImageGc(report) => Json(report).into_response(),
            DeployOutcome::GroupCounts(counts) => Json(GroupCounts { counts }).into_response(),
            DeployOutcome::ScalePreview(p) => Json(p).into_response(),
            DeployOutcome::GuestPlan(p) => Json(*p).into_response(),
            DeployOutcome::Secrets(s) => Json(s).into_response(),
        }
    }
}

/// A lease endpoint's success envelope around a lease read (`GET …/lease`).
pub fn lease(lease: aloft_api::Lease) -> Response {
    lease_envelope(StatusCode::OK, lease)
}
