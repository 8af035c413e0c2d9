//! Integration tests of the `aloft` binary: the CLI and a real `aloft agent` process end to end,
//! attacks on an exposed agent, schemathesis, and the workspace's architecture rules.
//!
//! One test binary per crate (`cargo test -p aloft --test it [module::]`), a module per
//! area; shared helpers in `common`.

mod agent_e2e;
mod architecture;
mod attacks;
mod build;
mod certs_cli;
mod cli_bad_input;
mod common;
mod config_cli;
mod console_e2e;
mod containers_e2e;
mod contexts_cli;
mod copy_e2e;
mod deploy_e2e;
mod exec_e2e;
mod images_cli;
mod mounts_e2e;
mod private_net_e2e;
mod schedule_e2e;
mod schemathesis;
mod secrets_e2e;
mod ssh_e2e;
mod tls_e2e;
mod tokens_e2e;
mod up_e2e;
mod volumes_e2e;
