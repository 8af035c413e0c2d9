//! One scrape request: `GET <path>` over HTTP/1.1 (or HTTPS without certificate checks: the
//! machine is reached at an address the platform gave it, which no certificate names) with a
//! deadline over the whole exchange and a bound on the body, so a slow or huge endpoint costs
//! the agent one task and a bounded buffer, never more.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// What a scrape asks for: the classic text format (the only one read).
const ACCEPT: &str = "text/plain;version=0.0.4;q=1,*/*;q=0.1";

/// Fetches `path` from `addr`; the body as text, or why not (for people: the error is shown).
pub async fn fetch(
    addr: SocketAddr,
    path: &str,
    https: bool,
    timeout: Duration,
    max_bytes: usize,
) -> Result<String, String> {
    match tokio::time::timeout(timeout, exchange(addr, path, https, max_bytes)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no complete answer within {} ms",
            timeout.as_millis()
        )),
    }
}

async fn exchange(
    addr: SocketAddr,
    path: &str,
    https: bool,
    max_bytes: usize,
) -> Result<String, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let tls = aloft_proxy::tls::insecure_client()
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
        get(tls, addr, path, max_bytes).await
    } else {
        get(tcp, addr, path, max_bytes).await
    }
}

async fn get<S>(io: S, addr: SocketAddr, path: &str, max_bytes: usize) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP to {addr} failed: {e}"))?;
    // The connection task ends with the exchange (the sender is dropped) or the deadline.
    let conn = tokio::spawn(conn);
    let _abort = AbortOnDrop(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::ACCEPT, ACCEPT)
        .header(hyper::header::USER_AGENT, "aloft-agent")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad metrics path {path:?}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path} from {addr} failed: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {path} from {addr} answered {}", resp.status()));
    }
    let too_big = || format!("GET {path} from {addr}: the body is larger than {max_bytes} bytes");
    let declared = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_big());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body from {addr} failed: {e}"))?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > max_bytes {
                return Err(too_big());
            }
            buf.extend_from_slice(data);
        }
    }
    String::from_utf8(buf).map_err(|_| format!("GET {path} from {addr}: the body is not UTF-8"))
}

struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
