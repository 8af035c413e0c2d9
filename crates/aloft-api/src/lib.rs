//! Wire types of the Machines API that Aloft serves, compatible with Fly.io's Machines API v1.
//!
//! This crate is the contract between every other crate: the config engine produces a
//! [`MachineConfig`] per process group, the agent stores and serves [`Machine`]s, the runtime
//! runs them, the proxy routes to their services and the CLI speaks JSON made of these types.
//!
//! Architecture invariant: no IO, no async, no HTTP. Only data, serde and pure helpers
//! (presets, validation of guests, duration parsing).

pub mod certs;
pub mod console;
pub mod copy;
pub mod duration;
pub mod exec;
pub mod groups;
pub mod guest;
pub mod hostname;
pub mod images;
pub mod local;
pub mod logs;
pub mod machine;
pub mod metadata;
pub mod network;
pub mod proxy;
pub mod regions;
pub mod routes;
pub mod schedule;
pub mod secrets;
pub mod tokens;
pub mod volumes;

pub use duration::GoDuration;
pub use guest::{Guest, GuestError, VmPreset, VM_PRESETS};
pub use logs::LogLine;
pub use machine::*;
pub use proxy::ProxyPort;
