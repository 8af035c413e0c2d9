//! Keep-alive HTTP/1.1 connections to machines, pooled per upstream address.
//!
//! A connection returns to the pool when its response body has been read to the end (see
//! `hyper_path::body::UpstreamBody`; the h1 fast path returns its raw sockets itself); idle
//! connections older than the idle timeout (Fly: about 4 s) are dropped. Connecting
//! separately from sending lets the caller retry a refused connection on another machine
//! before the request body is touched.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::client::conn::{http2, TrySendError};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// Body sent upstream: the client's (streamed), none (a replayed body-less request), or the
/// client's buffered in full (so that it can be sent again: see `replay.rs`).
pub(crate) enum UpBody {
    Empty,
    Incoming(Incoming),
    Full(Option<Bytes>),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Incoming(b) => Pin::new(b).poll_frame(cx),
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Incoming(b) => b.is_end_stream(),
            UpBody::Full(b) => b.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Incoming(b) => b.size_hint(),
            UpBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            UpBody::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// Idle connections kept per address at most.
const MAX_IDLE_PER_ADDR: usize = 256;

/// A pooled connection and when it became idle.
type IdleConn = (SendRequest<UpBody>, Instant);

/// Idle connections by upstream address: hyper's, and the h1 fast path's plain sockets; and
/// the one HTTP/2 (h2c) connection per address that `h2_backend` services share.
#[derive(Default)]
struct Idle {
    hyper: HashMap<SocketAddr, Vec<IdleConn>>,
    raw: HashMap<SocketAddr, Vec<(TcpStream, Instant)>>,
    h2: HashMap<SocketAddr, http2::SendRequest<UpBody>>,
}

/// A connection to a machine that can send a request: HTTP/1.1 (one request at a time), or
/// HTTP/2 (h2c with prior knowledge, for `http_options.h2_backend`; shared by all requests).
pub(crate) enum Sender {
    H1(SendRequest<UpBody>),
    H2(http2::SendRequest<UpBody>),
}

impl Sender {
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(tx) => tx.ready().await,
            Sender::H2(tx) => tx.ready().await,
        }
    }

    pub async fn try_send_request(
        &mut self,
        mut req: Request<UpBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpBody>>> {
        match self {
            Sender::H1(tx) => tx.try_send_request(req).await,
            Sender::H2(tx) => {
                absolute_target(&mut req);
                tx.try_send_request(req).await
            }
        }
    }
}

/// HTTP/2 requests carry `:scheme` and `:authority`: an origin-form target becomes
/// `http://<Host><path>` (plain h2c to the machine).
fn absolute_target(req: &mut Request<UpBody>) {
    if req.uri().scheme().is_some() {
        return;
    }
    let authority = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

type Shard = Mutex<Idle>;

std::thread_local! {
    /// The index of the proxy worker thread this is (see `start_workers`).
    pub(crate) static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

pub(crate) struct Pool {
    /// With worker threads, one shard per worker (and a last one for any other thread): a
    /// connection's task lives on the runtime that opened it, so requests on that thread reuse
    /// it without a thread hop, and a worker's lock is never contended by the others. Without,
    /// a single shard.
    shards: Vec<Shard>,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// A connection ready to send one request.
pub(crate) struct Conn {
    pub tx: Sender,
    /// Taken from the pool (may turn out stale) rather than freshly opened.
    pub reused: bool,
}

impl Pool {
    /// `workers`: the number of proxy worker threads (0: tasks run on any thread).
    pub fn new(idle_timeout: Duration, connect_timeout: Duration, workers: usize) -> Pool {
        let n = if workers == 0 { 1 } else { workers + 1 };
        Pool {
            shards: (0..n).map(|_| Shard::default()).collect(),
            idle_timeout,
            connect_timeout,
        }
    }

    /// This thread's shard.
    fn shard(&self) -> &Shard {
        let last = self.shards.len() - 1;
        if last == 0 {
            return &self.shards[0];
        }
        let i = WORKER.with(|w| w.get()).map_or(last, |i| i.min(last));
        &self.shards[i]
    }

    /// An idle pooled connection to `addr` if one is usable, else a new one; `h2` for the
    /// shared HTTP/2 connection.
    pub async fn checkout(&self, addr: SocketAddr, h2: bool) -> io::Result<Conn> {
        let idle = if h2 {
            self.shared_h2(addr).map(Sender::H2)
        } else {
            self.take_idle(addr).map(Sender::H1)
        };
        if let Some(tx) = idle {
            return Ok(Conn { tx, reused: true });
        }
        Ok(Conn {
            tx: self.connect(addr, h2).await?,
            reused: false,
        })
    }

    fn shared_h2(&self, addr: SocketAddr) -> Option<http2::SendRequest<UpBody>> {
        let idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        idle.h2.get(&addr).filter(|tx| !tx.is_closed()).cloned()
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<UpBody>> {
        let mut idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.hyper.get_mut(&addr)?;
        while let Some((tx, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && !tx.is_closed() {
                return Some(tx);
            }
        }
        None
    }

    /// A plain socket to `addr` for the h1 fast path: an idle pooled one that is still open,
    /// else a new one; `true` when pooled.
    pub async fn checkout_raw(&self, addr: SocketAddr) -> io::Result<(TcpStream, bool)> {
        if let Some(s) = self.take_idle_raw(addr) {
            return Ok((s, true));
        }
        Ok((self.open(addr).await?, false))
    }

    fn take_idle_raw(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.raw.get_mut(&addr)?;
        while let Some((s, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && still_open(&s) {
                return Some(s);
            }
        }
        None
    }

    /// Returns a fast-path socket whose last response was read to its end.
    pub fn put_raw(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.raw.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_ADDR {
            list.remove(0);
        }
        list.push((stream, Instant::now()));
    }

    async fn open(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )
            })??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Opens a fresh connection (also used to retry after a stale pooled one). A new HTTP/2
    /// connection replaces the shared one of its address.
    pub async fn connect(&self, addr: SocketAddr, h2: bool) -> io::Result<Sender> {
        if !h2 {
            return Ok(Sender::H1(self.connect_h1(addr).await?));
        }
        let stream = self.open(addr).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "upstream h2 connection ended: {e}");
            }
        });
        self.shard()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .h2
            .insert(addr, tx.clone());
        Ok(Sender::H2(tx))
    }

    async fn connect_h1(&self, addr: SocketAddr) -> io::Result<SendRequest<UpBody>> {
        let stream = self.open(addr).await?;
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, "upstream connection ended: {e}");
            }
        });
        Ok(tx)
    }

    /// Returns a connection whose last response is complete (an HTTP/2 one stays shared).
    pub fn put(&self, addr: SocketAddr, tx: Sender) {
        let Sender::H1(tx) = tx else {
            return;
        };
        if tx.is_closed() {
            return;
        }
        let mut idle = self.shard().lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.hyper.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_ADDR {
            list.remove(0);
        }
        list.push((tx, Instant::now()));
    }

    /// Drops idle connections to `addr` (after it refused or reset: they are likely dead).
    pub fn forget(&self, addr: SocketAddr) {
        for shard in &self.shards {
            let mut idle = shard.lock().unwrap_or_else(|e| e.into_inner());
            idle.hyper.remove(&addr);
            idle.raw.remove(&addr);
            idle.h2.remove(&addr);
        }
    }

    /// Drops expired idle connections everywhere.
    pub fn sweep(&self) {
        for shard in &self.shards {
            let mut idle = shard.lock().unwrap_or_else(|e| e.into_inner());
            for list in idle.hyper.values_mut() {
                list.retain(|(tx, since)| since.elapsed() < self.idle_timeout && !tx.is_closed());
            }
            idle.hyper.retain(|_, l| !l.is_empty());
            for list in idle.raw.values_mut() {
                list.retain(|(_, since)| since.elapsed() < self.idle_timeout);
            }
            idle.raw.retain(|_, l| !l.is_empty());
            idle.h2.retain(|_, tx| !tx.is_closed());
        }
    }
}

/// Whether an idle socket is still open: nothing to read (the peer has not closed it or sent
/// anything unasked). Without a syscall when the reactor saw no readiness since the last read
/// that found nothing.
fn still_open(s: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if s.poll_read_ready(&mut cx).is_pending() {
        return true;
    }
    matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
