//! Integration tests of the proxy: real servers on 127.0.0.1 standing in for machines.
//!
//! One test binary per crate (`cargo test -p aloft-proxy --test it [module::]`), a module per
//! area; shared helpers in `common`.

mod autoscale;
mod common;
mod compress;
mod edge;
mod h1;
mod h1_edge;
mod h2_backend;
mod hosts;
mod modules;
mod proximity;
mod replay;
mod routing;
