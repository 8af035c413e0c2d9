//! The hyper path's response body: the proxy's own answers, a machine's body (which returns
//! its connection to the pool once read to the end and holds the request's lease until then),
//! or either gzipped (`compress.rs`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::compress::GzipBody;
use crate::lifecycle::LeaseRef;
use crate::pool::{Pool, Sender};

/// What the proxy answers with.
pub(crate) enum RespBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// `http_options.compress` (see `compress.rs`).
    Gzip(Box<GzipBody<RespBody>>),
}

impl RespBody {
    pub fn empty() -> RespBody {
        RespBody::Full(None)
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Upstream(u) => Pin::new(u).poll_frame(cx),
            RespBody::Gzip(g) => Pin::new(g.as_mut()).poll_frame(cx),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Upstream(u) => u.inner.is_end_stream(),
            RespBody::Gzip(g) => g.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RespBody::Full(None) => SizeHint::with_exact(0),
            RespBody::Upstream(u) => u.inner.size_hint(),
            RespBody::Gzip(g) => g.size_hint(),
        }
    }
}

/// A machine's response body: returns the connection to the pool once read to the end and
/// holds the request's lease (for `requests` concurrency) until then.
pub(crate) struct UpstreamBody {
    inner: Incoming,
    ret: Option<(Arc<Pool>, SocketAddr, Sender)>,
    _lease: Option<LeaseRef>,
}

impl UpstreamBody {
    /// `inner` from the connection `tx` to `addr`, holding `lease` until dropped.
    pub fn new(
        inner: Incoming,
        pool: Arc<Pool>,
        addr: SocketAddr,
        tx: Sender,
        lease: Option<LeaseRef>,
    ) -> UpstreamBody {
        UpstreamBody {
            inner,
            ret: Some((pool, addr, tx)),
            _lease: lease,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &r {
            // A broken upstream connection must not go back to the pool.
            self.ret = None;
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some((pool, addr, tx)) = self.ret.take() {
            if self.inner.is_end_stream() {
                pool.put(addr, tx);
            }
        }
    }
}
