//! Integration tests of the store: machines, apps, leases, events and releases in SQLite.
//!
//! One test binary per crate (`cargo test -p aloft-store --test it [module::]`), a module
//! per area.

mod certs;
mod common;
mod deploys;
mod store;
