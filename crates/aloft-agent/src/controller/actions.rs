//! Typed actions: what a request asks for, already parsed and validated by the HTTP layer.

use std::time::Duration;

use aloft_api::{CreateMachineRequest, MachineState, UpdateMachineRequest};
use aloft_store::MachineFilter;

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

#[derive(Debug)]
pub struct AcquireLease {
    pub ttl: u64,
    pub description: String,
    pub nonce: Nonce,
}
