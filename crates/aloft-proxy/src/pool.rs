//! Keep-alive HTTP/1.1 connections to machines, pooled per upstream address.
//!
//! A connection returns to the pool when its response body has been read to the end (see
//! `http::UpstreamBody`); idle connections older than the idle timeout (Fly: about 4 s) are
//! dropped. Connecting separately from sending lets the caller retry a refused connection on
//! another machine before the request body is touched.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Body type sent upstream.
pub(crate) type UpBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Idle connections kept per address at most.
const MAX_IDLE_PER_ADDR: usize = 256;

/// A pooled connection and when it became idle.
type IdleConn = (SendRequest<UpBody>, Instant);

/// Upstream address and, with worker threads, the thread owning the connection.
type PoolKey = (SocketAddr, Option<std::thread::ThreadId>);

pub(crate) struct Pool {
    /// Keyed by address and, with worker threads, by thread: a connection's task lives on the
    /// runtime that opened it, so requests on that thread reuse it without a thread hop.
    idle: Mutex<HashMap<PoolKey, Vec<IdleConn>>>,
    per_thread: bool,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

/// A connection ready to send one request.
pub(crate) struct Conn {
    pub tx: SendRequest<UpBody>,
    /// Taken from the pool (may turn out stale) rather than freshly opened.
    pub reused: bool,
}

impl Pool {
    pub fn new(idle_timeout: Duration, connect_timeout: Duration, per_thread: bool) -> Pool {
        Pool {
            idle: Mutex::default(),
            idle_timeout,
            connect_timeout,
            per_thread,
        }
    }

    fn key(&self, addr: SocketAddr) -> PoolKey {
        (addr, self.per_thread.then(|| std::thread::current().id()))
    }

    /// An idle pooled connection to `addr` if one is usable, else a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> io::Result<Conn> {
        if let Some(tx) = self.take_idle(addr) {
            return Ok(Conn { tx, reused: true });
        }
        Ok(Conn {
            tx: self.connect(addr).await?,
            reused: false,
        })
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<UpBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&self.key(addr))?;
        while let Some((tx, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && !tx.is_closed() {
                return Some(tx);
            }
        }
        None
    }

    /// Opens a fresh connection (also used to retry after a stale pooled one).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<SendRequest<UpBody>> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )
            })??;
        let _ = stream.set_nodelay(true);
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

    /// Returns a connection whose last response is complete.
    pub fn put(&self, addr: SocketAddr, tx: SendRequest<UpBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.key(addr)).or_default();
        if list.len() >= MAX_IDLE_PER_ADDR {
            list.remove(0);
        }
        list.push((tx, Instant::now()));
    }

    /// Drops idle connections to `addr` (after it refused or reset: they are likely dead).
    pub fn forget(&self, addr: SocketAddr) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, _), _| *a != addr);
    }

    /// Drops expired idle connections everywhere.
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for list in idle.values_mut() {
            list.retain(|(tx, since)| since.elapsed() < self.idle_timeout && !tx.is_closed());
        }
        idle.retain(|_, l| !l.is_empty());
    }
}
