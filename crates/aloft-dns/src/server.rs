//! The server: UDP and TCP listeners on every configured address, answering our zones inline
//! from the current table and handing everything else to forwarding tasks, so a slow upstream
//! never delays a `.internal` answer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::answer::{Answer, View};
use crate::cache::AnswerCache;
use crate::config::DnsConfig;
use crate::error::DnsError;
use crate::forward::Forwarder;
use crate::limit::{PerSource, RateLimit};
use crate::message::{self, Reply, Transport, MAX_QUERY_LEN};
use crate::table::DnsTable;

/// Starts servers; see [`DnsServer::spawn`].
#[derive(Debug)]
pub struct DnsServer;

/// A running server. It serves until this handle is dropped (or [`DnsHandle::shutdown`]):
/// then its thread ends, and with it listeners, forwards and TCP connections in progress.
#[derive(Debug)]
pub struct DnsHandle {
    local_addrs: Vec<SocketAddr>,
    table: watch::Receiver<Arc<DnsTable>>,
    /// Dropped with the handle: the server's thread sees it and stops.
    _stop: oneshot::Sender<()>,
}

/// What every listener task shares.
#[derive(Debug)]
struct Shared {
    table: watch::Receiver<Arc<DnsTable>>,
    rate: Option<RateLimit>,
    forwarder: Forwarder,
    tcp_slots: Arc<Semaphore>,
    tcp_per_source: Arc<PerSource>,
    config: DnsConfig,
}

impl DnsServer {
    /// Binds UDP and TCP on every `config.listen` address and serves from `table` (each query
    /// reads the newest table: a change is visible to the next query).
    ///
    /// The server runs on a thread of its own (`aloft-dns`, a single-threaded runtime, like
    /// dnsmasq's event loop): no cross-thread wake-up per query, and a busy agent runtime
    /// cannot delay an answer.
    pub async fn spawn(
        config: DnsConfig,
        table: watch::Receiver<Arc<DnsTable>>,
    ) -> Result<DnsHandle, DnsError> {
        let mut bound = Vec::new();
        let mut local_addrs = Vec::new();
        for &addr in &config.listen {
            let (udp, tcp, local) = bind(addr)?;
            bound.push((udp, tcp));
            local_addrs.push(local);
        }
        if config.upstream.is_empty() {
            tracing::warn!(
                "no upstream DNS resolvers: names outside .internal and .flycast will get SERVFAIL"
            );
        }
        let shared = Arc::new(Shared {
            table: table.clone(),
            rate: config.per_source_qps.map(RateLimit::new),
            forwarder: Forwarder::new(&config),
            tcp_slots: Arc::new(Semaphore::new(config.max_tcp_connections)),
            tcp_per_source: PerSource::new(config.max_tcp_connections_per_source),
            config,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, start_result) = oneshot::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name("aloft-dns".into())
            .spawn(move || run(bound, shared, started, stopped))
            .map_err(|source| start_error(&local_addrs, source))?;
        match start_result.await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(start_error(&local_addrs, source)),
            Err(_) => {
                return Err(start_error(
                    &local_addrs,
                    io::Error::other("the DNS server's thread ended at start-up"),
                ))
            }
        }
        tracing::info!(addrs = ?local_addrs, "DNS server listening");
        Ok(DnsHandle {
            local_addrs,
            table,
            _stop: stop,
        })
    }
}

fn start_error(addrs: &[SocketAddr], source: io::Error) -> DnsError {
    DnsError::Start {
        addrs: addrs.to_vec(),
        source,
    }
}

/// The server's thread: a single-threaded runtime serving every socket until `stopped`.
/// Dropping the runtime at the end drops every task (forwards, connections) with it.
fn run(
    bound: Vec<(std::net::UdpSocket, std::net::TcpListener)>,
    shared: Arc<Shared>,
    started: oneshot::Sender<io::Result<()>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = started.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let mut sockets = Vec::new();
        for (udp, tcp) in bound {
            match (UdpSocket::from_std(udp), TcpListener::from_std(tcp)) {
                (Ok(udp), Ok(tcp)) => sockets.push((udp, tcp)),
                (Err(error), _) | (_, Err(error)) => {
                    let _ = started.send(Err(error));
                    return;
                }
            }
        }
        for (udp, tcp) in sockets {
            tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&shared)));
            tokio::spawn(serve_tcp(tcp, Arc::clone(&shared)));
        }
        let _ = started.send(Ok(()));
        // Ends when the handle's sender is dropped.
        let _ = stopped.await;
    });
}

impl DnsHandle {
    /// The addresses served, UDP and TCP alike (with the ports picked for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// What the server answers, now, to `name` of type `rtype` asked from `view` (for
    /// `aloft dig`). Names outside our zones are [`crate::Status::NotOurs`]: not forwarded.
    pub fn lookup(&self, view: &View, name: &str, rtype: RecordType) -> Answer {
        self.table.borrow().lookup(view, name, rtype)
    }

    /// Stops serving (the same as dropping the handle).
    pub fn shutdown(self) {}
}

/// UDP then TCP on the same address (non-blocking, for the server's runtime); for port 0, TCP
/// takes the port UDP got (retried if that port is taken for TCP).
fn bind(
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener, SocketAddr), DnsError> {
    let error = |transport, source| DnsError::Bind {
        addr,
        transport,
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let udp = std::net::UdpSocket::bind(addr).map_err(|e| error("udp", e))?;
        let local = udp.local_addr().map_err(|e| error("udp", e))?;
        match std::net::TcpListener::bind(local) {
            Ok(tcp) => {
                udp.set_nonblocking(true).map_err(|e| error("udp", e))?;
                tcp.set_nonblocking(true).map_err(|e| error("tcp", e))?;
                return Ok((udp, tcp, local));
            }
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempts < 16 => {
            }
            Err(e) => return Err(error("tcp", e)),
        }
    }
}

impl Shared {
    /// False when `source` has used up its queries per second.
    fn admit(&self, source: IpAddr) -> bool {
        self.rate.as_ref().is_none_or(|rate| rate.allow(source))
    }

    fn table(&self) -> Arc<DnsTable> {
        Arc::clone(&self.table.borrow())
    }

    /// The upstream's answer, or SERVFAIL when there is no upstream, no free forward slot, or
    /// no answer in time.
    async fn forward(&self, query: &[u8], source: IpAddr, transport: Transport) -> Option<Vec<u8>> {
        if !self.forwarder.has_upstream() {
            tracing::debug!(%source, "no upstream DNS resolver to forward to; SERVFAIL");
            return message::servfail(query);
        }
        let Some(_permit) = self.forwarder.permit(source) else {
            tracing::debug!(%source, "too many DNS forwards in flight; SERVFAIL");
            return message::servfail(query);
        };
        let answer = self.forwarder.forward(query, transport).await;
        answer.or_else(|| message::servfail(query))
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    // Big enough for any datagram, so an oversized one is seen whole (and refused) rather than
    // silently cut to a valid-looking prefix.
    let mut buf = vec![0; usize::from(u16::MAX) + 1];
    let mut cache = AnswerCache::default();
    let mut cached = Vec::new();
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "DNS UDP receive failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let query = &buf[..len];
        if !shared.admit(peer.ip()) {
            continue;
        }
        let table = shared.table();
        if cache.get(&table, peer.ip(), query, &mut cached) {
            send(&socket, &cached, peer).await;
            continue;
        }
        match message::respond(query, peer.ip(), &table, Transport::Udp) {
            Reply::Answer(bytes) => send(&socket, &bytes, peer).await,
            Reply::Authoritative(bytes) => {
                cache.insert(peer.ip(), query, &bytes);
                send(&socket, &bytes, peer).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let (socket, shared, query) =
                    (Arc::clone(&socket), Arc::clone(&shared), query.to_vec());
                tokio::spawn(async move {
                    if let Some(answer) = shared.forward(&query, peer.ip(), Transport::Udp).await {
                        send(&socket, &answer, peer).await;
                    }
                });
            }
        }
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, %error, "DNS UDP send failed");
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        // A slot before accept: beyond the bound, connections wait in the kernel's backlog.
        let Ok(slot) = Arc::clone(&shared.tcp_slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(%error, "DNS TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(source_slot) = shared.tcp_per_source.take(peer.ip()) else {
            tracing::debug!(%peer, "too many DNS TCP connections from this source; closing");
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, peer, &shared).await {
                tracing::debug!(%peer, %error, "DNS TCP connection ended");
            }
            drop((slot, source_slot));
        });
    }
}

/// Length-prefixed queries, answered in order, until the client closes, idles for
/// `tcp_idle_timeout`, or sends something that is no query.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> io::Result<()> {
    let idle = shared.config.tcp_idle_timeout;
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "idle");
    stream.set_nodelay(true)?;
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => usize::from(result?),
        };
        if !(12..=MAX_QUERY_LEN).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {len}-byte query"),
            ));
        }
        let mut query = vec![0; len];
        tokio::time::timeout(idle, stream.read_exact(&mut query))
            .await
            .map_err(|_| timed_out())??;
        if !shared.admit(peer.ip()) {
            return Err(io::Error::other("over its queries per second"));
        }
        let table = shared.table();
        let answer = match message::respond(&query, peer.ip(), &table, Transport::Tcp) {
            Reply::Answer(bytes) | Reply::Authoritative(bytes) => bytes,
            Reply::Drop => return Err(io::Error::new(io::ErrorKind::InvalidData, "no query")),
            Reply::Forward => match shared.forward(&query, peer.ip(), Transport::Tcp).await {
                Some(answer) => answer,
                None => return Ok(()),
            },
        };
        let Ok(answer_len) = u16::try_from(answer.len()) else {
            return Err(io::Error::other("an answer longer than 64 KiB"));
        };
        let mut framed = Vec::with_capacity(answer.len() + 2);
        framed.extend_from_slice(&answer_len.to_be_bytes());
        framed.extend_from_slice(&answer);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| timed_out())??;
    }
}
