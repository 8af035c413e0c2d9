//! What can go wrong when the agent wires machines into the host's network, said for the person
//! running the agent: what failed, for which bridge or machine, and what to do about it.

use std::io;
use std::path::PathBuf;

/// An error of [`Network`](super::Network): each names the bridge or machine concerned and says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The [`NetConfig`](super::NetConfig) cannot be used.
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// A machine id that cannot name a network namespace or a state file.
    #[error(
        "machine id {id:?} cannot be given a network: {why} (ids are 1–64 characters of \
         A–Z, a–z, 0–9, '_' and '-')"
    )]
    MachineId { id: String, why: &'static str },
    /// An organization slug that cannot be given addresses.
    #[error(
        "organization {slug:?} cannot be given addresses: {why} (slugs are 1–64 characters of \
         A–Z, a–z, 0–9, '_' and '-')"
    )]
    OrgSlug { slug: String, why: &'static str },
    /// Every organization number (1–65535) of this host is taken.
    #[error(
        "organization {slug}: no organization number left on bridge {bridge} (65535 in use): \
         remove the network state of organizations that are gone"
    )]
    OrgsFull { slug: String, bridge: String },
    /// `nft` is not installed.
    #[error(
        "`{tool}` is not installed, and machine networking needs it: install the {package} \
         package (apt-get install {package})"
    )]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    /// A command run on the host failed.
    #[error("{target}: `{command}` failed: {stderr}; {hint}")]
    Command {
        /// `bridge aloft0` or `machine 3d8d… on bridge aloft0`.
        target: String,
        /// The command line, as a person would type it.
        command: String,
        /// What the command printed on stderr (trimmed), or its exit status.
        stderr: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A netlink request (or the namespace handling around it) failed.
    #[error("{target}: cannot {action}: {message}; {hint}")]
    Netlink {
        /// `bridge aloft0` or `machine 3d8d… on bridge aloft0`.
        target: String,
        /// What was being done (`create veth pair av…`).
        action: String,
        /// What the kernel answered.
        message: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Writing a kernel setting under /proc/sys failed.
    #[error(
        "bridge {bridge}: cannot write {path}: {source}; run the agent as root or with \
         CAP_NET_ADMIN, or set it on the host (sysctl -w net.ipv4.ip_forward=1)"
    )]
    Sysctl {
        bridge: String,
        path: PathBuf,
        source: io::Error,
    },
    /// An interface of the bridge's name exists and is not a bridge.
    #[error(
        "network interface {bridge} exists and is not a bridge: remove it (ip link del {bridge}) \
         or configure another bridge name"
    )]
    NotABridge { bridge: String },
    /// Every address of the subnet is taken.
    #[error(
        "machine {machine}: no free address left in {subnet} on bridge {bridge} ({capacity} \
         machines attached): detach machines or configure a larger subnet"
    )]
    SubnetFull {
        machine: String,
        subnet: String,
        bridge: String,
        capacity: usize,
    },
    /// The allocation records in the state directory cannot be read or written.
    #[error("{what} {}: {source}; check that the agent can write its data directory", path.display())]
    State {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}
