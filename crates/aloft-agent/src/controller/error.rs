//! Why the controller (or the deploy engine over it) refused or failed an action, in domain
//! terms. Every variant carries the human message (what, where, what to do); none carries an
//! HTTP status: `api/` alone decides how each variant is answered (ARCHITECTURE.md, "the
//! controller knows no HTTP"), in one place (`api::error`), as firecracker's `VmmAction` errors
//! become responses only in its API server.

use aloft_store::StoreError;

/// A failed action or query of the controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A parameter of the request is malformed or out of range (a lease ttl, an image digest).
    #[error("{0}")]
    InvalidRequest(String),
    /// A config, spec or name the agent cannot carry out.
    #[error("{0}")]
    InvalidConfig(String),
    /// The app name is already taken.
    #[error("{0}")]
    NameTaken(String),
    /// The app, machine, lease, release or image does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The machine's (or the release's) current state does not allow the action.
    #[error("{0}")]
    Precondition(String),
    /// The machine is leased and the request does not carry the lease's nonce.
    #[error("{0}")]
    LeaseHeld(String),
    /// A lease cannot be taken or released: another lease (or nonce) holds the machine.
    #[error("{0}")]
    LeaseConflict(String),
    /// Another release of the app is running.
    #[error("{0}")]
    ReleaseRunning(String),
    /// A hostname (`aloft certs add`) is another app's.
    #[error("{0}")]
    HostnameTaken(String),
    /// This host lacks the memory the machine asks for; `existing` tells a machine that is
    /// already there (start, update) from a new one.
    #[error("{message}")]
    CapacityExceeded { message: String, existing: bool },
    /// The agent's disk is full: nothing can be written until space is freed.
    #[error("{0}")]
    InsufficientStorage(String),
    /// An upload is larger than the agent accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A blob upload was continued at another offset than where it is (the message names it).
    #[error("{0}")]
    WrongOffset(String),
    /// The agent is already doing as many of these as it allows; retry later.
    #[error("{0}")]
    Busy(String),
    /// A console session is refused: the machine (or, `agent_wide`, the agent) runs as many
    /// as it allows.
    #[error("{message}")]
    TooManySessions { message: String, agent_wide: bool },
    /// The agent's own failure (store, runtime, a task that died): nothing the client can fix.
    #[error("{0}")]
    Internal(String),
}

/// A controller result.
pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn invalid_request(message: impl Into<String>) -> DomainError {
        DomainError::InvalidRequest(message.into())
    }
    pub fn invalid_config(message: impl Into<String>) -> DomainError {
        DomainError::InvalidConfig(message.into())
    }
    pub fn not_found(message: impl Into<String>) -> DomainError {
        DomainError::NotFound(message.into())
    }
    pub fn precondition(message: impl Into<String>) -> DomainError {
        DomainError::Precondition(message.into())
    }
    pub fn internal(message: impl Into<String>) -> DomainError {
        DomainError::Internal(message.into())
    }
    pub fn insufficient_storage(message: impl Into<String>) -> DomainError {
        DomainError::InsufficientStorage(message.into())
    }
    pub fn app_not_found(app: &str) -> DomainError {
        DomainError::not_found(format!("app {app:?} not found"))
    }
    pub fn machine_not_found(app: &str, id: &str) -> DomainError {
        DomainError::not_found(format!("machine {id:?} not found in app {app:?}"))
    }

    /// The human message.
    pub fn message(&self) -> &str {
        match self {
            DomainError::InvalidRequest(m)
            | DomainError::InvalidConfig(m)
            | DomainError::NameTaken(m)
            | DomainError::NotFound(m)
            | DomainError::Precondition(m)
            | DomainError::LeaseHeld(m)
            | DomainError::LeaseConflict(m)
            | DomainError::ReleaseRunning(m)
            | DomainError::HostnameTaken(m)
            | DomainError::CapacityExceeded { message: m, .. }
            | DomainError::InsufficientStorage(m)
            | DomainError::TooLarge(m)
            | DomainError::WrongOffset(m)
            | DomainError::Busy(m)
            | DomainError::TooManySessions { message: m, .. }
            | DomainError::Internal(m) => m,
        }
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> DomainError {
        match e {
            StoreError::AppNameTaken(_) => {
                DomainError::NameTaken("Name has already been taken".into())
            }
            StoreError::MachineNameTaken { app, name } => DomainError::invalid_config(format!(
                "a machine named {name:?} already exists in app {app:?}; pick another name or leave it out"
            )),
            other if other.is_disk_full() => {
                tracing::error!(error = %other, "state store: disk full");
                DomainError::insufficient_storage(format!(
                    "the agent's disk is full and its state cannot be written ({other}): free \
                     space in the data dir's filesystem (stop or destroy machines whose output \
                     fills it, remove files), then retry"
                ))
            }
            other => {
                tracing::error!(error = %other, "state store failure");
                DomainError::internal(other.to_string())
            }
        }
    }
}
