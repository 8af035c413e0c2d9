//! aloft-acme against a real ACME server: Let's Encrypt's `pebble` (Debian package), with
//! test doubles of the proxy's challenge hooks answering its validations.

mod doubles;
mod issue;
