//! The fast path of the `http` handler: plain HTTP/1.1 requests served by one task per client
//! connection that also drives the machine's connection — no hyper dispatch between two tasks,
//! no header maps, heads written straight from the parsed bytes. It exists for throughput (see
//! `bench/proxy.sh`); the hyper path (`http.rs`) stays the reference for behaviour.
//!
//! What it takes: HTTP/1.1 requests with a `Host`, an origin-form target and no body or a
//! `Content-Length` body of at most `MAX_REPLAY_BODY` (read in full first, as the hyper path
//! does, so the request can be sent again), on a port that exists and needs no `force_https`
//! redirect. Anything else — HTTP/2 and HTTP/1.0, upgrades, `Expect`, chunked or large request
//! bodies, routing-hint headers, malformed or oversized heads — hands the connection to hyper
//! with the unread bytes in front (`rewind.rs`), for good.
//!
//! Within a request it handles only the plain case: a machine picked, a pooled or new socket
//! to it, the request written, a response head read. Anything else before the response head
//! (no machine, refused or stale connection, `fly-replay`) continues in `hp::forward`, the
//! hyper path's retry/replay loop, with what was learnt so far; its response is written here
//! (`write.rs`). Once a response head is passed on, errors end the client connection, as in
//! the hyper path.
//!
//! Invariant: for any request, the machine sees the same request line and headers (names'
//! case aside) and the client the same response as through the hyper path.

mod chunked;
mod head;
mod rewind;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, Version};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::core::Core;
use crate::headers::Values;
use crate::hints::Hints;
use crate::http::{self as hp, ConnCtx, Forward, ReplayStep, RespBody, Template};
use crate::table::PortRoute;
use chunked::ChunkedScan;
use head::{Decoration, Framing, ParsedRequest, ParsedResponse, RequestPlan, ResponsePlan};

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

/// Serves a client connection on the fast path until it ends or a request needs hyper.
pub(crate) async fn serve<IO>(core: Arc<Core>, ctx: Arc<ConnCtx>, mut io: IO, timeouts: Timeouts)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = Buffers {
        client: BytesMut::with_capacity(8 * 1024),
        up_head: Vec::with_capacity(2048),
        up: BytesMut::with_capacity(READ_CHUNK),
        down: Vec::with_capacity(2048),
    };
    let mut first = true;
    loop {
        let next = request(&core, &ctx, &mut io, &mut b, timeouts, first).await;
        first = false;
        match next {
            Next::Continue => {}
            Next::Close => {
                let _ = io.shutdown().await;
                return;
            }
            Next::Hyper => break,
        }
    }
    let prefix = b.client.split().freeze();
    drop(b);
    hp::serve_hyper(core, ctx, rewind::Rewind::new(prefix, io), timeouts.header).await;
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
            match head::request(&b.client, &ctx.values, &mut b.up_head) {
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
    let Some(route) = core.route(ctx.port) else {
        return Next::Hyper;
    };
    let o = &route.options;
    if (o.force_https && !ctx.tls) || o.http_options.h2_backend || o.http_options.compress {
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
    let request_id = ctx.values.request_id();
    let outcome = exchange(core, ctx, &route, io, b, &plan, total, request_id.as_ref()).await;
    let next = match outcome {
        Outcome::Done => Next::Continue,
        Outcome::Abort => Next::Close,
        Outcome::Delegate(f) => {
            let f = Forward {
                template: template(&b.up_head, &b.client[plan.head_len..total]),
                ..*f
            };
            let mut resp = hp::forward(core, ctx, &route, request_id.as_ref(), f).await;
            hp::decorate(ctx, &route, &mut resp, request_id);
            answer(io, b, resp, &plan).await
        }
        Outcome::Answer(resp) => {
            let mut resp = *resp;
            hp::decorate(ctx, &route, &mut resp, request_id);
            answer(io, b, resp, &plan).await
        }
    };
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

async fn answer<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    b: &mut Buffers,
    resp: Response<RespBody>,
    plan: &RequestPlan,
) -> Next {
    // A 101 (a machine switching protocols unasked) leaves nothing HTTP on the connection.
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    match write::response(
        io,
        &mut b.down,
        resp,
        plan.head_method,
        plan.close || switching,
    )
    .await
    {
        Ok(()) if !switching => Next::Continue,
        _ => Next::Close,
    }
}

/// How one request went.
enum Outcome {
    /// The response was passed on.
    Done,
    /// The client connection must end (broken mid-response).
    Abort,
    /// Not the plain case: `hp::forward` carries on from here.
    Delegate(Box<Forward>),
    /// The client gets this.
    Answer(Box<Response<RespBody>>),
}

/// Sends the request to a machine and passes its response on.
#[allow(clippy::too_many_arguments)]
async fn exchange<IO>(
    core: &Arc<Core>,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    io: &mut IO,
    b: &mut Buffers,
    plan: &RequestPlan,
    total: usize,
    request_id: Option<&HeaderValue>,
) -> Outcome
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let body_less = plan.body_len == 0;
    let hints = Hints::default();
    let lease = match hp::lease_for(core, ctx, route, &[], true, &hints).await {
        Ok(l) => l,
        Err(reason) => {
            return Outcome::Answer(Box::new(hp::unavailable(
                core, route, None, &reason, request_id,
            )))
        }
    };
    let delegate = |exclude: Vec<String>, last_error: String, attempts: usize| {
        Outcome::Delegate(Box::new(Forward {
            client_version: Version::HTTP_11,
            body_less,
            exclude,
            last_error,
            attempts,
            route_read_before: true,
            ..Forward::default()
        }))
    };
    let Some(addr) = lease.backend.addr else {
        return delegate(Vec::new(), String::new(), 1);
    };
    let machine = lease.backend.machine_id.clone();
    let t0 = Instant::now();
    let (mut up, reused) = match core.pool().checkout_raw(addr).await {
        Ok(c) => c,
        // `forward` retries with all its rules (a booting machine is waited for, a refusing
        // one excluded).
        Err(_) => {
            hp::drop_affinity(ctx);
            return delegate(Vec::new(), String::new(), 0);
        }
    };
    core.machines().connected(&machine);
    let body = &b.client[plan.head_len..total];
    let head_len = b.up_head.len();
    let sent = if body.len() <= READ_CHUNK {
        b.up_head.extend_from_slice(body);
        let r = up.write_all(&b.up_head).await;
        b.up_head.truncate(head_len);
        r
    } else {
        match up.write_all(&b.up_head).await {
            Ok(()) => up.write_all(body).await,
            Err(e) => Err(e),
        }
    };
    if let Err(e) = sent {
        // The machine did not get the whole request, so it cannot have acted on it: safe to
        // send again (also with a body, unlike hyper, which cannot tell a partial write from
        // a complete one), elsewhere if this was a new connection.
        lease.metrics().error();
        core.pool().forget(addr);
        hp::drop_affinity(ctx);
        let exclude = if reused {
            Vec::new()
        } else {
            vec![machine.clone()]
        };
        return delegate(exclude, format!("machine {machine} ({addr}): {e}"), 1);
    }
    let deco = Decoration {
        pristine: route.options.http_options.pristine,
        values: Values {
            conn: &ctx.values,
            version: Version::HTTP_11,
            request_id,
        },
        response_headers: &route.options.http_options.response_headers,
        date: &write::http_date(),
    };
    b.up.clear();
    let mut honour_replay = true;
    let rp = loop {
        if !b.up.is_empty() {
            b.down.clear();
            match head::response(
                &b.up,
                plan.head_method,
                plan.close,
                honour_replay,
                &deco,
                &mut b.down,
            ) {
                ParsedResponse::Ready(rp) => break rp,
                ParsedResponse::Informational(n) => {
                    b.up.advance(n);
                    continue;
                }
                ParsedResponse::Partial if b.up.len() >= MAX_RESPONSE_HEAD => {
                    lease.metrics().error();
                    return bad_gateway(
                        &machine,
                        addr,
                        "its response head is too large",
                        request_id,
                    );
                }
                ParsedResponse::Partial => {}
                ParsedResponse::Bad(why) => {
                    lease.metrics().error();
                    return bad_gateway(&machine, addr, &why, request_id);
                }
                ParsedResponse::Replay(value, status) => {
                    lease.metrics().record(status, t0.elapsed());
                    match hp::replay_step(
                        &value,
                        route,
                        &machine,
                        &lease.backend.region,
                        true,
                        0,
                        request_id,
                    ) {
                        ReplayStep::Ignore => {
                            honour_replay = false;
                            continue;
                        }
                        ReplayStep::Answer(resp) => return Outcome::Answer(Box::new(resp)),
                        ReplayStep::Replay(r) => {
                            return Outcome::Delegate(Box::new(Forward {
                                client_version: Version::HTTP_11,
                                body_less,
                                route_read_before: true,
                                replay: Some(r),
                                replays: 1,
                                ..Forward::default()
                            }))
                        }
                    }
                }
            }
        }
        let failure = match read_up(&mut up, &mut b.up, io, &mut b.client, total).await {
            UpRead::Data(0) => "connection closed before a response".to_string(),
            UpRead::Data(_) => continue,
            UpRead::Failed(e) => e.to_string(),
            // Nobody to answer: the machine's connection is dropped (it may be mid-answer).
            UpRead::ClientGone => return Outcome::Abort,
        };
        lease.metrics().error();
        core.pool().forget(addr);
        hp::drop_affinity(ctx);
        let last_error = format!("machine {machine} ({addr}): {failure}");
        if !b.up.is_empty() || !body_less {
            // It may have acted on the request: not sent again (as on the hyper path).
            return Outcome::Answer(Box::new(hp::plain(
                StatusCode::BAD_GATEWAY,
                &format!("the machine failed while answering: {last_error}\n"),
                request_id,
            )));
        }
        let exclude = if reused {
            Vec::new()
        } else {
            vec![machine.clone()]
        };
        return delegate(exclude, last_error, 1);
    };
    lease.metrics().record(rp.status, t0.elapsed());
    match pass_body(io, &mut up, b, &rp, total).await {
        Ok(reusable) => {
            if reusable && rp.reusable {
                core.pool().put_raw(addr, up);
            }
            drop(lease);
            Outcome::Done
        }
        Err(_) => Outcome::Abort,
    }
}

fn bad_gateway(
    machine: &str,
    addr: SocketAddr,
    why: &str,
    request_id: Option<&HeaderValue>,
) -> Outcome {
    Outcome::Answer(Box::new(hp::plain(
        StatusCode::BAD_GATEWAY,
        &format!("machine {machine} ({addr}) sent a response the proxy cannot pass on: {why}\n"),
        request_id,
    )))
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

/// The request as `hp::forward` sends it again: the head written for the machine, parsed
/// back, and the buffered body.
fn template(up_head: &[u8], body: &[u8]) -> Option<Template> {
    // The client's headers and the proxy's own.
    let mut headers = [httparse::EMPTY_HEADER; head::MAX_HEADERS + 16];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(up_head).ok()?;
    let method = Method::from_bytes(req.method?.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(Bytes::copy_from_slice(req.path?.as_bytes())).ok()?;
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(Template {
        method,
        uri,
        headers: map,
        body: (!body.is_empty()).then(|| Bytes::copy_from_slice(body)),
    })
}
