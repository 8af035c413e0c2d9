//! The `http` handler: HTTP/1.1 and HTTP/2 from clients (hyper), HTTP/1.1 with pooled
//! keep-alive connections to machines, Fly's forwarding headers, `force_https`, upgrades
//! (WebSocket), retries on refused or stale connections, `fly-replay` (see `replay.rs`), and
//! header size/time limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::balance::Lease;
use crate::core::Core;
use crate::headers::{self, ConnValues, Values};
use crate::hints::{Hints, FLY_PREFERRED_INSTANCE_UNAVAILABLE};
use crate::machines::BOOT_POLL;
use crate::pool::{Pool, Sender, UpBody};
use crate::replay::{Replay, FLY_REPLAY, FLY_REPLAY_SRC, MAX_REPLAYS, MAX_REPLAY_BODY};
use crate::table::{ConcurrencyKind, PortRoute};

/// Per client connection.
pub(crate) struct ConnCtx {
    pub port: u16,
    pub client: SocketAddr,
    pub tls: bool,
    /// With `concurrency.type = "connections"` the whole client connection sticks to the
    /// machine it was first sent to, and counts as one unit of load there.
    affinity: Mutex<Option<Arc<Lease>>>,
    /// The proxy's header values that do not change during the connection, made once so
    /// that requests only clone them.
    pub values: ConnValues,
}

/// Serves one client connection (plain or already TLS-terminated) with the http handler.
pub(crate) async fn serve<IO>(
    core: Arc<Core>,
    io: IO,
    port: u16,
    client: SocketAddr,
    tls: bool,
    route: &PortRoute,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ConnCtx {
        port,
        client,
        tls,
        affinity: Mutex::new(None),
        values: ConnValues::new(client, port, tls, &core.cfg().region),
    });
    let header_timeout = route
        .options
        .http_options
        .headers_read_timeout
        .unwrap_or(core.cfg().header_read_timeout);
    if core.cfg().h1_fast_path {
        let timeouts = crate::h1::Timeouts {
            header: header_timeout,
            idle: route
                .options
                .http_options
                .idle_timeout
                .unwrap_or(crate::h1::KEEP_ALIVE_IDLE),
        };
        crate::h1::serve(core, ctx, io, timeouts).await;
    } else {
        serve_hyper(core, ctx, io, header_timeout).await;
    }
}

/// Serves a client connection with hyper (HTTP/1.1 and HTTP/2).
pub(crate) async fn serve_hyper<IO>(
    core: Arc<Core>,
    ctx: Arc<ConnCtx>,
    io: IO,
    header_timeout: Duration,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, port) = (ctx.client, ctx.port);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(core.cfg().max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(core.cfg().max_header_bytes as u32)
        .max_concurrent_streams(256);
    let svc = hyper::service::service_fn(move |req| {
        let (core, ctx) = (core.clone(), ctx.clone());
        async move { Ok::<_, Infallible>(handle(core, ctx, req).await) }
    });
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(%client, port, "client connection ended: {e}");
    }
}

async fn handle(core: Arc<Core>, ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Response<RespBody> {
    let request_id = ctx.values.request_id();
    let Some(route) = core.route(ctx.port) else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no app serves this port any more\n",
            request_id.as_ref(),
        );
    };
    let gzip = route.options.http_options.compress
        && crate::compress::accepts_gzip(req.headers())
        && req.method() != Method::HEAD;
    let mut resp = proxy(&core, &ctx, &route, req, request_id.as_ref()).await;
    if gzip {
        crate::compress::maybe_gzip(&mut resp);
    }
    decorate(&ctx, &route, &mut resp, request_id);
    resp
}

/// The client's idea of the host: its `Host` header, else the authority of the request target.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

async fn proxy(
    core: &Arc<Core>,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    mut req: Request<Incoming>,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    let client_version = req.version();
    if route.options.force_https && !ctx.tls {
        let host = request_host(&req);
        return redirect_https(core, host.as_deref(), req.uri(), request_id);
    }
    // An upgrade (WebSocket) keeps its Connection/Upgrade headers and is never replayed.
    let wants_upgrade = client_version == Version::HTTP_11 && is_upgrade(req.headers());
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // Acted on when a machine is picked; the headers themselves go upstream unchanged.
    let hints = Hints::from_headers(&parts.headers);
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    headers::strip(&mut parts.headers, &headers::REQUEST);
    if let Some(v) = upgrade_value.filter(|_| wants_upgrade) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, v);
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, h);
        }
    }
    let values = Values {
        conn: &ctx.values,
        version: client_version,
        request_id: None,
    };
    headers::add_own(&mut parts.headers, &headers::REQUEST, &values, false);
    // Upstream gets the origin form (path and query) of the request target.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let mut origin = http::uri::Parts::default();
        origin.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        parts.uri = Uri::from_parts(origin).unwrap_or_else(|_| Uri::from_static("/"));
    } else if parts.uri.path_and_query().is_none() {
        parts.uri = Uri::from_static("/");
    }
    parts.version = Version::HTTP_11;

    // Requests without a body can be replayed on another machine whatever happened. A body
    // of known length up to MAX_REPLAY_BODY is read first, so that it can be sent again for
    // `fly-replay` (and after a refused connection); larger bodies and bodies of unknown
    // length are streamed and cannot be replayed.
    let body_less = body.is_end_stream();
    let buffer = !body_less
        && body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_REPLAY_BODY);
    let (first_body, buffered) = if buffer {
        match Limited::new(body, MAX_REPLAY_BODY as usize).collect().await {
            Ok(c) => {
                let bytes = c.to_bytes();
                (UpBody::Full(Some(bytes.clone())), Some(bytes))
            }
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("could not read the request body: {e}\n"),
                    request_id,
                );
            }
        }
    } else {
        (UpBody::Incoming(body), None)
    };
    let template = (body_less || buffered.is_some()).then(|| Template {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: buffered,
    });
    let pending = Some(Request::from_parts(parts, first_body));
    forward(
        core,
        ctx,
        route,
        request_id,
        Forward {
            pending,
            template,
            hints,
            client_upgrade,
            client_version,
            body_less,
            ..Forward::default()
        },
    )
    .await
}

/// Where [`forward`] starts: the request (and what it takes to send it again), and what
/// earlier attempts learnt. The h1 fast path (`h1.rs`) hands a request over here, mid-way,
/// when anything but the plain case happens.
#[derive(Default)]
pub(crate) struct Forward {
    /// The request for the first attempt, if not rebuilt from `template`.
    pub pending: Option<Request<UpBody>>,
    /// The upstream request again, when it can be sent again (no body, or a buffered one).
    pub template: Option<Template>,
    pub hints: Hints,
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    pub client_version: Version,
    pub body_less: bool,
    /// Machines not to try again.
    pub exclude: Vec<String>,
    pub last_error: String,
    /// Attempts made so far.
    pub attempts: usize,
    /// Set when the caller has not read the route from the table itself (the first pick
    /// then re-reads it).
    pub route_read_before: bool,
    /// The `fly-replay` being carried out, and how many the request has had.
    pub replay: Option<Replaying>,
    pub replays: usize,
}

/// Sends a request to a machine of `route` (retrying, autostarting, replaying as needed) and
/// returns the response for the client.
pub(crate) async fn forward(
    core: &Arc<Core>,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    request_id: Option<&HeaderValue>,
    f: Forward,
) -> Response<RespBody> {
    let Forward {
        mut pending,
        template,
        hints,
        client_upgrade,
        client_version,
        body_less,
        mut exclude,
        mut last_error,
        mut attempts,
        route_read_before,
        mut replay,
        mut replays,
    } = f;
    // The first pick uses the route the caller just read; retries read the table again.
    let mut first = !route_read_before;
    while attempts < core.cfg().max_attempts {
        attempts += 1;
        let Some(mut req) = pending.take().or_else(|| template.as_ref().map(rebuild)) else {
            break;
        };
        let current = std::mem::take(&mut first);
        let acquired = match &replay {
            None => lease_for(core, ctx, route, &exclude, current, &hints).await,
            Some(r) => r.lease(core, route, &exclude).await,
        };
        let lease = match acquired {
            Ok(l) => l,
            Err(reason) => return unavailable(core, route, replay.as_ref(), &reason, request_id),
        };
        let Some(addr) = lease.backend.addr else {
            continue;
        };
        let machine = lease.backend.machine_id.as_str();
        let attempt_hints = replay.as_ref().map_or(&hints, |r| &r.hints);
        mark_preferred_unavailable(attempt_hints, machine, req.headers_mut());
        if let Some(src) = replay.as_ref().and_then(|r| r.src.clone()) {
            req.headers_mut().insert(FLY_REPLAY_SRC, src);
        }
        let t0 = Instant::now();
        let h2 = route.options.http_options.h2_backend;
        let mut conn = match core.pool().checkout(addr, h2).await {
            Ok(c) => c,
            Err(e) => {
                lease.metrics().error();
                core.pool().forget(addr);
                last_error = format!("machine {machine} ({addr}): {e}");
                drop_affinity(ctx);
                pending = Some(req);
                if core.machines().booting(machine, t0) {
                    // Autostarted and still booting: wait for it rather than fail over
                    // (bounded by start_timeout, not counted as an attempt).
                    attempts -= 1;
                    tokio::time::sleep(BOOT_POLL).await;
                } else {
                    core.health().mark_refused(machine);
                    exclude.push(machine.to_string());
                }
                continue;
            }
        };
        core.machines().connected(machine);
        if conn.tx.ready().await.is_err() {
            // A stale pooled connection: open a fresh one to the same machine.
            match core.pool().connect(addr, h2).await {
                Ok(tx) => conn.tx = tx,
                Err(e) => {
                    lease.metrics().error();
                    last_error = format!("machine {machine} ({addr}): {e}");
                    drop_affinity(ctx);
                    core.health().mark_refused(machine);
                    exclude.push(machine.to_string());
                    pending = Some(req);
                    continue;
                }
            }
        }
        match conn.tx.try_send_request(req).await {
            Ok(mut resp) => {
                lease.metrics().record(resp.status().as_u16(), t0.elapsed());
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client_up) = client_upgrade {
                        let upstream_up = hyper::upgrade::on(&mut resp);
                        tokio::spawn(splice_upgrade(client_up, upstream_up, lease));
                    }
                    let (mut parts, _) = resp.into_parts();
                    parts.version = client_version;
                    return Response::from_parts(parts, RespBody::empty());
                }
                // The only look at the response on the way: does the machine ask for a replay?
                let step = resp.headers().get(&FLY_REPLAY).map(|value| {
                    replay_step(
                        value,
                        route,
                        machine,
                        &lease.backend.region,
                        template.is_some(),
                        replays,
                        request_id,
                    )
                });
                match step {
                    None | Some(ReplayStep::Ignore) => {}
                    Some(ReplayStep::Answer(resp)) => return resp,
                    Some(ReplayStep::Replay(r)) => {
                        replays += 1;
                        let (_, body) = resp.into_parts();
                        if body.is_end_stream() {
                            core.pool().put(addr, conn.tx);
                        }
                        // Otherwise the unread body and its connection are dropped.
                        replay = Some(r);
                        attempts = 0;
                        continue;
                    }
                }
                // A request's own lease counts until the body is read (`requests`, or a
                // replay); a connection's affinity lease keeps counting on its own.
                let hold = matches!(lease, LeaseRef::Owned(_)).then_some(lease);
                let (mut parts, body) = resp.into_parts();
                if parts.headers.contains_key(header::TRANSFER_ENCODING) {
                    // The body was framed by Transfer-Encoding; a Content-Length beside it is
                    // wrong (RFC 9112 §6.3) and must not reach the client.
                    parts.headers.remove(header::CONTENT_LENGTH);
                }
                headers::strip(&mut parts.headers, &headers::RESPONSE);
                parts.version = client_version;
                let body = UpstreamBody {
                    inner: body,
                    ret: Some((core.pool().clone(), addr, conn.tx)),
                    _lease: hold,
                };
                return Response::from_parts(parts, RespBody::Upstream(body));
            }
            Err(mut e) => {
                lease.metrics().error();
                last_error = format!("machine {machine} ({addr}): {}", e.error());
                core.pool().forget(addr);
                drop_affinity(ctx);
                match e.take_message() {
                    // Never sent: safe to retry anywhere.
                    Some(req) => pending = Some(req),
                    None if body_less => {}
                    None => {
                        return plain(
                            StatusCode::BAD_GATEWAY,
                            &format!("the machine failed while answering: {last_error}\n"),
                            request_id,
                        );
                    }
                }
                if !conn.reused {
                    exclude.push(machine.to_string());
                }
            }
        }
    }
    core.selector().count_unavailable(route);
    plain(
        StatusCode::BAD_GATEWAY,
        &format!("could not reach a machine after retries: {last_error}\n"),
        request_id,
    )
}

/// The 503 for a request no machine can take (counted in the metrics).
pub(crate) fn unavailable(
    core: &Core,
    route: &PortRoute,
    replay: Option<&Replaying>,
    reason: &crate::select::Unavailable,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    core.selector().count_unavailable(route);
    let target = replay
        .map(|r| format!(" for fly-replay `{}`", r.header))
        .unwrap_or_default();
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("no machine available{target}: {}\n", reason.0),
        request_id,
    )
}

/// What to do about a `fly-replay` header in a response.
pub(crate) enum ReplayStep {
    /// Not acted on (logged): the response goes to the client.
    Ignore,
    /// The client gets this instead.
    Answer(Response<RespBody>),
    /// Send the request again, there.
    Replay(Replaying),
}

/// Decides on a `fly-replay` header from `machine` (of `region`); `replayable` when the
/// request can be sent again, `replays` how many it has had.
pub(crate) fn replay_step(
    value: &HeaderValue,
    route: &PortRoute,
    machine: &str,
    region: &str,
    replayable: bool,
    replays: usize,
    request_id: Option<&HeaderValue>,
) -> ReplayStep {
    let header = String::from_utf8_lossy(value.as_bytes()).into_owned();
    match Replay::parse(value) {
        Err(why) => {
            tracing::warn!(
                app = %route.app, machine,
                "fly-replay `{header}` ignored ({why}): the response goes to the client"
            );
            ReplayStep::Ignore
        }
        Ok(_) if !replayable => {
            tracing::warn!(
                app = %route.app, machine,
                "fly-replay `{header}` ignored: the request body was streamed \
                 (over {MAX_REPLAY_BODY} bytes or of unknown length), so the request \
                 cannot be sent again; the response goes to the client"
            );
            ReplayStep::Ignore
        }
        Ok(_) if replays >= MAX_REPLAYS => ReplayStep::Answer(plain(
            StatusCode::BAD_GATEWAY,
            &format!(
                "too many replays: the request was replayed {MAX_REPLAYS} \
                 times and machine {machine} asked again (fly-replay `{header}`)\n"
            ),
            request_id,
        )),
        Ok(r) => {
            if let Some(app) = r.app.as_deref().filter(|a| *a != route.app) {
                return ReplayStep::Answer(plain(
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "fly-replay `{header}` from machine {machine}: replaying to \
                         another app (app={app}) is not supported by aloft\n"
                    ),
                    request_id,
                ));
            }
            tracing::debug!(app = %route.app, machine, "fly-replay `{header}`");
            ReplayStep::Replay(Replaying {
                hints: Hints::from_replay(&r),
                not: r.elsewhere.then(|| machine.to_string()),
                timeout: r.timeout,
                src: r.source(machine, region),
                header,
            })
        }
    }
}

/// With `Fly-Prefer-Instance-Id`, tells the app whether the preferred machine was used:
/// `Fly-Preferred-Instance-Unavailable: <id>` when another machine answers (set or cleared on
/// every attempt, as a retry may land elsewhere).
fn mark_preferred_unavailable(hints: &Hints, machine: &str, h: &mut HeaderMap) {
    let Some(value) = hints.prefer_instance_value() else {
        return;
    };
    if hints.prefer_instance() == Some(machine) {
        h.remove(FLY_PREFERRED_INSTANCE_UNAVAILABLE);
    } else {
        h.insert(FLY_PREFERRED_INSTANCE_UNAVAILABLE, value.clone());
    }
}

/// The lease for this request: the connection's sticky one for `connections` (unless the
/// request's instance hints name another machine), a new one per request for `requests`.
pub(crate) async fn lease_for(
    core: &Arc<Core>,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    exclude: &[String],
    current: bool,
    hints: &Hints,
) -> Result<LeaseRef, crate::select::Unavailable> {
    if route.policy.concurrency == ConcurrencyKind::Connections {
        if let Some(l) = ctx
            .affinity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            let still = route.backends.iter().any(|b| b == &l.backend)
                && core.selector().routable(&l.backend);
            if still
                && !exclude.contains(&l.backend.machine_id)
                && hints.allows(&l.backend.machine_id)
            {
                return Ok(LeaseRef::Shared(l));
            }
        }
        let lease = Arc::new(
            core.selector()
                .acquire_from(route, exclude, current, hints)
                .await?,
        );
        *ctx.affinity.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease.clone());
        return Ok(LeaseRef::Shared(lease));
    }
    let lease = core
        .selector()
        .acquire_from(route, exclude, current, hints)
        .await?;
    Ok(LeaseRef::Owned(lease))
}

pub(crate) fn drop_affinity(ctx: &ConnCtx) {
    ctx.affinity
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
}

/// A lease owned by one request or shared by a connection.
pub(crate) enum LeaseRef {
    Owned(Lease),
    Shared(Arc<Lease>),
}

impl std::ops::Deref for LeaseRef {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        match self {
            LeaseRef::Owned(l) => l,
            LeaseRef::Shared(l) => l,
        }
    }
}

/// What it takes to send a request again: the upstream request head and its body, if any
/// (buffered).
pub(crate) struct Template {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

fn rebuild(t: &Template) -> Request<UpBody> {
    let body = match &t.body {
        Some(b) => UpBody::Full(Some(b.clone())),
        None => UpBody::Empty,
    };
    let mut req = Request::new(body);
    *req.method_mut() = t.method.clone();
    *req.uri_mut() = t.uri.clone();
    *req.headers_mut() = t.headers.clone();
    req
}

/// A `fly-replay` being carried out.
pub(crate) struct Replaying {
    /// Where it may go (regions only, instance…).
    hints: Hints,
    /// `elsewhere=true`: the machine that asked, excluded.
    not: Option<String>,
    /// `timeout`: how long finding a machine may take.
    timeout: Option<Duration>,
    /// `fly-replay-src` for the target.
    src: Option<HeaderValue>,
    /// The header as sent, for messages.
    header: String,
}

impl Replaying {
    /// A slot on a machine of the replay's target. Connection affinity does not apply: the
    /// lease belongs to this request.
    async fn lease(
        &self,
        core: &Arc<Core>,
        route: &Arc<PortRoute>,
        exclude: &[String],
    ) -> Result<LeaseRef, crate::select::Unavailable> {
        let mut with_not;
        let exclude = match &self.not {
            Some(m) => {
                with_not = exclude.to_vec();
                with_not.push(m.clone());
                &with_not[..]
            }
            None => exclude,
        };
        let acquire = core
            .selector()
            .acquire_from(route, exclude, false, &self.hints);
        let lease = match self.timeout {
            Some(t) => tokio::time::timeout(t, acquire).await.map_err(|_| {
                crate::select::Unavailable(format!("none within the replay timeout of {t:?}"))
            })??,
            None => acquire.await?,
        };
        Ok(LeaseRef::Owned(lease))
    }
}

async fn splice_upgrade(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    lease: LeaseRef,
) {
    let (Ok(c), Ok(u)) = tokio::join!(client, upstream) else {
        return;
    };
    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
    drop(lease);
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Adds the proxy's own response headers and the configured ones (see `headers.rs`).
pub(crate) fn decorate(
    ctx: &ConnCtx,
    route: &PortRoute,
    resp: &mut Response<RespBody>,
    request_id: Option<HeaderValue>,
) {
    let opts = &route.options.http_options;
    let values = Values {
        conn: &ctx.values,
        version: Version::HTTP_11,
        request_id: request_id.as_ref(),
    };
    headers::add_own(
        resp.headers_mut(),
        &headers::RESPONSE,
        &values,
        opts.pristine,
    );
    headers::apply_configured(resp.headers_mut(), &opts.response_headers);
}

fn redirect_https(
    core: &Core,
    host: Option<&str>,
    uri: &Uri,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    let Some(host) = host else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a Host header is required\n",
            request_id,
        );
    };
    let bare = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    let port = core.https_port();
    let authority = if port == 443 {
        bare.to_string()
    } else {
        format!("{bare}:{port}")
    };
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = format!("https://{authority}{pq}");
    let mut resp = plain(
        StatusCode::MOVED_PERMANENTLY,
        &format!("redirecting to {location}\n"),
        request_id,
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A short text response from the proxy itself.
pub(crate) fn plain(
    status: StatusCode,
    text: &str,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Full(Some(Bytes::copy_from_slice(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(v) = request_id {
        resp.headers_mut()
            .insert(HeaderName::from_static("fly-request-id"), v.clone());
    }
    resp
}

/// What the proxy answers with.
pub(crate) enum RespBody {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// `http_options.compress` (see `compress.rs`).
    Gzip(Box<crate::compress::GzipBody>),
}

impl RespBody {
    fn empty() -> RespBody {
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
