//! Edge cases where the h1 fast path once differed from the hyper path (found in review):
//! each test runs the same exchange through a proxy without the fast path and one with it,
//! against a raw TCP machine. Framing headers named in `Connection`, a client that leaves
//! mid-request, a hand-over with ~100 headers, targets hyper refuses or rewrites, the header
//! limit after a large body, non-CRLF chunked framing.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Machine: canned answer by path prefix; logs request lines; notes when a connection ends.
struct Machine {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    closed: Arc<Mutex<Vec<Instant>>>,
}

async fn machine() -> Machine {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (lines, closed) = (Arc::new(Mutex::new(vec![])), Arc::new(Mutex::new(vec![])));
    let (lg, cl) = (lines.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (lg, cl) = (lg.clone(), cl.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut c = [0u8; 65536];
                        match s.read(&mut c).await {
                            Ok(0) | Err(_) => return cl.lock().unwrap().push(Instant::now()),
                            Ok(n) => buf.extend_from_slice(&c[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4); // requests here have no body
                    let line = head.lines().next().unwrap().to_string();
                    let path = line.split(' ').nth(1).unwrap().to_string();
                    lg.lock().unwrap().push(line);
                    let resp: &[u8] = if path.starts_with("/connlen") {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello"
                    } else if path.starts_with("/lf") {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"
                    } else if path.starts_with("/replay") {
                        if head.to_ascii_lowercase().contains("fly-replay-src") {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nreplayed"
                        } else {
                            b"HTTP/1.1 200 OK\r\nfly-replay: region=ams\r\nContent-Length: 0\r\n\r\n"
                        }
                    } else if path.starts_with("/slow") {
                        // Answers only once more bytes come: a connection the proxy lets go
                        // of while this request is pending ends here, unanswered.
                        let mut one = [0u8; 1];
                        if let Ok(0) = s.read(&mut one).await {
                            return cl.lock().unwrap().push(Instant::now());
                        }
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                    };
                    if s.write_all(resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Machine {
        addr,
        lines,
        closed,
    }
}

/// A proxy with (`fast`) or without the fast path over one machine.
async fn proxy(fast: bool) -> (Machine, SocketAddr, aloft_proxy::ProxyHandle, Arc<Fleet>) {
    let m = machine().await;
    let rec = common::machine("m1", "web", vec![http_service(8080)], Some(m.addr));
    let (fleet, rx) = Fleet::new("app", vec![rec], vec![]);
    let p = spawn(
        aloft_proxy::ProxyConfig {
            h1_fast_path: fast,
            header_read_timeout: Duration::from_secs(5),
            ..test_config(&[])
        },
        &fleet,
        rx,
    );
    let addr = bound(&p, 80).await;
    (m, addr, p, fleet)
}

/// Writes `raw`; what comes back within `wait` (or until EOF).
async fn send(addr: SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_header_named_in_connection_keeps_its_framing() {
    for fast in [false, true] {
        let (_m, addr, _p, _f) = proxy(fast).await;
        let raw = get("/connlen", "") + &get("/len", "Connection: close\r\n");
        let got = send(addr, raw.as_bytes(), Duration::from_secs(2)).await;
        let first_head = got.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            first_head.contains("content-length: 5") || first_head.contains("transfer-encoding"),
            "fast={fast}: first response has no framing, the second is read as its body:\n{got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_request_releases_the_machine_connection() {
    for fast in [false, true] {
        let (m, addr, _p, _f) = proxy(fast).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(get("/slow", "").as_bytes()).await.unwrap();
        // The request has reached the machine before the client leaves.
        wait_for("the request at the machine", || {
            m.lines.lock().unwrap().len() == 1
        })
        .await;
        drop(s);
        // The machine never answers a pending `/slow`: only the proxy letting go of the
        // request (lease, machine socket) after the client left closes the connection.
        wait_for(
            &format!("fast={fast}: the machine connection to be closed after the client left"),
            || !m.closed.lock().unwrap().is_empty(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_a_request_with_95_headers() {
    for fast in [false, true] {
        let (_m, addr, _p, _f) = proxy(fast).await;
        let many: String = (0..95).map(|i| format!("X-H{i}: v\r\n")).collect();
        let raw = get("/replay", &format!("{many}Connection: close\r\n"));
        let got = send(addr, raw.as_bytes(), Duration::from_secs(3)).await;
        assert!(got.ends_with("replayed"), "fast={fast}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_the_hyper_path_rejects_or_rewrites() {
    for fast in [false, true] {
        let (m, addr, _p, _f) = proxy(fast).await;
        let got = send(
            addr,
            get("/a<b>", "Connection: close\r\n").as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 400"), "fast={fast}: {got}");
        send(
            addr,
            get("/len#frag", "Connection: close\r\n").as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        let lines = m.lines.lock().unwrap().clone();
        assert_eq!(lines, vec!["GET /len HTTP/1.1".to_string()], "fast={fast}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limit_holds_after_a_large_body() {
    for fast in [false, true] {
        let (m, addr, _p, _f) = proxy(fast).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = vec![b'x'; 1024 * 1024];
        let mut req = format!(
            "POST /len HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        s.write_all(&req).await.unwrap();
        let mut first = [0u8; 4096];
        let _ = s.read(&mut first).await.unwrap();
        let big = get(
            "/len",
            &format!("X-Big: {}\r\nConnection: close\r\n", "b".repeat(300_000)),
        );
        s.write_all(big.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        let got = String::from_utf8_lossy(&out);
        assert!(
            got.starts_with("HTTP/1.1 431"),
            "fast={fast}: {}",
            &got[..got.len().min(60)]
        );
        // (machine got the 300 KB head on the fast path)
        let _ = m;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_framing_reaches_the_client_canonical() {
    for fast in [false, true] {
        let (_m, addr, _p, _f) = proxy(fast).await;
        let got = send(
            addr,
            get("/lf", "Connection: close\r\n").as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert!(
            !got.contains("5\nhello\n"),
            "fast={fast}: non-CRLF chunk framing passed on:\n{got:?}"
        );
    }
}
