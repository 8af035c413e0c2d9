//! What the server is told: where to listen, where to forward, and the bounds that keep one
//! client from starving the others.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::error::DnsError;

/// The server's settings. [`DnsConfig::new`] gives the defaults below for everything but the
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP on each (the agent: the bridge's IPv6 and IPv4 gateways, port 53). Port 0
    /// picks one (the same for UDP and TCP); [`crate::DnsHandle::local_addrs`] tells which.
    pub listen: Vec<SocketAddr>,
    /// Resolvers for every name outside `.internal` and `.flycast`, tried in order. Empty:
    /// such names get SERVFAIL.
    pub upstream: Vec<SocketAddr>,
    /// How long one upstream may take before the next is tried (default 2 s).
    pub upstream_timeout: Duration,
    /// Forwarded queries in flight at once, over all clients (default 256); beyond, SERVFAIL.
    pub max_forwards: usize,
    /// Forwarded queries in flight at once from one source address (default 32).
    pub max_forwards_per_source: usize,
    /// Queries per second one source address may send (a token bucket with one second of
    /// burst); beyond, queries are dropped unanswered. `None`: no limit. Default 5000.
    pub per_source_qps: Option<u32>,
    /// TCP connections open at once (default 128); more wait in the kernel's backlog.
    pub max_tcp_connections: usize,
    /// TCP connections open at once from one source address (default 16); more are closed.
    pub max_tcp_connections_per_source: usize,
    /// A TCP connection is closed after this long without a complete query (default 5 s).
    pub tcp_idle_timeout: Duration,
}

impl DnsConfig {
    pub fn new(listen: Vec<SocketAddr>, upstream: Vec<SocketAddr>) -> Self {
        DnsConfig {
            listen,
            upstream,
            upstream_timeout: Duration::from_secs(2),
            max_forwards: 256,
            max_forwards_per_source: 32,
            per_source_qps: Some(5000),
            max_tcp_connections: 128,
            max_tcp_connections_per_source: 16,
            tcp_idle_timeout: Duration::from_secs(5),
        }
    }
}

/// The `nameserver` lines of a resolv.conf (e.g. `/etc/resolv.conf`), port 53 each. Other
/// lines, and lines it cannot read, are ignored; an IPv6 nameserver with a named (not numeric)
/// zone is skipped with a warning.
pub fn upstream_from_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let bytes = std::fs::read(path).map_err(|source| DnsError::ResolvConf {
        path: path.to_path_buf(),
        source,
    })?;
    let (config, _errors) = resolv_conf::Config::parse_with_errors(&bytes);
    let mut upstream = Vec::new();
    for nameserver in config.nameservers {
        match nameserver {
            resolv_conf::ScopedIp::V4(ip) => upstream.push(SocketAddr::from((ip, 53))),
            resolv_conf::ScopedIp::V6(ip, None) => upstream.push(SocketAddr::from((ip, 53))),
            resolv_conf::ScopedIp::V6(ip, Some(zone)) => match zone.parse::<u32>() {
                Ok(scope) => upstream.push(std::net::SocketAddrV6::new(ip, 53, 0, scope).into()),
                Err(_) => tracing::warn!(
                    path = %path.display(),
                    "skipping nameserver {ip}%{zone}: only numeric IPv6 zones are supported"
                ),
            },
        }
    }
    Ok(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order_and_the_rest_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nsearch example.com\nnameserver 10.0.0.1\nbogus line\nnameserver fd00::1\noptions ndots:2\nnameserver fe80::1%2\n",
        )
        .unwrap();
        assert_eq!(
            upstream_from_resolv_conf(&path).unwrap(),
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[fd00::1]:53".parse().unwrap(),
                "[fe80::1%2]:53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let error = upstream_from_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/resolv.conf"),
            "{error}"
        );
    }
}
