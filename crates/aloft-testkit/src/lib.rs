//! Shared helpers of the workspace's integration tests (each crate has one test binary,
//! `tests/it/main.rs`, with a module per former test file).
//!
//! - [`wait`]: one polling loop with a deadline and a message naming what never happened, in
//!   three shapes: [`wait_for`] (blocking), [`wait_until`] (async, plain condition) and
//!   [`wait_for_async`] (async probe).
//! - [`agent`]: a real `aloft agent` process ([`AgentProc`]) on a temp data dir, loopback only,
//!   SIGKILLed on drop with every machine it started reaped.
//! - [`reap`]: kills what an agent (in-process or not) left running and removes its cgroups.
//! - [`privileged`]: skip a test that needs root, unless CI says it must run.
//! - [`procs`]: whether a pid is alive; [`KillOnDrop`] for a plain child process.
//! - [`volumes`]: unmount and free the volumes an agent left; what is still attached.
//! - [`sshd`]: a real OpenSSH server on a loopback port with a test key ([`sshd::Sshd`]).
//!
//! Depends on no aloft crate, so any crate's tests may use it without a dependency cycle;
//! harnesses that need a crate's own types (an in-process agent, a runtime) stay in that
//! crate's `tests/it/`.

pub mod agent;
pub mod containers;
pub mod pebble;
pub mod privileged;
pub mod procs;
pub mod reap;
pub mod sshd;
pub mod volumes;
pub mod wait;

pub use agent::AgentProc;
pub use privileged::{privileged_or_skip, REQUIRE_PRIVILEGED};
pub use procs::{alive, KillOnDrop};
pub use reap::{reap_machines, ReapOnDrop};
pub use wait::{wait_for, wait_for_async, wait_for_explained, wait_until, Ready, PATIENCE};
