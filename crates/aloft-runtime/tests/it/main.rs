//! Integration tests of the process runtime: supervision and resource limits of real processes,
//! containers, and machine networking.
//!
//! One test binary per crate (`cargo test -p aloft-runtime --test it [module::]`), a module per
//! area; shared helpers in `common`.

mod common;
mod containers;
mod net;
mod resources;
mod supervision;
mod volumes;
