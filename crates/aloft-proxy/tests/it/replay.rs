//! End to end: `fly-replay` (machines-api §4.2). Machines are real HTTP servers on 127.0.0.1
//! in different regions (the proxy's own is `ams`). Each answers its name, unless the request
//! carries `x-replay: <value>`: then, on a request that was not replayed yet (no
//! `fly-replay-src`), or on every request with `x-replay-always`, it answers 409 with
//! `fly-replay: <value>` — so each test tells the machines what to ask the proxy for.

use crate::common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aloft_api::{Concurrency, MachineService, MachineState};
use aloft_proxy::ProxyHandle;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a machine saw.
#[derive(Default)]
struct Seen {
    hits: AtomicUsize,
    last_headers: Mutex<Option<http::HeaderMap>>,
    last_body: Mutex<Bytes>,
}

/// A machine's app: see the module docs.
struct ReplayServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl ReplayServer {
    async fn start(name: &str) -> ReplayServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let (name, st) = (name.to_string(), seen.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let (name, st) = (name.clone(), st.clone());
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                answer(name.clone(), st.clone(), req)
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        ReplayServer { addr, seen, task }
    }
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: String,
    seen: Arc<Seen>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.hits.fetch_add(1, Ordering::SeqCst);
    *seen.last_headers.lock().unwrap() = Some(parts.headers.clone());
    *seen.last_body.lock().unwrap() = body.clone();
    let h = &parts.headers;
    let replay = h
        .get("x-replay")
        .filter(|_| !h.contains_key("fly-replay-src") || h.contains_key("x-replay-always"));
    if let Some(value) = replay {
        // Some replay answers have a body the proxy must not pass on, some have none.
        let text = if h.contains_key("x-replay-empty") {
            String::new()
        } else {
            format!("replay from {name}")
        };
        let mut r = Response::new(Full::new(Bytes::from(text)));
        *r.status_mut() = http::StatusCode::CONFLICT;
        r.headers_mut().insert("fly-replay", value.clone());
        return Ok(r);
    }
    let text = if body.is_empty() {
        name
    } else {
        format!("{name}:{}", body.len())
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// Machines of app `app` on port 80, one server each, started, in the given regions.
struct Setup {
    servers: BTreeMap<String, ReplayServer>,
    fleet: Arc<common::Fleet>,
    _proxy: ProxyHandle,
    addr: SocketAddr,
}

impl Setup {
    async fn new(machines: &[(&str, &str)], svc: MachineService) -> Setup {
        let mut servers = BTreeMap::new();
        let mut placed = Vec::new();
        for (id, region) in machines {
            let server = ReplayServer::start(id).await;
            placed.push((*id, *region, server.addr));
            servers.insert(id.to_string(), server);
        }
        let (fleet, proxy, addr) = regional_proxy(&placed, &svc).await;
        Setup {
            servers,
            fleet,
            _proxy: proxy,
            addr,
        }
    }

    fn hits(&self, id: &str) -> usize {
        self.servers[id].seen.hits.load(Ordering::SeqCst)
    }

    fn last_headers(&self, id: &str) -> http::HeaderMap {
        self.servers[id]
            .seen
            .last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| panic!("machine {id} got no request"))
    }

    fn last_body(&self, id: &str) -> Bytes {
        self.servers[id].seen.last_body.lock().unwrap().clone()
    }
}

/// The web service, autostart off (a stopped machine stays stopped).
fn service() -> MachineService {
    let mut svc = http_service(8080);
    svc.autostart = Some(false);
    svc
}

/// Sends `req` on a fresh connection: (status, headers, body).
async fn send<B>(addr: SocketAddr, req: Request<B>) -> (u16, http::HeaderMap, String)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).to_string())
}

fn post(body: Bytes, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::post("/submit").header("host", "example.test");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.body(Full::new(body)).unwrap()
}

/// A request body of unknown length (sent chunked).
struct Chunked(Vec<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(if self.0.is_empty() {
            None
        } else {
            Some(Ok(Frame::data(self.0.remove(0))))
        })
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body of `n` bytes that is not all alike.
fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

fn src_field<'a>(src: &'a str, key: &str) -> Option<&'a str> {
    src.split(';')
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_replay_lands_in_that_region_and_passes_the_state() {
    for kind in ["connections", "requests"] {
        let mut svc = service();
        svc.concurrency = Some(Concurrency {
            kind: kind.into(),
            soft_limit: Some(20),
            hard_limit: Some(50),
        });
        let s = Setup::new(
            &[("l1", "ams"), ("l2", "ams"), ("i1", "iad"), ("o1", "ord")],
            svc,
        )
        .await;
        let replay = [("x-replay", "region=iad;state=cart-42")];
        for _ in 0..20 {
            let (status, headers, body) = get_with(s.addr, "/", &replay).await;
            assert_eq!((status, body.as_str()), (200, "i1"), "{kind}");
            assert!(!headers.contains_key("fly-replay"), "{headers:?}");
        }
        assert_eq!(s.hits("i1"), 20, "{kind}");
        assert_eq!(s.hits("l1") + s.hits("l2"), 20, "one hop each in ams first");
        assert_eq!(s.hits("o1"), 0);

        // The target learns where the request came from, and the state.
        let h = s.last_headers("i1");
        let src = h["fly-replay-src"].to_str().unwrap();
        assert!(
            matches!(src_field(src, "instance"), Some("l1" | "l2")),
            "{src}"
        );
        assert_eq!(src_field(src, "region"), Some("ams"), "{src}");
        assert_eq!(src_field(src, "state"), Some("cart-42"), "{src}");
        let t: u128 = src_field(src, "t").unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        assert!(t <= now && now - t < 60_000_000, "t={t} is not Unix µs");
        assert_eq!(h["x-replay"], "region=iad;state=cart-42", "same request");

        // The region is a restriction, not a preference: with iad's only machine down and
        // other regions healthy, the replay fails instead of landing elsewhere.
        s.fleet.set_state("i1", MachineState::Stopped);
        let before = s.hits("o1") + s.hits("i1");
        let (status, _, body) =
            get_with(s.addr, "/", &[("x-replay", "region=iad;timeout=300ms")]).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("fly-replay `region=iad;timeout=300ms`"),
            "{body}"
        );
        assert!(body.contains("replay timeout"), "{body}");
        let (status, _, body) = get_with(s.addr, "/", &[("x-replay", "region=fra")]).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no machine in region fra"), "{body}");
        assert_eq!(s.hits("o1") + s.hits("i1"), before);
        // A list of regions: the first that can take it.
        let (status, _, body) = get_with(s.addr, "/", &[("x-replay", "region=iad,ord")]).await;
        assert_eq!((status, body.as_str()), (200, "o1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_replay_goes_to_exactly_that_machine() {
    let s = Setup::new(
        &[("a", "ams"), ("b", "ams"), ("c", "ams"), ("r", "iad")],
        service(),
    )
    .await;
    for i in 0..20 {
        // Replay answers with and without a body (the upstream connection is dropped or reused).
        let empty = if i % 2 == 0 {
            "x-replay-empty"
        } else {
            "x-other"
        };
        let (status, _, body) =
            get_with(s.addr, "/", &[("x-replay", "instance=r"), (empty, "1")]).await;
        assert_eq!((status, body.as_str()), (200, "r"));
    }
    assert_eq!(s.hits("r"), 20);
    assert_eq!(s.hits("a") + s.hits("b") + s.hits("c"), 20);

    // A machine that cannot take it: 503 naming it, never another machine.
    s.fleet.set_state("r", MachineState::Stopped);
    let (status, _, body) = get_with(s.addr, "/", &[("x-replay", "instance=r")]).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("machine r named by fly-replay is stopped"),
        "{body}"
    );
    let (status, _, body) = get_with(s.addr, "/", &[("x-replay", "instance=nope")]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("machine nope named by fly-replay"), "{body}");
    assert_eq!(s.hits("r"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_replayed_intact_and_a_streamed_one_is_not_replayed() {
    let s = Setup::new(&[("l1", "ams"), ("i1", "iad")], service()).await;
    let sent = pattern(100 * 1024);
    let (status, headers, body) =
        send(s.addr, post(sent.clone(), &[("x-replay", "region=iad")])).await;
    assert_eq!((status, body.as_str()), (200, "i1:102400"));
    assert!(!headers.contains_key("fly-replay"));
    assert_eq!(s.last_body("l1"), sent, "first hop");
    assert_eq!(s.last_body("i1"), sent, "replay target");
    assert_eq!(s.last_headers("i1")["content-length"], "102400");

    // A body of unknown length is streamed: it cannot be sent again, so the machine's
    // replay answer reaches the client unchanged.
    let chunks = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
    let req = Request::post("/submit")
        .header("host", "example.test")
        .header("x-replay", "region=iad")
        .body(Chunked(chunks))
        .unwrap();
    let (status, headers, body) = send(s.addr, req).await;
    assert_eq!((status, body.as_str()), (409, "replay from l1"));
    assert_eq!(headers["fly-replay"], "region=iad");
    assert_eq!(s.last_body("l1"), "hello world");

    // So is one over the buffer limit.
    let big = pattern(aloft_proxy::replay::MAX_REPLAY_BODY as usize + 1);
    let (status, headers, body) =
        send(s.addr, post(big.clone(), &[("x-replay", "region=iad")])).await;
    assert_eq!((status, body.as_str()), (409, "replay from l1"));
    assert_eq!(headers["fly-replay"], "region=iad");
    assert_eq!(s.last_body("l1").len(), big.len());
    assert_eq!(s.hits("i1"), 1, "only the buffered request was replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_always_replays_gets_a_502_after_ten_replays() {
    let s = Setup::new(&[("m", "ams"), ("n", "ams")], service()).await;
    let always = [("x-replay", "instance=m"), ("x-replay-always", "1")];
    let (status, headers, body) = get_with(s.addr, "/", &always).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("too many replays"), "{body}");
    assert!(!headers.contains_key("fly-replay"));
    // The first request and ten replays.
    assert_eq!(s.hits("m") + s.hits("n"), 11);
    assert!(s.hits("m") >= 10);

    // Ten replays are allowed: machines that replay to each other with a body, too.
    let before = s.hits("m") + s.hits("n");
    let (status, _, body) = send(
        s.addr,
        post(
            pattern(1000),
            &[("x-replay", "elsewhere=true"), ("x-replay-always", "1")],
        ),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(s.hits("m") + s.hits("n") - before, 11);
    assert_eq!(s.last_body("m").len(), 1000);
    assert_eq!(s.last_body("n").len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elsewhere_avoids_the_machine_that_replied() {
    let s = Setup::new(&[("a", "ams"), ("b", "ams"), ("c", "ams")], service()).await;
    for _ in 0..30 {
        let (status, _, body) = get_with(s.addr, "/", &[("x-replay", "elsewhere=true")]).await;
        assert_eq!(status, 200, "{body}");
        let mut found = None;
        for id in ["a", "b", "c"] {
            let h = s.last_headers_opt(id);
            if body == id {
                found = h;
            }
        }
        let h = found.expect("the answering machine saw the request");
        let src = h["fly-replay-src"].to_str().unwrap().to_string();
        let from = src_field(&src, "instance").unwrap();
        assert_ne!(
            from, body,
            "replayed to the machine that asked to go elsewhere"
        );
    }
    assert_eq!(s.hits("a") + s.hits("b") + s.hits("c"), 60);
}

impl Setup {
    fn last_headers_opt(&self, id: &str) -> Option<http::HeaderMap> {
        self.servers[id].seen.last_headers.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_or_unsupported_replay_passes_the_response_through() {
    let s = Setup::new(&[("a", "ams"), ("b", "iad")], service()).await;
    for value in [
        "region=",
        "planet=mars",
        "state=only",
        "region=ord;region=iad",
    ] {
        let before = s.hits("a") + s.hits("b");
        let (status, headers, body) = get_with(s.addr, "/", &[("x-replay", value)]).await;
        assert_eq!((status, body.as_str()), (409, "replay from a"), "{value}");
        assert_eq!(headers["fly-replay"], value);
        assert_eq!(s.hits("a") + s.hits("b") - before, 1, "{value}");
    }

    // Another app cannot be reached from this port: a clear 502, not the replay response.
    let (status, headers, body) = get_with(s.addr, "/", &[("x-replay", "app=other")]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("another app (app=other)"), "{body}");
    assert!(!headers.contains_key("fly-replay"));
    // The same app is fine.
    let (status, _, body) = get_with(s.addr, "/", &[("x-replay", "app=app;region=iad")]).await;
    assert_eq!((status, body.as_str()), (200, "b"));

    // Clients cannot forge where a request was replayed from.
    let (status, _, body) = get_with(s.addr, "/", &[("fly-replay-src", "instance=x")]).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    assert!(!s.last_headers("a").contains_key("fly-replay-src"));
}
