//! End to end: `http_options.h2_backend` — the proxy speaks HTTP/2 (h2c, prior knowledge) to
//! a machine that only speaks HTTP/2, as gRPC servers do. HTTP/1.1 and HTTP/2 clients both
//! reach it, and response trailers (`grpc-status`) reach an HTTP/2 client.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An HTTP/2-only app: answers the protocol and target it saw, with a `grpc-status: 0`
/// trailer. Counts its connections (requests should share one).
struct H2App {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl H2App {
    async fn start() -> H2App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(answer);
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        H2App {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for H2App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type TrailedBody = http_body_util::combinators::WithTrailers<
    Full<Bytes>,
    std::future::Ready<Option<Result<http::HeaderMap, Infallible>>>,
>;

async fn answer(req: Request<Incoming>) -> Result<Response<TrailedBody>, Infallible> {
    let text = format!(
        "{:?} {} host={}",
        req.version(),
        req.uri().path_and_query().map_or("", |p| p.as_str()),
        req.uri().authority().map_or("", |a| a.as_str()),
    );
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(text)).with_trailers(std::future::ready(Some(Ok(trailers))));
    Ok(Response::new(body))
}

async fn proxy_for(app: &H2App) -> (aloft_proxy::ProxyHandle, Arc<Fleet>) {
    let mut service = http_service(50051);
    service.ports[0].http_options = Some(serde_json::json!({"h2_backend": true}));
    let m = common::machine("m1", "web", vec![service], Some(app.addr));
    let (fleet, rx) = Fleet::new("app", vec![m], vec![]);
    (spawn(test_config(&[]), &fleet, rx), fleet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_reach_an_h2_only_app_over_shared_connections() {
    let app = H2App::start().await;
    let (proxy, _fleet) = proxy_for(&app).await;
    let addr = bound(&proxy, 80).await;
    // One client connection stays on one proxy worker: its requests share one h2 connection.
    let mut client = KeepAlive::connect(addr).await;
    for i in 0..3 {
        let (status, body) = client.get(&format!("/svc/Method?n={i}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("HTTP/2.0 /svc/Method?n={i} host=example.test")
        );
    }
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
    // New client connections (on any worker) reuse their worker's h2 connection.
    for i in 0..6 {
        let (status, _, body) = get(addr, &format!("/again/{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let workers = test_config(&[]).workers.max(1);
    let n = app.connections.load(Ordering::SeqCst);
    assert!(
        n <= workers,
        "{n} connections to the machine for 9 requests; at most one per proxy worker ({workers})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_the_apps_trailers() {
    let app = H2App::start().await;
    let (proxy, _fleet) = proxy_for(&app).await;
    let addr = bound(&proxy, 80).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://example.test:{}/pkg.Svc/Call", addr.port()))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    assert!(
        body.starts_with(b"HTTP/2.0 /pkg.Svc/Call host=example.test"),
        "{body:?}"
    );
    assert_eq!(
        trailers.as_ref().and_then(|t| t.get("grpc-status")),
        Some(&http::HeaderValue::from_static("0")),
        "trailers: {trailers:?}"
    );
}
