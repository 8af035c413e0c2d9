//! The fast path of the `http` handler: plain HTTP/1.1 requests served by one task per client
//! connection that also drives the machine's connection — no hyper dispatch between two tasks,
//! no header maps, heads written straight from the parsed bytes. It exists for throughput (see
//! `bench/proxy.sh`); the hyper path (`hyper_path/`) stays the reference for behaviour.
//!
//! What it takes: HTTP/1.1 requests with a `Host`, an origin-form target and no body or a
//! `Content-Length` body of at most `MAX_REPLAY_BODY` (read in full first, as the hyper path
//! does, so the request can be sent again), on a port that exists and needs no `force_https`
//! redirect, `h2_backend` or `compress`. Anything else — HTTP/2 and HTTP/1.0, upgrades,
//! `Expect`, chunked or large request bodies, routing-hint headers, malformed or oversized
//! heads — hands the connection to hyper with the unread bytes in front (`rewind.rs`), for
//! good: [`serve`] returns it to its caller (`http.rs`).
//!
//! A request goes to a machine through the request lifecycle (`lifecycle/`), to which this
//! module is a back-end ([`H1Upstream`]): raw pooled sockets, the request head written for
//! the machine once (`head.rs`, by the header policy) and sent again as it is (edited for a
//! replay) on a retry or replay. Once a response head is passed on, errors end the client
//! connection, as in the hyper path. The proxy's own answers are written by `write.rs`.
//!
//! Invariant: for any request, the machine sees the same request line and headers (names'
//! case aside) and the client the same response as through the hyper path.

mod chunked;
mod head;
mod rewind;
mod write;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{StatusCode, Version};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::core::{Core, Lookup};
use crate::headers::{self, Values};
use crate::hints::Hints;
use crate::lifecycle::{self, Answer, ConnCtx, Edit, Outcome, Sent, Upstream};
use crate::pool::Pool;
use crate::table::PortRoute;
use chunked::ChunkedScan;
use head::{
    Decoration, Framing, OwnResponse, ParsedRequest, ParsedResponse, RequestPlan, ResponsePlan,
};
pub(crate) use rewind::Rewind;

/// The fast path's requests carry no routing hints.
static NO_HINTS: Hints = Hints::NONE;

/// A machine's response head may be this large at most (about hyper's limit).
const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Read size for bodies.
const READ_CHUNK: usize = 16 * 1024;
/// How long a client connection may idle between requests unless the service's
/// `http_options.idle_timeout` says otherwise (nginx's default keepalive_timeout is 75 s).
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(60);

/// Client connection timeouts.
#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    /// A request head must arrive within this of its first byte (of the connection's start
    /// for the first request).
    pub header: Duration,
    /// Between requests, a kept-alive connection may idle this long.
    pub idle: Duration,
}

/// Buffers of one client connection, reused from request to request.
struct Buffers {
    /// Bytes from the client not yet served.
    client: BytesMut,
    /// The request head for the machine (and a small body after it).
    up_head: Vec<u8>,
    /// `up_head` edited for one attempt (a replay); empty until needed.
    edited: Vec<u8>,
    /// The proxy's own response headers of the route (see `head::OwnResponse`).
    own_response: OwnResponse,
    /// The proxy's own request headers, the same for every request of the connection that
    /// brings no list header of theirs (see `head::request`); made on first use.
    own: Vec<u8>,
    /// Bytes from the machine.
    up: BytesMut,
    /// The response head for the client (and the first body bytes after it).
    down: Vec<u8>,
}

enum Next {
    Continue,
    Close,
    /// To hyper, with the unserved bytes.
    Hyper,
}

/// Serves a client connection on the fast path until it ends (`None`) or a request needs
/// hyper: then the connection is returned with its unserved bytes in front.
pub(crate) async fn serve<IO>(
    core: &Arc<Core>,
    ctx: &ConnCtx,
    mut io: IO,
    timeouts: Timeouts,
) -> Option<Rewind<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut b = Buffers {
        client: BytesMut::with_capacity(8 * 1024),
        up_head: Vec::with_capacity(2048),
        edited: Vec::new(),
        own: Vec::new(),
        own_response: OwnResponse::default(),
        up: BytesMut::with_capacity(READ_CHUNK),
        down: Vec::with_capacity(2048),
    };
    let mut first = true;
    loop {
        let next = request(core, ctx, &mut io, &mut b, timeouts, first).await;
        first = false;
        match next {
            Next::Continue => {}
            Next::Close => {
                let _ = io.shutdown().await;
                return None;
            }
            Next::Hyper => break,
        }
    }
    let prefix = b.client.split().freeze();
    Some(Rewind::new(prefix, io))
}

/// Reads and serves one request.
async fn request<IO>(
    core: &Arc<Core>,
    ctx: &ConnCtx,
    io: &mut IO,
    b: &mut Buffers,
    timeouts: Timeouts,
    first: bool,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    // The head must arrive within `timeouts.header` of its first byte (of the connection's
    // start for the first request); before that, a kept-alive connection may idle longer.
    let mut started = first || !b.client.is_empty();
    let wait = if started {
        timeouts.header
    } else {
        timeouts.idle
    };
    let mut deadline = tokio::time::Instant::now() + wait;
    let plan = loop {
        if !b.client.is_empty() {
            match head::request(&b.client, &ctx.values, &mut b.own, &mut b.up_head) {
                // A head within the limit (hyper answers 431 to the others).
                ParsedRequest::Fast(p) if p.head_len <= core.cfg().max_header_bytes => break p,
                ParsedRequest::Fast(_) => return Next::Hyper,
                ParsedRequest::NotFast => return Next::Hyper,
                // hyper answers 431.
                ParsedRequest::Partial if b.client.len() >= core.cfg().max_header_bytes => {
                    return Next::Hyper
                }
                ParsedRequest::Partial => {}
            }
        }
        if b.client.capacity() - b.client.len() < 1024 {
            b.client.reserve(8 * 1024);
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut b.client)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Next::Close,
            Ok(Ok(_)) if !started => {
                started = true;
                deadline = tokio::time::Instant::now() + timeouts.header;
            }
            Ok(Ok(_)) => {}
            // Headers too slow (slowloris), or a keep-alive connection idle too long.
            Err(_) => return Next::Close,
        }
    };
    // A challenge token of an ACME issuance is answered before any app sees the request.
    if core.challenges().answers_http01(&b.client[..plan.head_len]) {
        return Next::Hyper;
    }
    let host = std::str::from_utf8(&b.client[plan.host.0..plan.host.1]).ok();
    // Unknown hosts (a 404 naming the hostnames) and ports no longer served: hyper answers.
    let Lookup::Route(route) = core.route(ctx.bind, host) else {
        return Next::Hyper;
    };
    let o = &route.options;
    if (o.force_https && !ctx.tls)
        || o.http_options.h2_backend
        || o.http_options.compress
        || !route.statics.is_empty()
    {
        return Next::Hyper;
    }
    let total = plan.head_len + plan.body_len;
    while b.client.len() < total {
        b.client.reserve(total - b.client.len());
        match io.read_buf(&mut b.client).await {
            Ok(0) | Err(_) => return Next::Close,
            Ok(_) => {}
        }
    }
    let next = exchange(core, ctx, &route, io, b, &plan, total).await;
    b.client.advance(total);
    if b.client.capacity() > 64 * 1024 && b.client.len() < 8 * 1024 {
        // After a large body: an idle connection keeps a small buffer only.
        let rest = std::mem::replace(&mut b.client, BytesMut::with_capacity(8 * 1024));
        b.client.extend_from_slice(&rest);
    }
    match next {
        Next::Continue if plan.close => Next::Close,
        n => n,
    }
}

/// Sends the request to a machine through the lifecycle and passes the answer on.
async fn exchange<IO>(
    core: &Core,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    io: &mut IO,
    b: &mut Buffers,
    plan: &RequestPlan,
    total: usize,
) -> Next
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let request_id = ctx.values.request_id();
    let date = write::http_date();
    let deco = Decoration {
        route,
        pristine: route.options.http_options.pristine,
        values: Values {
            conn: &ctx.values,
            version: Version::HTTP_11,
            request_id: request_id.as_ref(),
        },
        response_headers: &route.options.http_options.response_headers,
        date: &date,
    };
    let mut up = H1Upstream {
        pool: core.pool(),
        io,
        b,
        plan,
        total,
        deco: &deco,
        conn: None,
    };
    let outcome = lifecycle::run(core, ctx, route, &NO_HINTS, &mut up).await;
    let H1Upstream { io, b, conn, .. } = up;
    let (head, lease) = match outcome {
        Outcome::Response { head, lease } => (head, lease),
        Outcome::Answer(a) => return answer(io, b, route, &deco.values, a, plan).await,
        Outcome::Abort => return Next::Close,
    };
    let Some((mut machine, addr)) = conn else {
        return Next::Close;
    };
    let rp = match head {
        Some(rp) => rp,
        // A `fly-replay` the lifecycle did not act on: the response goes to the client.
        None => {
            b.down.clear();
            let again = head::response(
                &b.up,
                plan.head_method,
                plan.close,
                false,
                &deco,
                &mut b.own_response,
                &mut b.down,
            );
            match again {
                ParsedResponse::Ready(rp) => rp,
                ParsedResponse::Bad(why) => {
                    lease.metrics().error();
                    let id = &lease.backend.machine_id;
                    let a = Answer::new(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "machine {id} ({addr}) sent a response the proxy cannot pass on: \
                             {why}\n"
                        ),
                    );
                    return answer(io, b, route, &deco.values, a, plan).await;
                }
                // The head was complete when the replay was read.
                _ => return Next::Close,
            }
        }
    };
    match pass_body(io, &mut machine, b, &rp, total).await {
        Ok(reusable) => {
            if reusable && rp.reusable {
                core.pool().put_raw(addr, machine);
            }
            drop(lease);
            Next::Continue
        }
        Err(_) => Next::Close,
    }
}

/// Writes one of the proxy's own answers, with the response headers of the policy.
async fn answer<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    b: &mut Buffers,
    route: &PortRoute,
    values: &Values<'_>,
    answer: Answer,
    plan: &RequestPlan,
) -> Next {
    let mut resp = answer.into_response(values.request_id);
    headers::decorate(resp.headers_mut(), values, &route.options.http_options);
    match write::response(io, &mut b.down, resp, plan.head_method, plan.close).await {
        Ok(()) => Next::Continue,
        Err(_) => Next::Close,
    }
}

/// The fast path as a back-end of the request lifecycle: raw pooled sockets, the request
/// head written once for the machine (edited per attempt when the lifecycle asks), the body
/// from the client buffer, the response head parsed and written for the client (`head.rs`).
struct H1Upstream<'a, IO> {
    pool: &'a Arc<Pool>,
    io: &'a mut IO,
    b: &'a mut Buffers,
    plan: &'a RequestPlan,
    /// The request's bytes in `b.client` (head and body).
    total: usize,
    deco: &'a Decoration<'a>,
    /// The machine connection of the response head last read, kept for its body.
    conn: Option<(TcpStream, SocketAddr)>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Upstream for H1Upstream<'_, IO> {
    /// A socket, and whether it came from the pool.
    type Conn = (TcpStream, bool);
    /// The response head written for the client in `b.down`; `None` for a `fly-replay`
    /// answer (nothing written).
    type Head = Option<ResponsePlan>;

    fn can_send(&self) -> bool {
        // The request stays in the client buffer.
        true
    }

    fn replayable(&self) -> bool {
        true
    }

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<(TcpStream, bool)> {
        self.pool.checkout_raw(addr).await
    }

    async fn send(
        &mut self,
        (mut up, reused): (TcpStream, bool),
        addr: SocketAddr,
        edits: &[Edit],
    ) -> Sent<Option<ResponsePlan>> {
        let b = &mut *self.b;
        let plan = self.plan;
        let head = if edits.is_empty() {
            &mut b.up_head
        } else {
            head::edit(&b.up_head, edits, &mut b.edited);
            &mut b.edited
        };
        let body = &b.client[plan.head_len..self.total];
        let sent = if body.len() <= READ_CHUNK {
            let head_len = head.len();
            head.extend_from_slice(body);
            let r = up.write_all(head).await;
            head.truncate(head_len);
            r
        } else {
            match up.write_all(head).await {
                Ok(()) => up.write_all(body).await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = sent {
            // The machine did not get the whole request, so it cannot have acted on it: safe
            // to send again (also with a body, unlike hyper, which cannot tell a partial write
            // from a complete one).
            return Sent::Failed {
                error: e.to_string(),
                resend: true,
                reused,
            };
        }
        b.up.clear();
        loop {
            if !b.up.is_empty() {
                b.down.clear();
                let parsed = head::response(
                    &b.up,
                    plan.head_method,
                    plan.close,
                    true,
                    self.deco,
                    &mut b.own_response,
                    &mut b.down,
                );
                match parsed {
                    ParsedResponse::Ready(rp) => {
                        let status = rp.status;
                        self.conn = Some((up, addr));
                        return Sent::Response {
                            head: Some(rp),
                            status,
                            replay: None,
                        };
                    }
                    ParsedResponse::Replay(value, status) => {
                        self.conn = Some((up, addr));
                        return Sent::Response {
                            head: None,
                            status,
                            replay: Some(value),
                        };
                    }
                    ParsedResponse::Informational(n) => {
                        b.up.advance(n);
                        continue;
                    }
                    ParsedResponse::Partial if b.up.len() >= MAX_RESPONSE_HEAD => {
                        return Sent::Bad("its response head is too large".into());
                    }
                    ParsedResponse::Partial => {}
                    ParsedResponse::Bad(why) => return Sent::Bad(why),
                }
            }
            let error = match read_up(&mut up, &mut b.up, self.io, &mut b.client, self.total).await
            {
                UpRead::Data(0) => "connection closed before a response".to_string(),
                UpRead::Data(_) => continue,
                UpRead::Failed(e) => e.to_string(),
                // Nobody to answer: the machine's connection is dropped (it may be mid-answer).
                UpRead::ClientGone => return Sent::ClientGone,
            };
            // Sent again only when the machine can have done nothing with it: no body, and
            // not a byte of an answer.
            return Sent::Failed {
                error,
                resend: b.up.is_empty() && plan.body_len == 0,
                reused,
            };
        }
    }

    fn discard(&mut self, _head: Option<ResponsePlan>) {
        // The unread body and its connection are dropped.
        self.conn = None;
    }
}

/// Writes the response head (in `b.down`) and the body after it (its first bytes in `b.up`
/// after the head). `Ok(true)` when the machine's connection ended exactly at the body's end.
async fn pass_body<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    up: &mut TcpStream,
    b: &mut Buffers,
    rp: &ResponsePlan,
    total: usize,
) -> std::io::Result<bool> {
    b.up.advance(rp.head_len);
    let clean = match rp.framing {
        Framing::Empty => {
            io.write_all(&b.down).await?;
            b.up.is_empty()
        }
        Framing::Length(n) => {
            let first = (b.up.len() as u64).min(n) as usize;
            let mut clean = b.up.len() == first;
            b.down.extend_from_slice(&b.up[..first]);
            io.write_all(&b.down).await?;
            let mut left = n - first as u64;
            while left > 0 {
                b.up.clear();
                if next_bytes(up, b, io, total).await? == 0 {
                    return Err(early_end());
                }
                let take = (b.up.len() as u64).min(left) as usize;
                io.write_all(&b.up[..take]).await?;
                left -= take as u64;
                clean = take == b.up.len();
            }
            clean
        }
        Framing::Chunked => {
            let mut scan = ChunkedScan::default();
            let down = &mut b.down;
            let mut ended = scan
                .feed(&b.up, |d| chunk(down, d))
                .map_err(|_| malformed())?;
            let mut clean = ended.is_none_or(|n| n == b.up.len());
            if ended.is_some() {
                b.down.extend_from_slice(b"0\r\n\r\n");
            }
            io.write_all(&b.down).await?;
            while ended.is_none() {
                b.up.clear();
                if next_bytes(up, b, io, total).await? == 0 {
                    return Err(early_end());
                }
                b.down.clear();
                let down = &mut b.down;
                ended = scan
                    .feed(&b.up, |d| chunk(down, d))
                    .map_err(|_| malformed())?;
                if let Some(n) = ended {
                    clean = n == b.up.len();
                    b.down.extend_from_slice(b"0\r\n\r\n");
                }
                io.write_all(&b.down).await?;
            }
            clean
        }
        Framing::Close => {
            chunk(&mut b.down, &b.up);
            io.write_all(&b.down).await?;
            loop {
                b.up.clear();
                if next_bytes(up, b, io, total).await? == 0 {
                    break;
                }
                b.down.clear();
                chunk(&mut b.down, &b.up);
                io.write_all(&b.down).await?;
            }
            io.write_all(b"0\r\n\r\n").await?;
            false
        }
    };
    io.flush().await?;
    Ok(clean)
}

/// The next bytes of a body from the machine into `b.up`; an error when the client went away.
async fn next_bytes<IO: AsyncRead + Unpin>(
    up: &mut TcpStream,
    b: &mut Buffers,
    io: &mut IO,
    total: usize,
) -> std::io::Result<usize> {
    match read_up(up, &mut b.up, io, &mut b.client, total).await {
        UpRead::Data(n) => Ok(n),
        UpRead::Failed(e) => Err(e),
        UpRead::ClientGone => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "the client went away",
        )),
    }
}

/// Client bytes read ahead (pipelined requests) while a response is on its way, at most.
const READ_AHEAD: usize = 64 * 1024;

enum UpRead {
    Data(usize),
    Failed(std::io::Error),
    ClientGone,
}

/// Reads from the machine and meanwhile watches the client, as hyper does: a client that
/// closes or breaks its connection ends the request (the caller drops the machine's
/// connection and the lease). Bytes the client sends meanwhile (pipelined requests) are kept
/// after the current request's `total` bytes.
async fn read_up<IO: AsyncRead + Unpin>(
    up: &mut TcpStream,
    up_buf: &mut BytesMut,
    io: &mut IO,
    client: &mut BytesMut,
    total: usize,
) -> UpRead {
    up_buf.reserve(READ_CHUNK);
    loop {
        let watch = client.len() < total + READ_AHEAD;
        tokio::select! {
            biased;
            r = up.read_buf(up_buf) => return match r {
                Ok(n) => UpRead::Data(n),
                Err(e) => UpRead::Failed(e),
            },
            r = io.read_buf(client), if watch => match r {
                Ok(0) | Err(_) => return UpRead::ClientGone,
                Ok(_) => {}
            },
        }
    }
}

/// Appends `data` as one chunk (nothing when empty: an empty chunk would end the body).
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn early_end() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the machine closed the connection before the end of the body",
    )
}

fn malformed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed chunked body")
}
