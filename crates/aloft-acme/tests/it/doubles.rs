//! Test doubles of the proxy's ACME challenge hooks: a `ChallengeResponder` table that records
//! what it was asked, served by a small HTTP server (HTTP-01) and a TLS server answering
//! `acme-tls/1` (TLS-ALPN-01) on loopback ports the OS picks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aloft_acme::ChallengeResponder;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What the proxy's challenge registry would hold, plus a log of the calls.
#[derive(Default, Debug)]
pub struct ChallengeTableDouble {
    http01: Mutex<HashMap<String, String>>,
    tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    calls: Mutex<Vec<String>>,
}

impl ChallengeTableDouble {
    /// The calls so far: "set http-01 TOKEN", "remove tls-alpn-01 DOMAIN", …
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Whether any challenge answer is still set.
    pub fn is_empty(&self) -> bool {
        self.http01.lock().unwrap().is_empty() && self.tls_alpn01.lock().unwrap().is_empty()
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl ChallengeResponder for ChallengeTableDouble {
    fn set_http01(&self, token: &str, key_authorization: &str) {
        self.log(format!("set http-01 {token}"));
        self.http01
            .lock()
            .unwrap()
            .insert(token.to_string(), key_authorization.to_string());
    }

    fn remove_http01(&self, token: &str) {
        self.log(format!("remove http-01 {token}"));
        self.http01.lock().unwrap().remove(token);
    }

    fn set_tls_alpn01(&self, domain: &str, cert_chain_der: Vec<Vec<u8>>, key_der: Vec<u8>) {
        self.log(format!("set tls-alpn-01 {domain}"));
        let chain = cert_chain_der
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
        let key = rustls::crypto::ring::sign::any_supported_type(&key)
            .expect("the challenge key is a P-256 PKCS#8 key");
        self.tls_alpn01
            .lock()
            .unwrap()
            .insert(domain.to_string(), Arc::new(CertifiedKey::new(chain, key)));
    }

    fn remove_tls_alpn01(&self, domain: &str) {
        self.log(format!("remove tls-alpn-01 {domain}"));
        self.tls_alpn01.lock().unwrap().remove(domain);
    }
}

/// The HTTP and TLS servers of the double; stopped on drop.
pub struct ChallengeServersDouble {
    pub table: Arc<ChallengeTableDouble>,
    pub http_port: u16,
    pub tls_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ChallengeServersDouble {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ChallengeServersDouble {
    pub async fn start() -> ChallengeServersDouble {
        let table = Arc::new(ChallengeTableDouble::default());
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_port, tls_port) = (
            http.local_addr().unwrap().port(),
            tls.local_addr().unwrap().port(),
        );
        let tasks = vec![
            tokio::spawn(serve_http01(http, table.clone())),
            tokio::spawn(serve_tls_alpn01(tls, table.clone())),
        ];
        ChallengeServersDouble {
            table,
            http_port,
            tls_port,
            tasks,
        }
    }
}

async fn serve_http01(listener: TcpListener, table: Arc<ChallengeTableDouble>) {
    async fn answer(
        State(table): State<Arc<ChallengeTableDouble>>,
        Path(token): Path<String>,
    ) -> (StatusCode, String) {
        match table.http01.lock().unwrap().get(&token) {
            Some(key_authorization) => (StatusCode::OK, key_authorization.clone()),
            None => (StatusCode::NOT_FOUND, "no such challenge".into()),
        }
    }
    let app = axum::Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer))
        .with_state(table);
    axum::serve(listener, app).await.unwrap();
}

/// Picks the challenge certificate by SNI, only for a ClientHello offering exactly
/// `acme-tls/1` (as the proxy must).
#[derive(Debug)]
struct ChallengeCertificates(Arc<ChallengeTableDouble>);

impl ResolvesServerCert for ChallengeCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let alpn: Vec<&[u8]> = hello.alpn()?.collect();
        if alpn != [ACME_TLS_ALPN] {
            return None;
        }
        let name = hello.server_name()?;
        self.0.tls_alpn01.lock().unwrap().get(name).cloned()
    }
}

async fn serve_tls_alpn01(listener: TcpListener, table: Arc<ChallengeTableDouble>) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(ChallengeCertificates(table)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // The handshake is the answer; the validator closes the connection after it.
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            }
        });
    }
}
