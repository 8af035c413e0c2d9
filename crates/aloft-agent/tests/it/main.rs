//! Integration tests of the agent: the Machines API and the proxy wiring against an in-process
//! agent (ACME issuance against Let's Encrypt's `pebble` among them), and the OpenAPI
//! description against the router.
//!
//! One test binary per crate (`cargo test -p aloft-agent --test it [module::]`), a module per area.

mod acme;
mod api;
mod client_paths;
mod common;
mod hosts;
mod metrics;
mod oci;
mod openapi;
mod proxy;
mod schedule;
mod tokens;
mod volume_snapshots;
