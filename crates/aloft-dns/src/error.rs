//! Why the DNS server could not start, or its upstreams could not be read.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cannot listen for DNS on {addr} ({transport}): {source}; is the address configured on \
         this host (the bridge up) and the port free?"
    )]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start the DNS server's thread (for {addrs:?}): {source}")]
    Start {
        addrs: Vec<SocketAddr>,
        source: std::io::Error,
    },
    #[error("cannot read the upstream resolvers from {}: {source}", path.display())]
    ResolvConf {
        path: PathBuf,
        source: std::io::Error,
    },
}
