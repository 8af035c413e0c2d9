//! API errors: every failure leaves as `{"error": "...", "status": "..."}` JSON with a 4xx for
//! anything the client can fix. Lease endpoints use their `{status:"error", message, code}`
//! envelope instead ([`LeaseError`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use aloft_api::{ErrorResponse, LeaseEnvelope};

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub http: StatusCode,
    pub message: String,
    /// The `status` field: a short machine-readable code.
    pub code: &'static str,
}

impl ApiError {
    pub fn new(http: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            http,
            message: message.into(),
            code,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unprocessable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", message)
    }
    /// The request does not fit the machine's current state or version.
    pub fn precondition(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "failed_precondition",
            message,
        )
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authenticate: token validation error (send Authorization: Bearer <token>; the agent's \
             token is in <data-dir>/token)",
        )
    }
    /// The agent's disk is full (507).
    pub fn insufficient_storage(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
            message,
        )
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "unknown", message)
    }
    pub fn app_not_found(app: &str) -> ApiError {
        ApiError::not_found(format!("app {app:?} not found"))
    }
    pub fn machine_not_found(app: &str, id: &str) -> ApiError {
        ApiError::not_found(format!("machine {id:?} not found in app {app:?}"))
    }
}

impl From<aloft_store::StoreError> for ApiError {
    fn from(e: aloft_store::StoreError) -> ApiError {
        match e {
            aloft_store::StoreError::AppNameTaken(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "name_taken",
                "Name has already been taken",
            ),
            aloft_store::StoreError::MachineNameTaken { app, name } => ApiError::unprocessable(format!(
                "a machine named {name:?} already exists in app {app:?}; pick another name or leave it out"
            )),
            other if other.is_disk_full() => {
                tracing::error!(error = %other, "state store: disk full");
                ApiError::insufficient_storage(format!(
                    "the agent's disk is full and its state cannot be written ({other}): free \
                     space in the data dir's filesystem (stop or destroy machines whose output \
                     fills it, remove files), then retry"
                ))
            }
            other => {
                tracing::error!(error = %other, "state store failure");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
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
pub struct LeaseError(pub ApiError);

impl From<ApiError> for LeaseError {
    fn from(e: ApiError) -> LeaseError {
        LeaseError(e)
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

pub type ApiResult<T> = Result<T, ApiError>;
