//! The hyper path of the `http` handler: HTTP/1.1 and HTTP/2 from clients (hyper's server),
//! HTTP/1.1 with pooled keep-alive connections to machines or HTTP/2 (`h2_backend`),
//! `force_https`, upgrades (WebSocket), request bodies buffered for replay, gzip
//! (`compress.rs`). It is the reference for behaviour and serves whatever the h1 fast path
//! does not take. A request goes to a machine through the request lifecycle
//! (`lifecycle/`), to which this module is a back-end ([`HyperUpstream`]); the headers follow
//! the header policy (`headers.rs`).

mod body;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::compress::{self, GzipBody};
use crate::core::{Core, Lookup};
use crate::headers::{self, Values};
use crate::hints::Hints;
use crate::lifecycle::{self, Answer, ConnCtx, Edit, LeaseRef, Outcome, Sent, Upstream};
use crate::pool::{Conn, Pool, Sender, UpBody};
use crate::replay::{FLY_REPLAY, MAX_REPLAY_BODY};
use crate::table::PortRoute;
use body::{RespBody, UpstreamBody};

/// Serves a client connection with hyper (HTTP/1.1 and HTTP/2).
pub(crate) async fn serve<IO>(core: Arc<Core>, ctx: Arc<ConnCtx>, io: IO, header_timeout: Duration)
where
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
    // A challenge token of an ACME issuance is answered before routing (`challenges.rs`).
    if let Some(key_auth) = core
        .challenges()
        .http01_response(req.method(), req.uri().path())
    {
        return plain(Answer::new(StatusCode::OK, key_auth), request_id.as_ref());
    }
    let host = request_host(&req);
    let route = match core.route(ctx.bind, host) {
        Lookup::Route(route) => route,
        Lookup::UnknownHost(listener) => {
            return plain(
                Answer::new(StatusCode::NOT_FOUND, listener.unknown_host(host)),
                request_id.as_ref(),
            )
        }
        Lookup::Gone => {
            return plain(
                Answer::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no app serves this port any more\n",
                ),
                request_id.as_ref(),
            )
        }
    };
    let gzip = route.options.http_options.compress
        && compress::accepts_gzip(req.headers())
        && req.method() != Method::HEAD;
    let mut resp = proxy(&core, &ctx, &route, req, request_id.as_ref()).await;
    if gzip && compress::gzip_headers(&mut resp) {
        let body = std::mem::replace(resp.body_mut(), RespBody::empty());
        *resp.body_mut() = RespBody::Gzip(Box::new(GzipBody::new(body)));
    }
    let values = Values {
        conn: &ctx.values,
        version: Version::HTTP_11,
        request_id: request_id.as_ref(),
    };
    headers::decorate(resp.headers_mut(), &values, &route.options.http_options);
    resp
}

/// The client's idea of the host: its `Host` header, else the authority of the request target.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

async fn proxy(
    core: &Core,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    mut req: Request<Incoming>,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    let client_version = req.version();
    if route.options.force_https && !ctx.tls {
        return redirect_https(core, request_host(&req), req.uri(), request_id);
    }
    if let Some(resp) = serve_static(core, route, &req).await {
        return resp;
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
                    Answer::new(
                        StatusCode::BAD_REQUEST,
                        format!("could not read the request body: {e}\n"),
                    ),
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
    let mut up = HyperUpstream {
        pool: core.pool(),
        h2: route.options.http_options.h2_backend,
        pending: Some(Request::from_parts(parts, first_body)),
        template,
        body_less,
    };
    let head = match lifecycle::run(core, ctx, route, &hints, &mut up).await {
        Outcome::Response { head, lease } => (head, lease),
        Outcome::Answer(a) => return plain(a, request_id),
        // Only the h1 back-end watches the client while it waits.
        Outcome::Abort => {
            let gone = Answer::new(StatusCode::BAD_GATEWAY, "the request was abandoned\n");
            return plain(gone, request_id);
        }
    };
    let (Upstreamed { mut resp, tx, addr }, lease) = head;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let upstream_up = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice_upgrade(client_up, upstream_up, lease));
        }
        let (mut parts, _) = resp.into_parts();
        parts.version = client_version;
        return Response::from_parts(parts, RespBody::empty());
    }
    let (mut parts, body) = resp.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // The body was framed by Transfer-Encoding; a Content-Length beside it is wrong
        // (RFC 9112 §6.3) and must not reach the client.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    headers::strip(&mut parts.headers, &headers::RESPONSE);
    parts.version = client_version;
    let body = UpstreamBody::new(body, core.pool().clone(), addr, tx, lease.for_response());
    Response::from_parts(parts, RespBody::Upstream(body))
}

/// The hyper path as a back-end of the request lifecycle: hyper's client connections from
/// the pool, the request kept (or rebuilt from its template) for the next attempt.
struct HyperUpstream<'a> {
    pool: &'a Arc<Pool>,
    /// HTTP/2 to the machine (`http_options.h2_backend`).
    h2: bool,
    /// The request for the next attempt, if not rebuilt from `template`.
    pending: Option<Request<UpBody>>,
    /// The upstream request again, when it can be sent again (no body, or a buffered one).
    template: Option<Template>,
    body_less: bool,
}

/// A machine's response head and the connection it came on.
struct Upstreamed {
    resp: Response<Incoming>,
    tx: Sender,
    addr: SocketAddr,
}

impl Upstream for HyperUpstream<'_> {
    type Conn = Conn;
    type Head = Upstreamed;

    fn can_send(&self) -> bool {
        self.pending.is_some() || self.template.is_some()
    }

    fn replayable(&self) -> bool {
        self.template.is_some()
    }

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<Conn> {
        self.pool.checkout(addr, self.h2).await
    }

    async fn send(&mut self, mut conn: Conn, addr: SocketAddr, edits: &[Edit]) -> Sent<Upstreamed> {
        let Some(mut req) = self
            .pending
            .take()
            .or_else(|| self.template.as_ref().map(rebuild))
        else {
            return Sent::Failed {
                error: "the request body was already sent".into(),
                resend: false,
                reused: conn.reused,
            };
        };
        for (name, value) in edits {
            match value {
                Some(v) => req.headers_mut().insert(name.clone(), v.clone()),
                None => req.headers_mut().remove(name),
            };
        }
        if conn.tx.ready().await.is_err() {
            // A stale pooled connection: open a fresh one to the same machine.
            match self.pool.connect(addr, self.h2).await {
                Ok(tx) => conn.tx = tx,
                Err(e) => {
                    self.pending = Some(req);
                    return Sent::NotConnected(e);
                }
            }
        }
        match conn.tx.try_send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // The only look at the response on the way: does the machine ask for a replay?
                let replay = (resp.status() != StatusCode::SWITCHING_PROTOCOLS)
                    .then(|| resp.headers().get(&FLY_REPLAY).cloned())
                    .flatten();
                Sent::Response {
                    head: Upstreamed {
                        resp,
                        tx: conn.tx,
                        addr,
                    },
                    status,
                    replay,
                }
            }
            Err(mut e) => {
                let error = e.error().to_string();
                // Never sent: safe to retry anywhere; else only a body-less request.
                let resend = match e.take_message() {
                    Some(req) => {
                        self.pending = Some(req);
                        true
                    }
                    None => self.body_less,
                };
                Sent::Failed {
                    error,
                    resend,
                    reused: conn.reused,
                }
            }
        }
    }

    fn discard(&mut self, head: Upstreamed) {
        let Upstreamed { resp, tx, addr } = head;
        if resp.body().is_end_stream() {
            self.pool.put(addr, tx);
        }
        // Otherwise the unread body and its connection are dropped.
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

fn redirect_https(
    core: &Core,
    host: Option<&str>,
    uri: &Uri,
    request_id: Option<&HeaderValue>,
) -> Response<RespBody> {
    let Some(host) = host else {
        return plain(
            Answer::new(StatusCode::BAD_REQUEST, "a Host header is required\n"),
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
        Answer::new(
            StatusCode::MOVED_PERMANENTLY,
            format!("redirecting to {location}\n"),
        ),
        request_id,
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A `GET`/`HEAD` under one of the app's `[[statics]]` prefixes, answered from the root
/// filesystem of a started machine of the app (see `statics`); `None` sends it to the app.
async fn serve_static(
    core: &Core,
    route: &PortRoute,
    req: &Request<Incoming>,
) -> Option<Response<RespBody>> {
    if route.statics.is_empty() || !(req.method() == Method::GET || req.method() == Method::HEAD) {
        return None;
    }
    let roots_dir = core.cfg().machine_roots.clone()?;
    let roots: Vec<std::path::PathBuf> = route
        .backends
        .iter()
        .filter(|b| b.state == crate::table::BackendState::Started)
        .map(|b| roots_dir.join(&b.machine_id).join("rootfs"))
        .collect();
    let rules = route.statics.clone();
    let path = req.uri().path().to_string();
    let file = tokio::task::spawn_blocking(move || {
        roots
            .iter()
            .find_map(|root| crate::statics::find(&rules, root, &path))
    })
    .await
    .ok()??;
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let fresh = file.not_modified(
        header(header::IF_NONE_MATCH).as_deref(),
        header(header::IF_MODIFIED_SINCE).as_deref(),
    );
    let mut resp = Response::builder().header(header::ETAG, &file.etag).header(
        header::LAST_MODIFIED,
        httpdate::fmt_http_date(file.last_modified),
    );
    let body = if fresh {
        resp = resp.status(StatusCode::NOT_MODIFIED);
        RespBody::empty()
    } else {
        resp = resp
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, file.content_type)
            .header(header::CONTENT_LENGTH, file.body.len());
        if req.method() == Method::HEAD {
            RespBody::empty()
        } else {
            RespBody::Full(Some(file.body))
        }
    };
    resp.body(body).ok()
}

/// A short text response from the proxy itself.
fn plain(answer: Answer, request_id: Option<&HeaderValue>) -> Response<RespBody> {
    answer
        .into_response(request_id)
        .map(|b| RespBody::Full(Some(b)))
}
