//! The h1 fast path against the hyper path: for the same requests, a machine receives the same
//! request and the client the same response through a proxy with the fast path and one
//! without. The machine is a raw TCP server answering canned bytes, so framings hyper's own
//! server would never produce (close-delimited, 1xx, custom reasons) are covered.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Raw response bytes per path, and whether the machine closes the connection after it.
fn canned(path: &str) -> (Vec<u8>, bool) {
    let (r, close): (&[u8], bool) = match path {
        "/len" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", false),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
            false,
        ),
        "/eof" => (b"HTTP/1.1 200 OK\r\nX-B: 2\r\n\r\nuntil the end", true),
        "/hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/none" => (b"HTTP/1.1 204 No Content\r\nX-C: 3\r\n\r\n", false),
        "/same" => (b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n", false),
        "/bye" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close, x-hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\r\nbye",
            true,
        ),
        "/reason" => (b"HTTP/1.1 299 Custom Thing\r\nContent-Length: 0\r\n\r\n", false),
        "/own" => (
            b"HTTP/1.1 200 OK\r\nServer: app\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\nFly-Request-Id: app-made\r\nVia: 1.1 app\r\nContent-Length: 1\r\n\r\nx",
            false,
        ),
        "/big" => {
            let body = "0123456789".repeat(20_000);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            return ([head.as_bytes(), body.as_bytes()].concat(), false);
        }
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    };
    (r.to_vec(), close)
}

/// A machine that answers canned responses and records each request it gets (head lines
/// with lower-cased names, sorted, then the body).
struct RawMachine {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawMachine {
    async fn start() -> RawMachine {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.spawn(serve_raw(s, log.clone()));
            }
        });
        RawMachine { addr, seen, task }
    }
}

impl Drop for RawMachine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_raw(mut s: TcpStream, log: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = find(&buf, b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut fields: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        let length: usize = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        while buf.len() < end + 4 + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
        buf.drain(..end + 4 + length);
        // Names as sent (case kept) are recorded once, to tell the paths apart.
        let raw_names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
        fields
            .iter_mut()
            .for_each(|(n, _)| *n = n.to_ascii_lowercase());
        fields.sort();
        let record = format!(
            "{request_line}\n{}\n\n{body}\nnames: {}",
            fields
                .iter()
                .map(|(n, v)| format!("{n}: {v}"))
                .collect::<Vec<_>>()
                .join("\n"),
            raw_names.join(",")
        );
        log.lock().unwrap().push(record);
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
        let (resp, close) = canned(&path);
        if s.write_all(&resp).await.is_err() || close {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response as the client saw it: status line, headers (lower-cased, sorted, without the
/// per-request ones), body.
#[derive(Debug, PartialEq)]
struct Seen {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one response (of a request with `method`) from a raw client connection.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, method: &str) -> Seen {
    let end = loop {
        if let Some(e) = find(buf, b"\r\n\r\n") {
            break e;
        }
        read_more(s, buf).await;
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let mut headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(':').unwrap())
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let status: u16 = status_line[9..12].parse().unwrap();
    let mut body = Vec::new();
    if method != "HEAD" && status != 204 && status != 304 {
        if let Some(n) = get("content-length") {
            let n: usize = n.parse().unwrap();
            while buf.len() < n {
                read_more(s, buf).await;
            }
            body = buf.drain(..n).collect();
        } else {
            assert_eq!(get("transfer-encoding").as_deref(), Some("chunked"));
            loop {
                let line_end = loop {
                    if let Some(e) = find(buf, b"\r\n") {
                        break e;
                    }
                    read_more(s, buf).await;
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16).unwrap();
                while buf.len() < line_end + 2 + size + 2 {
                    read_more(s, buf).await;
                }
                body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
                buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break;
                }
            }
        }
    }
    headers.retain(|(n, _)| n != "date" && n != "fly-request-id");
    headers.sort();
    Seen {
        status_line,
        headers,
        body,
    }
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 16384];
    let n = s.read(&mut chunk).await.unwrap();
    assert!(
        n > 0,
        "connection closed; got so far: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Two proxies over one machine: with the fast path and without.
struct Pair {
    machine: RawMachine,
    fast: aloft_proxy::ProxyHandle,
    hyper: aloft_proxy::ProxyHandle,
    _fleet: Arc<Fleet>,
}

impl Pair {
    async fn start() -> Pair {
        Self::with_http_options(None).await
    }

    /// With `http_options` on the service's port 80.
    async fn with_http_options(http_options: Option<serde_json::Value>) -> Pair {
        let machine = RawMachine::start().await;
        let mut service = http_service(8080);
        service.ports[0].http_options = http_options;
        let m = common::machine("m1", "web", vec![service], Some(machine.addr));
        let (fleet, rx) = Fleet::new("app", vec![m], vec![]);
        let fast = spawn(test_config(&[]), &fleet, rx.clone());
        let hyper = spawn(
            aloft_proxy::ProxyConfig {
                h1_fast_path: false,
                ..test_config(&[])
            },
            &fleet,
            rx,
        );
        Pair {
            machine,
            fast,
            hyper,
            _fleet: fleet,
        }
    }

    /// Sends `requests` (method, raw request bytes) one after the other on one connection
    /// to `proxy`; the responses and what the machine received.
    async fn run(
        &self,
        proxy: &aloft_proxy::ProxyHandle,
        requests: &[(&str, String)],
    ) -> (Vec<Seen>, Vec<String>) {
        self.machine.seen.lock().unwrap().clear();
        let addr = bound(proxy, 80).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for (method, raw) in requests {
            s.write_all(raw.as_bytes()).await.unwrap();
            seen.push(read_response(&mut s, &mut buf, method).await);
        }
        let received = self.machine.seen.lock().unwrap().clone();
        (seen, received)
    }
}

fn get(path: &str, extra: &str) -> (&'static str, String) {
    (
        "GET",
        format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n{extra}\r\n"),
    )
}

/// Drops the line of raw header names (it differs by design: the fast path keeps their case).
fn without_names(records: &[String]) -> Vec<String> {
    records
        .iter()
        .map(|r| r.rsplit_once("\nnames: ").unwrap().0.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_and_hyper_path_send_and_answer_the_same() {
    let pair = Pair::start().await;
    let requests = vec![
        get(
            "/len?q=1",
            "X-Forwarded-For: 10.0.0.1\r\nVia: 1.0 edge\r\nKeep-Alive: timeout=9\r\nConnection: keep-alive\r\nX-Custom: kept\r\nFly-Client-IP: forged\r\nX-Forwarded-Proto: forged\r\nFly-Region: forged\r\nTE: trailers\r\n",
        ),
        (
            "POST",
            "POST /len HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello there".to_string(),
        ),
        get("/chunked", ""),
        get("/eof", ""),
        get("/hints", ""),
        get("/none", ""),
        get("/same", "If-None-Match: \"x\"\r\n"),
        get("/reason", ""),
        get("/own", ""),
        get("/big", ""),
        ("HEAD", "HEAD /len HTTP/1.1\r\nHost: example.test\r\n\r\n".to_string()),
        get("/bye", ""),
        // After the machine closed: a new upstream connection, same client connection.
        get("/len", ""),
        get("/missing", ""),
    ];
    let (fast_resp, fast_recv) = pair.run(&pair.fast, &requests).await;
    let (hyper_resp, hyper_recv) = pair.run(&pair.hyper, &requests).await;
    for (i, (f, h)) in fast_resp.iter().zip(&hyper_resp).enumerate() {
        assert_eq!(
            f, h,
            "response to request {i} ({:?}) differs",
            requests[i].1
        );
    }
    assert_eq!(fast_resp.len(), requests.len());
    assert_eq!(without_names(&fast_recv), without_names(&hyper_recv));
    // The fast path did serve them: only it keeps the case of header names.
    assert!(
        fast_recv[0].contains("X-Custom"),
        "the fast path did not serve the request: {}",
        fast_recv[0]
    );
    assert!(hyper_recv[0].contains("x-custom"));
    // And the headers the proxy owns are its own, whatever the client sent.
    let first = &fast_recv[0];
    assert!(
        first.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1"),
        "{first}"
    );
    assert!(first.contains("via: 1.0 edge, 1.1 aloft"), "{first}");
    assert!(first.contains("fly-client-ip: 127.0.0.1"), "{first}");
    assert!(
        !first.contains("forged") && !first.contains("keep-alive"),
        "{first}"
    );
    let big = &fast_resp[9];
    assert_eq!(big.body.len(), 200_000);
    let bye = &fast_resp[11];
    assert!(
        !bye.headers
            .iter()
            .any(|(n, _)| n == "x-hop" || n == "keep-alive"),
        "hop-by-hop headers of the response were passed on: {bye:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_fast_path_does_not_take_are_served_by_hyper_on_the_same_connection() {
    let pair = Pair::start().await;
    let requests = vec![
        get("/len", "X-First: 1\r\n"),
        // A routing hint: the hyper path from here on.
        get("/len", "Fly-Prefer-Region: ams\r\nX-Second: 1\r\n"),
        get("/chunked", "X-Third: 1\r\n"),
        // HTTP/1.0 (the connection ends after it).
        (
            "GET",
            "GET /len HTTP/1.0\r\nHost: example.test\r\nX-Fourth: 1\r\n\r\n".to_string(),
        ),
    ];
    let (resp, recv) = pair.run(&pair.fast, &requests).await;
    assert!(
        resp.iter().all(|r| r.status_line.contains(" 200 ")),
        "{resp:?}"
    );
    assert_eq!(resp[2].body, b"hello world");
    assert!(recv[0].contains("X-First"), "{}", recv[0]);
    assert!(recv[1].contains("x-second"), "{}", recv[1]);
    assert!(recv[2].contains("x-third"), "{}", recv[2]);
    assert!(recv[3].contains("x-fourth"), "{}", recv[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let pair = Pair::start().await;
    let addr = bound(&pair.fast, 80).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let batch = "GET /len HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /reason HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    s.write_all(batch.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let a = read_response(&mut s, &mut buf, "GET").await;
    let b = read_response(&mut s, &mut buf, "GET").await;
    let c = read_response(&mut s, &mut buf, "GET").await;
    assert_eq!(
        (a.body.as_slice(), b.body.as_slice(), c.status_line.as_str()),
        (
            &b"hello"[..],
            &b"hello world"[..],
            "HTTP/1.1 299 Custom Thing"
        )
    );
    assert!(
        c.headers.contains(&("connection".into(), "close".into())),
        "{c:?}"
    );
    // `Connection: close` was honoured: the proxy closes.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the proxy kept the connection open after Connection: close")
        .unwrap();
    assert_eq!(
        n,
        0,
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_response_headers_and_pristine_match_the_hyper_path() {
    let options = serde_json::json!({"response": {"pristine": true, "headers": {
        "x-added": "yes", "server": false, "x-a": "replaced", "via": "1.1 configured"}}});
    let pair = Pair::with_http_options(Some(options)).await;
    let requests = vec![get("/len", ""), get("/own", ""), get("/chunked", "")];
    let (fast, _) = pair.run(&pair.fast, &requests).await;
    let (hyper, _) = pair.run(&pair.hyper, &requests).await;
    assert_eq!(fast, hyper);
    let h = &fast[0].headers;
    assert!(h.contains(&("x-added".into(), "yes".into())), "{h:?}");
    assert!(h.contains(&("x-a".into(), "replaced".into())), "{h:?}");
    assert!(
        h.contains(&("via".into(), "1.1 configured".into())),
        "{h:?}"
    );
    assert!(!h.iter().any(|(n, _)| n == "server"), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_may_idle_longer_than_the_header_timeout_but_not_past_idle_timeout()
{
    // test_config: header read timeout 500 ms; the service: idle_timeout 1 s.
    let pair = Pair::with_http_options(Some(serde_json::json!({"idle_timeout": 1}))).await;
    let addr = bound(&pair.fast, 80).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let req = "GET /len HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf, "GET").await.body, b"hello");
    // Idle past the header timeout: the connection still serves.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s, &mut buf, "GET").await.body, b"hello");
    // Idle past idle_timeout: the proxy closes it (well before the default of 60 s).
    let t0 = std::time::Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the connection was not closed after idle_timeout")
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(900),
        "closed too early: {:?}",
        t0.elapsed()
    );
}
