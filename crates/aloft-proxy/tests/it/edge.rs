//! End to end at the edge: TLS and `force_https` with a real client (curl), HTTP/2, and bad
//! clients (garbage, oversized headers, slowloris) that must get a 4xx or a close while the
//! proxy keeps serving everyone else.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use aloft_api::MachineService;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn web_proxy(
    force_https: bool,
) -> (aloft_proxy::ProxyHandle, TestServer, SocketAddr, SocketAddr) {
    let server = TestServer::start("web").await;
    let mut svc: MachineService = http_service(8080);
    svc.ports[0].force_https = force_https;
    let (fleet, rx) = Fleet::new(
        "app",
        vec![machine("m", "web", vec![svc], Some(server.addr))],
        vec![],
    );
    let proxy = spawn(test_config(&[80, 443]), &fleet, rx);
    let http = bound(&proxy, 80).await;
    let https = bound(&proxy, 443).await;
    std::mem::forget(fleet);
    (proxy, server, http, https)
}

/// Runs curl off the async threads; `None` when curl is not installed.
async fn curl(args: Vec<String>) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl").args(&args).output().ok()?;
        assert!(
            out.status.success(),
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).to_string())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_http2_and_force_https_with_curl() {
    let (_proxy, server, http, https) = web_proxy(true).await;
    let fmt = "%{http_code} %{redirect_url}".to_string();
    let Some(out) = curl(vec![
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        fmt,
        format!("http://localhost:{}/a?b=1", http.port()),
    ])
    .await
    else {
        eprintln!("curl not installed: skipping (apt-get install -y curl)");
        return;
    };
    assert_eq!(out, format!("301 https://localhost:{}/a?b=1", https.port()));

    // Follow the redirect over TLS (self-signed certificate: -k), HTTP/2 negotiated by ALPN.
    let out = curl(vec![
        "-sk".into(),
        "-L".into(),
        "--http2".into(),
        "-w".into(),
        " %{http_version}".into(),
        format!("http://localhost:{}/hello", http.port()),
    ])
    .await
    .unwrap();
    assert_eq!(out, "web 2");
    let h = server.stats.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-ssl"], "on");
    assert_eq!(h["via"], "2 aloft");

    // HTTP/1.1 over TLS with a POST body.
    let out = curl(vec![
        "-sk".into(),
        "--http1.1".into(),
        "-d".into(),
        "payload".into(),
        format!("https://localhost:{}/", https.port()),
    ])
    .await
    .unwrap();
    assert_eq!(out, "web:payload");

    // The certificate is really self-signed for localhost: verification must fail without -k.
    let args = vec![
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        format!("https://localhost:{}/", https.port()),
    ];
    let status =
        tokio::task::spawn_blocking(move || Command::new("curl").args(&args).status().unwrap())
            .await
            .unwrap();
    assert!(
        !status.success(),
        "an unverifiable certificate must be refused by curl"
    );
}

/// Sends raw bytes and returns what came back before the proxy closed (or 5 s passed).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_get_4xx_or_close_and_others_are_served() {
    let (proxy, server, http, _) = web_proxy(false).await;

    let reply = raw(http, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let reply = raw(http, huge.as_bytes()).await;
    // 431, unless the kernel resets the connection (unread request bytes) before we read it.
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply:?}"
    );

    // Slowloris: headers trickle in and never end. Meanwhile a normal client is served, and
    // the slow one is cut while it still trickles (the header read timeout is 500 ms in tests;
    // the trickle goes on for the kit's whole patience, so only a cut ends it early).
    let mut slow = TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        let end = tokio::time::Instant::now() + aloft_testkit::PATIENCE;
        let mut buf = [0u8; 64];
        while tokio::time::Instant::now() < end {
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return true;
            }
            // A close the writes have not noticed yet.
            match slow.try_read(&mut buf) {
                Ok(0) => return true,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return true,
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    assert_eq!(get(http, "/").await.2, "web");
    assert!(
        trickle.await.unwrap(),
        "slow client was never cut off while its headers trickled"
    );

    // Still up for everyone; the bad requests never reached the app.
    assert_eq!(get(http, "/").await.0, 200);
    assert_eq!(
        server.stats.hits.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    drop(proxy);
}
