//! HTTP client of the Aloft agent: the Machines API and the agent's own routes (releases,
//! images, scale, process-group counts, logs, proxy ports), pushing OCI images ([`push`]), with paths from
//! `aloft_api::routes`, and how a client finds the local agent ([`local`]). `https://` agents are
//! verified by a public CA or by the fingerprint pinned on first use ([`tls`], [`pins`]).
//!
//! The CLI talks to every agent, the embedded one too, only through this client, so it
//! exercises the path a remote user does. The only crate that speaks HTTP as a client.

mod client;
pub mod connect;
pub mod console;
mod copy;
pub mod local;
pub mod pins;
pub mod push;
mod ssh;
pub mod tls;

pub use client::{block_on, is_not_found, status_error, Client, ScaleAnswer, StatusError};
pub use connect::{connect, ConnectOptions};
pub use local::{data_dir_from, local_agent, LocalAgent};
pub use push::{PushProgress, PushedImage};
/// HTTP types callers need to read a [`StatusError`] or the agent's URL.
pub use reqwest::{Method, StatusCode, Url};
pub use ssh::ConnectInfo;
pub use tls::{NewPin, OnPin, PinError};
