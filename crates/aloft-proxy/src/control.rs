//! The proxy's only way to act on machines: start one for autostart, stop (or suspend) one for
//! autostop. The agent implements [`MachineControl`] on top of its lifecycle code; tests use a
//! fake that starts and stops real listeners.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future (object-safe async methods without extra dependencies).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a start or stop did not happen, for people: say what and which machine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ControlError(pub String);

/// Machine lifecycle as the proxy needs it.
///
/// Contract for implementors:
/// * `start` returns once the machine is `started` (its process runs; it need not listen yet —
///   the proxy retries refused connections to a machine it just started). Starting a machine that
///   is already started must succeed. The agent should push a new [`crate::RouteTable`] reflecting
///   the new state soon after; the proxy trusts its own action meanwhile.
/// * `stop` stops the machine with its `stop_config`; with `suspend = true` it may suspend instead
///   (falling back to a stop when the machine cannot be suspended).
/// * Neither may create or destroy machines.
pub trait MachineControl: Send + Sync + 'static {
    fn start<'a>(
        &'a self,
        app: &'a str,
        machine_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ControlError>>;
    fn stop<'a>(
        &'a self,
        app: &'a str,
        machine_id: &'a str,
        suspend: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>>;
}

/// A [`MachineControl`] that refuses everything: for a proxy without autostart/autostop.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoControl;

impl MachineControl for NoControl {
    fn start<'a>(
        &'a self,
        app: &'a str,
        machine_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            Err(ControlError(format!(
                "cannot start machine {machine_id} of app {app}: no machine control"
            )))
        })
    }
    fn stop<'a>(
        &'a self,
        app: &'a str,
        machine_id: &'a str,
        _suspend: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            Err(ControlError(format!(
                "cannot stop machine {machine_id} of app {app}: no machine control"
            )))
        })
    }
}
