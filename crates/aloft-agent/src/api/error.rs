//! Error answers of the API: every failure leaves as `{"error": "...", "status": "..."}` JSON with
//! a 4xx for anything the client can fix. Lease endpoints use their `{status:"error", message,
//! code}` envelope instead ([`LeaseError`]).
//!
//! The one place where the controller's [`DomainError`]s get their HTTP status and `status`
//! code (`From<DomainError> for HttpError`); the controller itself knows no HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use aloft_api::{ErrorResponse, LeaseEnvelope};

use crate::controller::DomainError;

/// An error answer of the API: status, `status` code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub http: StatusCode,
    pub message: String,
    /// The `status` field: a short machine-readable code.
    pub code: &'static str,
}

/// A handler's result.
pub type HttpResult<T> = Result<T, HttpError>;

impl HttpError {
    pub fn new(http: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            http,
            message: message.into(),
            code,
        }
    }
    /// A request the handler could not parse (400 `invalid_request`).
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::from(DomainError::InvalidRequest(message.into()))
    }
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::from(DomainError::NotFound(message.into()))
    }
    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError::from(DomainError::Internal(message.into()))
    }
}

/// How each kind of domain error is answered: status and `status` code.
fn status_of(e: &DomainError) -> (StatusCode, &'static str) {
    match e {
        DomainError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        DomainError::InvalidConfig(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_config"),
        DomainError::NameTaken(_) => (StatusCode::UNPROCESSABLE_ENTITY, "name_taken"),
        DomainError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        DomainError::Precondition(_) => (StatusCode::PRECONDITION_FAILED, "failed_precondition"),
        DomainError::LeaseHeld(_) => (StatusCode::CONFLICT, "lease_held"),
        DomainError::LeaseConflict(_) => (StatusCode::CONFLICT, "invalid"),
        DomainError::ReleaseRunning(_) => (StatusCode::CONFLICT, "release_running"),
        DomainError::HostnameTaken(_) => (
            StatusCode::CONFLICT,
            aloft_api::routes::STATUS_HOSTNAME_TAKEN,
        ),
        // Fly answers a new machine 412 and an existing one 409.
        DomainError::CapacityExceeded {
            existing: false, ..
        } => (StatusCode::PRECONDITION_FAILED, "insufficient_resources"),
        DomainError::CapacityExceeded { existing: true, .. } => (StatusCode::CONFLICT, "aborted"),
        DomainError::InsufficientStorage(_) => {
            (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
        }
        DomainError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request"),
        DomainError::WrongOffset(_) => {
            (StatusCode::CONFLICT, aloft_api::routes::STATUS_WRONG_OFFSET)
        }
        DomainError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads"),
        DomainError::TooManySessions {
            agent_wide: false, ..
        } => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
        DomainError::TooManySessions {
            agent_wide: true, ..
        } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_sessions"),
        DomainError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "unknown"),
    }
}

impl From<DomainError> for HttpError {
    fn from(e: DomainError) -> HttpError {
        let (http, code) = status_of(&e);
        HttpError {
            http,
            code,
            message: e.message().to_string(),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.message,
            status: Some(self.code.to_string()),
        };
        (self.http, Json(body)).into_response()
    }
}

/// An error of the lease endpoints, in their envelope.
#[derive(Debug)]
pub struct LeaseError(pub HttpError);

impl From<HttpError> for LeaseError {
    fn from(e: HttpError) -> LeaseError {
        LeaseError(e)
    }
}

impl From<DomainError> for LeaseError {
    fn from(e: DomainError) -> LeaseError {
        LeaseError(e.into())
    }
}

impl IntoResponse for LeaseError {
    fn into_response(self) -> Response {
        let code = match self.0.http {
            StatusCode::CONFLICT => "invalid",
            _ => self.0.code,
        };
        let body: LeaseEnvelope<()> = LeaseEnvelope {
            status: "error".into(),
            data: None,
            message: Some(self.0.message),
            code: Some(code.into()),
        };
        (self.0.http, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_error_keeps_its_message_and_gets_a_status() {
        let cases = [
            (DomainError::invalid_request("m"), 400, "invalid_request"),
            (DomainError::invalid_config("m"), 422, "invalid_config"),
            (DomainError::NameTaken("m".into()), 422, "name_taken"),
            (DomainError::not_found("m"), 404, "not_found"),
            (DomainError::precondition("m"), 412, "failed_precondition"),
            (DomainError::LeaseHeld("m".into()), 409, "lease_held"),
            (DomainError::WrongOffset("m".into()), 409, "wrong_offset"),
            (DomainError::LeaseConflict("m".into()), 409, "invalid"),
            (
                DomainError::ReleaseRunning("m".into()),
                409,
                "release_running",
            ),
            (
                DomainError::HostnameTaken("m".into()),
                409,
                "hostname_taken",
            ),
            (
                DomainError::CapacityExceeded {
                    message: "m".into(),
                    existing: false,
                },
                412,
                "insufficient_resources",
            ),
            (
                DomainError::CapacityExceeded {
                    message: "m".into(),
                    existing: true,
                },
                409,
                "aborted",
            ),
            (
                DomainError::insufficient_storage("m"),
                507,
                "insufficient_storage",
            ),
            (DomainError::TooLarge("m".into()), 413, "invalid_request"),
            (DomainError::Busy("m".into()), 429, "too_many_uploads"),
            (DomainError::internal("m"), 500, "unknown"),
        ];
        for (e, status, code) in cases {
            let h = HttpError::from(e.clone());
            assert_eq!((h.http.as_u16(), h.code), (status, code), "{e:?}");
            assert_eq!(h.message, "m");
        }
    }
}
