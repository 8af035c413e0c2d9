//! Integration tests of the DNS server: a real server on 127.0.0.1 (OS-assigned port), asked
//! over real UDP and TCP sockets. Clients that stand for machines bind other loopback
//! addresses (127.0.0.2, …) that the test's table gives to machines.
//!
//! One test binary per crate (`cargo test -p aloft-dns --test it [module::]`), a module per
//! area; shared helpers in `common`.

mod bad_input;
mod common;
mod forward;
mod names;
mod views;
