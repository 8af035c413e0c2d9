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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one connection: reads the request head, writes `answer`; over TLS with a
    /// self-signed certificate when `tls`.
    async fn serve_once(answer: Vec<u8>, tls: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.then(|| {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            async fn answer_on<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: &[u8]) {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
            }
            match acceptor {
                Some(a) => answer_on(a.accept(tcp).await.unwrap(), &answer).await,
                None => answer_on(tcp, &answer).await,
            }
        });
        addr
    }

    #[tokio::test]
    async fn https_endpoints_are_read_without_certificate_checks() {
        let body = "up 1\n";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let addr = serve_once(answer.into_bytes(), true).await;
        let got = fetch(addr, "/metrics", true, Duration::from_secs(10), 1024).await;
        assert_eq!(got.as_deref(), Ok(body));
    }

    #[tokio::test]
    async fn a_body_past_the_bound_fails_even_without_a_length() {
        let mut answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
        answer.extend(std::iter::repeat_n(b'x', 4096));
        let addr = serve_once(answer, false).await;
        let err = fetch(addr, "/metrics", false, Duration::from_secs(10), 1024)
            .await
            .unwrap_err();
        assert!(err.contains("larger than 1024 bytes"), "{err}");
    }
}
