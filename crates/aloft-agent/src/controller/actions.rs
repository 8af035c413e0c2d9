//! Typed actions: what a request asks for, already parsed and validated by the HTTP layer.
//!
//! [`Action`] is the closed set of changes a client can ask of the controller (apps, machines,
//! leases); [`Controller::execute`] carries one out and answers an [`Outcome`] or a
//! [`DomainError`](super::DomainError), which `api/` alone turns into a status and a body (firecracker's `VmmAction`
//! → `convert_to_response`). Releases, images and group counts are the deploy engine's actions
//! (`crate::deploy::actions`), executed the same way by the `Deployer`.
//!
//! Reads are queries, not actions: `get_app`, `list_apps`, `get_machine`, `list_machines(_json)`,
//! `machine_events`, `machine_versions`, `metadata`, `wait_machine`, `get_lease` and `logs`
//! (with [`ReadLogs`]) are plain methods of the controller. They change nothing, take no lease
//! nonce and no machine lock, and answer what the store (or the runtime's log files) holds, so
//! there is no transition to put in order and nothing to record.

use std::time::Duration;

use aloft_api::{
    App, CreateAppRequest, CreateMachineRequest, Lease, Machine, MachineState, UpdateMachineRequest,
};
use aloft_store::MachineFilter;

use super::{Controller, DomainResult};

/// The lease nonce a request carries (`fly-machine-lease-nonce`), if any.
pub type Nonce = Option<String>;

#[derive(Debug)]
pub struct ListMachines {
    pub filter: MachineFilter,
    pub summary: bool,
}

#[derive(Debug)]
pub struct CreateMachine {
    pub request: CreateMachineRequest,
}

#[derive(Debug)]
pub struct UpdateMachine {
    pub request: UpdateMachineRequest,
    pub nonce: Nonce,
}

/// How to stop a process: the signal, and the time before SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopHow {
    pub signal: Option<i32>,
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct DeleteMachine {
    /// `force=true` or `kill=true`: destroy even when started (SIGKILL).
    pub force: bool,
    pub nonce: Nonce,
}

/// States `wait` can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    State(MachineState),
    /// Any persistent state: created, started, stopped, suspended, failed, destroyed.
    Settled,
}

impl WaitFor {
    pub fn matches(self, state: MachineState) -> bool {
        match self {
            WaitFor::State(s) => s == state,
            WaitFor::Settled => matches!(
                state,
                MachineState::Created
                    | MachineState::Started
                    | MachineState::Stopped
                    | MachineState::Suspended
                    | MachineState::Failed
                    | MachineState::Destroyed
            ),
        }
    }
}

#[derive(Debug)]
pub struct WaitMachine {
    pub states: Vec<WaitFor>,
    pub timeout: Duration,
    /// Only this version counts; waiting for stopped/destroyed of an older version succeeds at
    /// once (it has been replaced).
    pub instance_id: Option<String>,
}

/// A logs query (`GET /v1/apps/{app}/logs`); the app is set by the controller.
#[derive(Debug)]
pub struct ReadLogs {
    pub query: aloft_runtime::LogQuery,
    /// Keep streaming lines as they are captured.
    pub follow: bool,
}

#[derive(Debug)]
pub struct AcquireLease {
    pub ttl: u64,
    pub description: String,
    pub nonce: Nonce,
}

/// Every change a client can ask of the controller (see the module docs).
#[derive(Debug)]
pub enum Action {
    CreateApp(CreateAppRequest),
    /// With `force`, the app's machines are killed and destroyed first.
    DeleteApp {
        app: String,
        force: bool,
    },
    CreateMachine {
        app: String,
        action: CreateMachine,
    },
    UpdateMachine {
        app: String,
        id: String,
        action: UpdateMachine,
    },
    StartMachine {
        app: String,
        id: String,
        nonce: Nonce,
    },
    StopMachine {
        app: String,
        id: String,
        how: StopHow,
        nonce: Nonce,
    },
    RestartMachine {
        app: String,
        id: String,
        how: StopHow,
        nonce: Nonce,
    },
    SignalMachine {
        app: String,
        id: String,
        signal: i32,
        nonce: Nonce,
    },
    DestroyMachine {
        app: String,
        id: String,
        action: DeleteMachine,
    },
    /// Cordon (`true`: the proxy sends it no traffic) or uncordon.
    Cordon {
        app: String,
        id: String,
        cordoned: bool,
        nonce: Nonce,
    },
    /// Sets (`Some`) or deletes (`None`) a metadata key.
    WriteMetadata {
        app: String,
        id: String,
        key: String,
        value: Option<String>,
        nonce: Nonce,
    },
    AcquireLease {
        app: String,
        id: String,
        action: AcquireLease,
    },
    ReleaseLease {
        app: String,
        id: String,
        nonce: Nonce,
    },
}

/// What an [`Action`] gave.
#[derive(Debug)]
pub enum Outcome {
    /// The app was created.
    AppCreated(App),
    /// The app and its machines are gone.
    AppDeleted,
    /// The machine as it is now (create, update).
    Machine(Box<Machine>),
    /// The machine is starting; it was `previous`.
    Started {
        previous: MachineState,
    },
    /// Done (stop, restart, signal, destroy, cordon).
    Done,
    /// The metadata key is set or deleted.
    MetadataWritten,
    /// The lease taken or refreshed.
    LeaseAcquired(Lease),
    LeaseReleased,
}

impl Controller {
    /// Carries out `action`.
    pub async fn execute(self: &std::sync::Arc<Self>, action: Action) -> DomainResult<Outcome> {
        Ok(match action {
            Action::CreateApp(request) => Outcome::AppCreated(self.create_app(request).await?),
            Action::DeleteApp { app, force } => {
                self.delete_app(&app, force).await?;
                Outcome::AppDeleted
            }
            Action::CreateMachine { app, action } => {
                Outcome::Machine(Box::new(self.create_machine(&app, action).await?))
            }
            Action::UpdateMachine { app, id, action } => {
                Outcome::Machine(Box::new(self.update_machine(&app, &id, action).await?))
            }
            Action::StartMachine { app, id, nonce } => Outcome::Started {
                previous: self.start_machine(&app, &id, nonce).await?,
            },
            Action::StopMachine {
                app,
                id,
                how,
                nonce,
            } => {
                self.stop_machine(&app, &id, how, nonce).await?;
                Outcome::Done
            }
            Action::RestartMachine {
                app,
                id,
                how,
                nonce,
            } => {
                self.restart_machine(&app, &id, how, nonce).await?;
                Outcome::Done
            }
            Action::SignalMachine {
                app,
                id,
                signal,
                nonce,
            } => {
                self.signal_machine(&app, &id, signal, nonce).await?;
                Outcome::Done
            }
            Action::DestroyMachine { app, id, action } => {
                self.destroy_machine(&app, &id, action).await?;
                Outcome::Done
            }
            Action::Cordon {
                app,
                id,
                cordoned,
                nonce,
            } => {
                self.set_cordoned(&app, &id, cordoned, nonce).await?;
                Outcome::Done
            }
            Action::WriteMetadata {
                app,
                id,
                key,
                value,
                nonce,
            } => {
                self.write_metadata(&app, &id, &key, value, nonce).await?;
                Outcome::MetadataWritten
            }
            Action::AcquireLease { app, id, action } => {
                Outcome::LeaseAcquired(self.acquire_lease(&app, &id, action).await?)
            }
            Action::ReleaseLease { app, id, nonce } => {
                self.release_lease(&app, &id, nonce).await?;
                Outcome::LeaseReleased
            }
        })
    }
}
