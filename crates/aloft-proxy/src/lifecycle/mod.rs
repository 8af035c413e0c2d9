//! The request lifecycle of the `http` handler, protocol-neutral: choose a machine, lease a
//! slot on it, forward the request, retry or replay when that fails or the machine asks, and
//! account for every attempt (metrics, refusal cooldowns, boot waits, pooled connections to
//! forget, connection affinity). [`run`] is the one loop; the two HTTP back-ends plug into it
//! through [`Upstream`], as pingora's `ProxyHttp` phases sit over `proxy_h1`/`proxy_h2`: the
//! hyper path (`hyper_path/`) with hyper's client connections, the h1 fast path (`h1/`) with
//! raw sockets. A back-end only opens a connection and sends one attempt; what an outcome
//! means (try elsewhere, wait for a booting machine, replay, answer 502/503) is decided here,
//! so both paths decide alike.
//!
//! Invariants: nothing here knows hyper or HTTP/1 framing (requests and responses stay the
//! back-end's types; only header values, status codes and the proxy's own [`Answer`]s are
//! shared); a request is sent again only when its back-end says it can be (no body, a
//! buffered one, or one the machine cannot have had in full).

mod lease;
mod replay;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

pub(crate) use lease::{ConnCtx, LeaseRef};
use replay::{replay_step, ReplayStep, Replaying};

use crate::core::Core;
use crate::hints::{Hints, FLY_PREFERRED_INSTANCE_UNAVAILABLE};
use crate::machines::BOOT_POLL;
use crate::replay::FLY_REPLAY_SRC;
use crate::select::Unavailable;
use crate::table::PortRoute;

/// A change to one request header for one attempt: set to the value, or removed (`None`).
pub(crate) type Edit = (HeaderName, Option<HeaderValue>);

/// A back-end: how one attempt reaches a machine. The request itself (and what it takes to
/// send it again) is the back-end's.
pub(crate) trait Upstream {
    /// A connection to a machine, ready for a request.
    type Conn;
    /// A machine's response head, as the back-end holds it.
    type Head;

    /// Whether the request can be sent (again): false once a streamed body has gone.
    fn can_send(&self) -> bool;
    /// Whether a `fly-replay` answer can be acted on (the request can be sent again).
    fn replayable(&self) -> bool;
    /// A pooled or new connection to `addr`. An error means nothing was sent.
    async fn connect(&mut self, addr: SocketAddr) -> io::Result<Self::Conn>;
    /// Sends the request, with `edits` to its headers, and reads the response head.
    async fn send(
        &mut self,
        conn: Self::Conn,
        addr: SocketAddr,
        edits: &[Edit],
    ) -> Sent<Self::Head>;
    /// A response head that will not be passed on (the request is replayed elsewhere).
    fn discard(&mut self, head: Self::Head);
}

/// How one attempt went.
pub(crate) enum Sent<H> {
    /// A response head. `replay`: its `fly-replay` header, when the request asked for no
    /// upgrade.
    Response {
        head: H,
        status: u16,
        replay: Option<HeaderValue>,
    },
    /// No usable connection could be opened: nothing was sent.
    NotConnected(io::Error),
    /// The machine failed before a response head; `resend` when the request can be sent
    /// again (it cannot have acted on it, or it has no body), `reused` when the connection
    /// came from the pool (and may just have been stale).
    Failed {
        error: String,
        resend: bool,
        reused: bool,
    },
    /// A response the proxy cannot pass on.
    Bad(String),
    /// The client went away: nobody to answer.
    ClientGone,
}

/// How a request ended.
pub(crate) enum Outcome<H> {
    /// A machine's response head, and the lease it was sent on (hold
    /// [`LeaseRef::for_response`] until the body has been passed on).
    Response { head: H, lease: LeaseRef },
    /// The proxy answers itself.
    Answer(Answer),
    /// Nobody to answer.
    Abort,
}

/// A short text response from the proxy itself (no machine, failures, replay limits).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub text: String,
}

impl Answer {
    pub fn new(status: StatusCode, text: impl Into<String>) -> Answer {
        Answer {
            status,
            text: text.into(),
        }
    }

    /// As a response: plain text with `Fly-Request-Id` (even when pristine).
    pub fn into_response(self, request_id: Option<&HeaderValue>) -> Response<Bytes> {
        let mut resp = Response::new(Bytes::from(self.text));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(v) = request_id {
            h.insert(HeaderName::from_static("fly-request-id"), v.clone());
        }
        resp
    }
}

/// Sends a request to a machine of `route` through `up`: choose, lease, forward, and retry
/// (up to `max_attempts`, a booting machine waited for), replay (up to `MAX_REPLAYS`), or
/// answer. `route` was just read from the table (the first pick uses it; retries read the
/// table again).
pub(crate) async fn run<U: Upstream>(
    core: &Core,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    hints: &Hints,
    up: &mut U,
) -> Outcome<U::Head> {
    let mut exclude: Vec<String> = Vec::new();
    let mut last_error = String::new();
    let mut attempts = 0;
    let mut replay: Option<Replaying> = None;
    let mut replays = 0;
    let mut first = true;
    while attempts < core.cfg().max_attempts {
        attempts += 1;
        if !up.can_send() {
            break;
        }
        let current = std::mem::take(&mut first);
        // Choose and lease.
        let acquired = match &replay {
            None => lease::lease_for(core, ctx, route, &exclude, current, hints).await,
            Some(r) => r.lease(core, route, &exclude).await,
        };
        let lease = match acquired {
            Ok(l) => l,
            Err(reason) => {
                return Outcome::Answer(unavailable(core, route, replay.as_ref(), &reason))
            }
        };
        let Some(addr) = lease.backend.addr else {
            continue;
        };
        let machine = lease.backend.machine_id.as_str();
        let edits = attempt_edits(
            replay.as_ref().map_or(hints, |r| &r.hints),
            replay.as_ref(),
            machine,
        );
        // Forward.
        let t0 = Instant::now();
        let sent = match up.connect(addr).await {
            Ok(conn) => {
                core.machines().connected(machine);
                up.send(conn, addr, &edits).await
            }
            Err(e) => Sent::NotConnected(e),
        };
        // Account, then retry, replay or finish.
        match sent {
            Sent::Response {
                head,
                status,
                replay: asked,
            } => {
                lease.metrics().record(status, t0.elapsed());
                let Some(value) = asked else {
                    return Outcome::Response { head, lease };
                };
                let region = &lease.backend.region;
                match replay_step(&value, route, machine, region, up.replayable(), replays) {
                    ReplayStep::Ignore => return Outcome::Response { head, lease },
                    ReplayStep::Answer(a) => {
                        up.discard(head);
                        return Outcome::Answer(a);
                    }
                    ReplayStep::Replay(r) => {
                        up.discard(head);
                        replays += 1;
                        replay = Some(r);
                        attempts = 0;
                    }
                }
            }
            Sent::NotConnected(e) => {
                lease.metrics().error();
                core.pool().forget(addr);
                last_error = format!("machine {machine} ({addr}): {e}");
                ctx.drop_affinity();
                if core.machines().booting(machine, t0) {
                    // Autostarted and still booting: wait for it rather than fail over
                    // (bounded by start_timeout, not counted as an attempt).
                    attempts -= 1;
                    tokio::time::sleep(BOOT_POLL).await;
                } else {
                    core.health().mark_refused(machine);
                    exclude.push(machine.to_string());
                }
            }
            Sent::Failed {
                error,
                resend,
                reused,
            } => {
                lease.metrics().error();
                last_error = format!("machine {machine} ({addr}): {error}");
                core.pool().forget(addr);
                ctx.drop_affinity();
                if !resend {
                    // It may have acted on the request: not sent again.
                    return Outcome::Answer(Answer::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the machine failed while answering: {last_error}\n"),
                    ));
                }
                if !reused {
                    exclude.push(machine.to_string());
                }
            }
            Sent::Bad(why) => {
                lease.metrics().error();
                return Outcome::Answer(Answer::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "machine {machine} ({addr}) sent a response the proxy cannot pass on: \
                         {why}\n"
                    ),
                ));
            }
            Sent::ClientGone => return Outcome::Abort,
        }
    }
    core.selector().count_unavailable(route);
    Outcome::Answer(Answer::new(
        StatusCode::BAD_GATEWAY,
        format!("could not reach a machine after retries: {last_error}\n"),
    ))
}

/// The request headers of one attempt that depend on where it goes: `fly-replay-src` on a
/// replay; with `Fly-Prefer-Instance-Id`, `Fly-Preferred-Instance-Unavailable: <id>` when
/// another machine answers (set or cleared on every attempt, as a retry may land elsewhere).
fn attempt_edits(hints: &Hints, replay: Option<&Replaying>, machine: &str) -> Vec<Edit> {
    let mut edits = Vec::new();
    if let Some(value) = hints.prefer_instance_value() {
        let used = hints.prefer_instance() == Some(machine);
        edits.push((
            FLY_PREFERRED_INSTANCE_UNAVAILABLE,
            (!used).then(|| value.clone()),
        ));
    }
    if let Some(src) = replay.and_then(|r| r.src.clone()) {
        edits.push((FLY_REPLAY_SRC, Some(src)));
    }
    edits
}

/// The 503 for a request no machine can take (counted in the metrics).
fn unavailable(
    core: &Core,
    route: &PortRoute,
    replay: Option<&Replaying>,
    reason: &Unavailable,
) -> Answer {
    core.selector().count_unavailable(route);
    let target = replay
        .map(|r| format!(" for fly-replay `{}`", r.header))
        .unwrap_or_default();
    Answer::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no machine available{target}: {}\n", reason.0),
    )
}
