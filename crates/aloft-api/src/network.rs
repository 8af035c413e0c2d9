//! Bodies of the private-network routes: an app's IP addresses (`aloft ips`, like `fly ips`)
//! and DNS lookups as a machine of the app sees them (`aloft dig`, like `fly dig`). Routes in
//! [`crate::routes`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of address an app holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpKind {
    /// A dedicated public IPv4 address.
    V4,
    /// The host's public IPv4 address, shared by every app on it (HTTP routed by `Host`/SNI).
    SharedV4,
    /// A public IPv6 address.
    V6,
    /// A Flycast address: private IPv6 on the organization's network, served by the proxy.
    PrivateV6,
}

impl IpKind {
    /// `v4` or `v6`, the VERSION column of `fly ips list`.
    pub fn version(self) -> &'static str {
        match self {
            IpKind::V4 | IpKind::SharedV4 => "v4",
            IpKind::V6 | IpKind::PrivateV6 => "v6",
        }
    }

    /// The TYPE column of `fly ips list`.
    pub fn label(self) -> &'static str {
        match self {
            IpKind::V4 | IpKind::V6 => "public (dedicated)",
            IpKind::SharedV4 => "public (shared)",
            IpKind::PrivateV6 => "private",
        }
    }

    /// Whether the address serves the app outside the private network.
    pub fn is_public(self) -> bool {
        !matches!(self, IpKind::PrivateV6)
    }
}

impl fmt::Display for IpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpKind::V4 => "v4",
            IpKind::SharedV4 => "shared_v4",
            IpKind::V6 => "v6",
            IpKind::PrivateV6 => "private_v6",
        })
    }
}

/// One address of an app (`GET /v1/apps/{app}/ips`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    pub address: String,
    #[serde(rename = "type")]
    pub kind: IpKind,
    /// `global`: every address of an Aloft agent serves all of its regions.
    pub region: String,
    pub created_at: String,
}

/// `POST /v1/apps/{app}/ips`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateIpRequest {
    #[serde(rename = "type")]
    pub kind: IpKind,
    /// Accepted for flyctl's `--region`; only `global` (or none) is possible on one agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// `GET /v1/apps/{app}/dns?name=NAME&type=TYPE`: the answer a machine of the app would get.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// The name asked, as normalised by the server (lowercase, fully qualified).
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`…
    pub rcode: String,
    /// Whether the agent answered from its own table (`.internal`, `.flycast`) rather than
    /// forwarding to the host's resolvers.
    pub authoritative: bool,
    /// Each record's data as `dig +short` prints it.
    pub answers: Vec<String>,
    /// The organization whose view answered (that of the app).
    pub org: String,
}
