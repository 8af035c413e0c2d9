//! Forwarding of names that are not ours to the upstream resolvers: the query's bytes as
//! received, over UDP from a fresh socket (a new random source port per query; only the
//! upstream's answer with the query's id is taken), and over TCP when the upstream's UDP answer
//! is truncated and the client asked over TCP. Bounded: in flight at once overall and per
//! source, and in time per upstream.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::DnsConfig;
use crate::limit::{PerSource, SourceSlot};
use crate::message::Transport;

#[derive(Debug)]
pub(crate) struct Forwarder {
    upstream: Vec<SocketAddr>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    per_source: Arc<PerSource>,
}

/// The right to one forward in flight; given back on drop.
#[derive(Debug)]
pub(crate) struct ForwardPermit {
    _overall: OwnedSemaphorePermit,
    _source: SourceSlot,
}

impl Forwarder {
    pub(crate) fn new(config: &DnsConfig) -> Self {
        Forwarder {
            upstream: config.upstream.clone(),
            timeout: config.upstream_timeout,
            slots: Arc::new(Semaphore::new(config.max_forwards)),
            per_source: PerSource::new(config.max_forwards_per_source),
        }
    }

    pub(crate) fn has_upstream(&self) -> bool {
        !self.upstream.is_empty()
    }

    /// `None` when all forward slots, or all of `source`'s, are taken.
    pub(crate) fn permit(&self, source: IpAddr) -> Option<ForwardPermit> {
        let source = self.per_source.take(source)?;
        let overall = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some(ForwardPermit {
            _overall: overall,
            _source: source,
        })
    }

    /// The first upstream answer to `query`, trying each upstream in turn for at most the
    /// timeout; `None` if none answered.
    pub(crate) async fn forward(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let id = query_id(query)?;
        for &upstream in &self.upstream {
            let attempt = async {
                let answer = over_udp(upstream, query, id).await?;
                if transport == Transport::Tcp && truncated(&answer) {
                    over_tcp(upstream, query, id).await
                } else {
                    Ok(answer)
                }
            };
            match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(error)) => tracing::debug!(%upstream, %error, "upstream DNS query failed"),
                Err(_) => tracing::debug!(%upstream, "upstream DNS server did not answer in time"),
            }
        }
        None
    }
}

fn query_id(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

/// A response (QR set) to the query with `id`.
fn answers(message: &[u8], id: u16) -> bool {
    message.len() >= 12 && query_id(message) == Some(id) && message[2] & 0x80 != 0
}

fn truncated(message: &[u8]) -> bool {
    message.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

async fn over_udp(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let any: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((any, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        if answers(&buf[..len], id) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn over_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long for TCP"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(len)];
    stream.read_exact(&mut answer).await?;
    if answers(&answer, id) {
        Ok(answer)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the upstream's TCP answer is not a response to the query",
        ))
    }
}
