//! End to end: `http_options.compress` gzips text-like responses for clients that accept gzip,
//! and leaves everything else alone.

use crate::common;

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The text every compressible answer carries: long enough to be worth gzip.
fn page() -> String {
    "<p>aloft compresses text</p>\n".repeat(400)
}

/// An app answering by path: `/html` a large page, `/png` binary, `/small` a short text,
/// `/encoded` text the app gzipped itself (claims), `/no-transform` text it forbids changing.
struct App {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(answer);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    App { addr, task }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (ctype, body, extra): (&str, Vec<u8>, Option<(&str, &str)>) = match req.uri().path() {
        "/html" => (
            "text/html; charset=utf-8",
            page().into_bytes(),
            Some(("etag", "\"v1\"")),
        ),
        "/png" => ("image/png", vec![0x89; 4096], None),
        "/small" => ("text/plain", b"tiny".to_vec(), None),
        "/encoded" => (
            "text/plain",
            page().into_bytes(),
            Some(("content-encoding", "br")),
        ),
        _ => (
            "text/plain",
            page().into_bytes(),
            Some(("cache-control", "no-transform")),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut()
        .insert("content-type", ctype.parse().unwrap());
    if let Some((n, v)) = extra {
        resp.headers_mut().insert(n, v.parse().unwrap());
    }
    Ok(resp)
}

/// GET through the proxy with `accept`: (headers, body bytes as received).
async fn fetch(addr: SocketAddr, path: &str, accept: Option<&str>) -> (http::HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(path).header("host", "example.test");
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    let resp = tx
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (
        headers,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn gunzip(b: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut out)
        .expect("not valid gzip");
    out
}

async fn proxy(
    compress: bool,
) -> (
    App,
    aloft_proxy::ProxyHandle,
    std::sync::Arc<Fleet>,
    SocketAddr,
) {
    let app = start_app().await;
    let mut service = http_service(8080);
    service.ports[0].http_options = Some(serde_json::json!({"compress": compress}));
    let m = common::machine("m1", "web", vec![service], Some(app.addr));
    let (fleet, rx) = Fleet::new("app", vec![m], vec![]);
    let p = spawn(test_config(&[]), &fleet, rx);
    let addr = bound(&p, 80).await;
    (app, p, fleet, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_gzipped_for_clients_that_accept_it() {
    let (_app, _p, _f, addr) = proxy(true).await;
    let (h, body) = fetch(addr, "/html", Some("br, gzip;q=0.8")).await;
    assert_eq!(h.get("content-encoding").unwrap(), "gzip");
    assert!(
        h.get_all("vary").iter().any(|v| v == "accept-encoding"),
        "{h:?}"
    );
    assert_eq!(
        h.get("etag").unwrap(),
        "W/\"v1\"",
        "a strong validator must become weak"
    );
    assert!(h.get("content-length").is_none() || body.len() < page().len());
    assert!(
        body.len() * 5 < page().len(),
        "gzip did not shrink the page: {}",
        body.len()
    );
    assert_eq!(gunzip(&body), page());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_responses_and_clients_are_left_alone() {
    let (_app, _p, _f, addr) = proxy(true).await;
    for (path, accept) in [
        ("/html", None),
        ("/html", Some("gzip;q=0")),
        ("/png", Some("gzip")),
        ("/small", Some("gzip")),
        ("/no-transform", Some("gzip")),
    ] {
        let (h, body) = fetch(addr, path, accept).await;
        assert!(
            h.get("content-encoding").is_none(),
            "{path} {accept:?}: {h:?}"
        );
        assert!(
            !body.starts_with(&[0x1f, 0x8b]),
            "{path} {accept:?} was gzipped"
        );
    }
    let (h, _) = fetch(addr, "/encoded", Some("gzip")).await;
    assert_eq!(
        h.get("content-encoding").unwrap(),
        "br",
        "the app's own encoding was replaced"
    );
    // And without `compress`, nothing is gzipped.
    let (_app2, _p2, _f2, plain) = proxy(false).await;
    let (h, body) = fetch(plain, "/html", Some("gzip")).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, page().as_bytes());
}
