//! Many apps on one proxy: HTTP ports shared by `Host` and TLS SNI, the 404 of an unknown
//! host, certificates per hostname (self-signed, replaced at run time), Flycast listeners,
//! and ACME challenges answered before routing.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aloft_api::{MachinePort, MachineService};
use aloft_proxy::{AppRoutes, NoControl, Proxy, ProxyHandle, RouteTable};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

fn app(name: &str, server: &TestServer, hostnames: &[&str]) -> AppRoutes {
    AppRoutes {
        hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
        ..AppRoutes::new(
            name,
            "ams",
            vec![machine(
                &format!("{name}-m"),
                "web",
                vec![http_service(8080)],
                Some(server.addr),
            )],
        )
    }
}

fn spawn_apps(apps: Vec<AppRoutes>) -> (ProxyHandle, tokio::sync::watch::Sender<RouteTable>) {
    let (tx, rx) = tokio::sync::watch::channel(RouteTable::from_machines(&apps));
    let proxy = Proxy::spawn(test_config(&[]), rx, Arc::new(NoControl)).unwrap();
    (proxy, tx)
}

/// GETs `path` with `Host: host` on a connection (plain or TLS) already open.
async fn get_on<IO>(io: IO, host: &str, path: &str) -> (u16, String)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    send(&mut tx, host, path).await
}

async fn send(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> (u16, String) {
    tx.ready().await.unwrap();
    let req = http::Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

async fn get_host(addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    get_on(TcpStream::connect(addr).await.unwrap(), host, path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_share_port_80_by_host_and_unknown_hosts_get_a_404() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let (proxy, _tx) = spawn_apps(vec![
        app("one", &a, &["one.localhost", "www.example.com"]),
        app("two", &b, &["two.localhost"]),
    ]);
    let addr = bound(&proxy, 80).await;
    assert_eq!(
        get_host(addr, "one.localhost", "/").await,
        (200, "a".into())
    );
    assert_eq!(
        get_host(addr, "TWO.localhost:80", "/").await,
        (200, "b".into())
    );
    assert_eq!(
        get_host(addr, "www.example.com.", "/").await,
        (200, "a".into())
    );
    // One keep-alive connection, requests for both apps in turn (h1 fast path).
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        assert_eq!(send(&mut tx, "one.localhost", "/").await.1, "a");
        assert_eq!(send(&mut tx, "two.localhost", "/").await.1, "b");
    }
    let (status, body) = send(&mut tx, "three.localhost", "/").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        body,
        "no app answers at host \"three.localhost\" on port 80 of this agent; it serves: \
         one.localhost, two.localhost, www.example.com\n"
    );
    // The connection is still good after the 404.
    assert_eq!(send(&mut tx, "two.localhost", "/").await.1, "b");
    let hits = |s: &TestServer| s.stats.hits.load(Ordering::SeqCst);
    assert_eq!((hits(&a), hits(&b)), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_on_a_port_answers_every_host() {
    let a = TestServer::start("a").await;
    let (proxy, _tx) = spawn_apps(vec![app("one", &a, &["one.localhost"])]);
    let addr = bound(&proxy, 80).await;
    assert_eq!(get_host(addr, "127.0.0.1", "/").await, (200, "a".into()));
    assert_eq!(
        get_host(addr, "whatever.test", "/").await,
        (200, "a".into())
    );
}

/// A TLS client that takes any certificate and offers `alpn`.
fn tls_client(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tls_client(alpn).connect(name, tcp).await
}

fn peer_cert(s: &ClientTls) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Whether a DER certificate names `host` (a dNSName is stored as plain ASCII).
fn names(cert: &CertificateDer<'_>, host: &str) -> bool {
    cert.windows(host.len()).any(|w| w == host.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_by_sni_self_signed_per_hostname_and_replaced_at_run_time() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let (proxy, _tx) = spawn_apps(vec![
        app("one", &a, &["one.localhost"]),
        app("two", &b, &["two.localhost", "shop.example"]),
    ]);
    let addr = bound(&proxy, 443).await;
    let http = [b"http/1.1".as_slice()];

    let one = tls_connect(addr, "one.localhost", &http).await.unwrap();
    let one_cert = peer_cert(&one);
    assert!(names(&one_cert, "one.localhost"));
    assert_eq!(get_on(one, "one.localhost", "/").await, (200, "a".into()));
    let two = tls_connect(addr, "two.localhost", &http).await.unwrap();
    assert!(names(&peer_cert(&two), "two.localhost"));
    // Routed by Host after TLS.
    assert_eq!(get_on(two, "two.localhost", "/").await, (200, "b".into()));
    // The same certificate for the same name (made once, cached).
    let again = tls_connect(addr, "one.localhost", &http).await.unwrap();
    assert_eq!(peer_cert(&again), one_cert);
    // A name no app answers at: the default certificate, and the 404 after the handshake.
    let other = tls_connect(addr, "nobody.example", &http).await.unwrap();
    assert!(!names(&peer_cert(&other), "nobody.example"));
    let (status, body) = get_on(other, "nobody.example", "/").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("one.localhost, shop.example, two.localhost"),
        "{body}"
    );

    // A certificate set at run time wins from the next handshake on, same listener.
    let ck = rcgen::generate_simple_self_signed(vec!["shop.example".to_string()]).unwrap();
    proxy
        .set_certificate("shop.example", &ck.cert.pem(), &ck.key_pair.serialize_pem())
        .unwrap();
    let shop = tls_connect(addr, "shop.example", &http).await.unwrap();
    assert_eq!(peer_cert(&shop).as_ref(), ck.cert.der().as_ref());
    assert_eq!(get_on(shop, "shop.example", "/").await, (200, "b".into()));
    // Bad PEM is refused with a message, and the old certificate stays.
    let err = proxy
        .set_certificate("shop.example", "not pem", &ck.key_pair.serialize_pem())
        .unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
    let shop = tls_connect(addr, "shop.example", &http).await.unwrap();
    assert_eq!(peer_cert(&shop).as_ref(), ck.cert.der().as_ref());
    proxy.remove_certificate("shop.example");
    let shop = tls_connect(addr, "shop.example", &http).await.unwrap();
    assert_ne!(peer_cert(&shop).as_ref(), ck.cert.der().as_ref());
    assert!(names(&peer_cert(&shop), "shop.example"));
}

/// A free TCP port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flycast_addresses_serve_their_app_only_and_private_apps_stay_off_public_ports() {
    let (p, q) = (
        TestServer::start("private").await,
        TestServer::start("public").await,
    );
    // Loopback addresses stand in for Flycast addresses.
    let (fly_p, fly_q) = ("127.0.0.2", "127.0.0.3");
    let port = free_port(fly_p).max(free_port(fly_q));
    let svc = MachineService {
        protocol: "tcp".into(),
        internal_port: 8080,
        ports: vec![
            MachinePort {
                port: Some(port),
                handlers: vec!["http".into()],
                ..Default::default()
            },
            // Raw TCP too.
            MachinePort {
                port: Some(port + 1),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let with = |name: &str, s: &TestServer, fly: &str, public: bool| AppRoutes {
        flycast: vec![fly.parse().unwrap()],
        public,
        ..AppRoutes::new(
            name,
            "ams",
            vec![machine(
                &format!("{name}-m"),
                "web",
                vec![svc.clone()],
                Some(s.addr),
            )],
        )
    };
    let apps = vec![
        with("private", &p, fly_p, false),
        with("public", &q, fly_q, true),
    ];
    let (tx, rx) = tokio::sync::watch::channel(RouteTable::from_machines(&apps));
    let mut config = test_config(&[port, port + 1]);
    config.bind_ip = "127.0.0.1".parse().unwrap();
    let proxy = Proxy::spawn(config, rx, Arc::new(NoControl)).unwrap();
    let mut flycast = proxy.bound_flycast();
    let deadline = Instant::now() + Duration::from_secs(10);
    while flycast.borrow_and_update().len() < 4 {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("flycast listeners");
        let _ = tokio::time::timeout(left, flycast.changed()).await;
    }
    for (addr, r) in flycast.borrow().iter() {
        assert_eq!(r.as_ref().unwrap(), addr, "Flycast binds the port itself");
    }
    let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
    for _ in 0..3 {
        assert_eq!(
            get_host(at(fly_p, port), "x", "/").await,
            (200, "private".into())
        );
        assert_eq!(
            get_host(at(fly_q, port), "x", "/").await,
            (200, "public".into())
        );
    }
    // Raw TCP on a Flycast address reaches the app too (an HTTP request through the splice).
    assert_eq!(
        get_host(at(fly_p, port + 1), "x", "/").await,
        (200, "private".into())
    );
    // The public listener serves the public app alone: the private one is not there.
    let public = bound(&proxy, port).await;
    for _ in 0..3 {
        assert_eq!(get_host(public, "x", "/").await, (200, "public".into()));
    }
    // Addresses that go away stop being served.
    tx.send_replace(RouteTable::from_machines(&apps[1..]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(at(fly_p, port)).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the private app's listener stays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_challenges_are_answered_before_routing() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let (proxy, _tx) = spawn_apps(vec![
        app("one", &a, &["one.localhost"]),
        app("two", &b, &["two.localhost"]),
    ]);
    let http_addr = bound(&proxy, 80).await;
    let tls_addr = bound(&proxy, 443).await;
    let challenges = proxy.challenges();

    // HTTP-01: any host (even one no app answers at), before routing; unknown tokens go on.
    let path = "/.well-known/acme-challenge/tok-123";
    assert_eq!(
        get_host(http_addr, "one.localhost", path).await,
        (200, "a".into())
    );
    challenges.set_http01("tok-123", "tok-123.thumbprint");
    for host in ["one.localhost", "new.example"] {
        assert_eq!(
            get_host(http_addr, host, path).await,
            (200, "tok-123.thumbprint".into())
        );
    }
    // Also on a TLS port, over HTTP/2 (the hyper path).
    let h2 = tls_connect(tls_addr, "one.localhost", &[b"h2"])
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(h2),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://one.localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "tok-123.thumbprint");
    assert_eq!(
        a.stats.hits.load(Ordering::SeqCst),
        1,
        "only the unset token reached the app"
    );
    challenges.remove_http01("tok-123");
    assert_eq!(
        get_host(http_addr, "one.localhost", path).await,
        (200, "a".into())
    );

    // TLS-ALPN-01: `acme-tls/1` alone gets the challenge certificate, and nothing without one.
    let acme = [b"acme-tls/1".as_slice()];
    assert!(tls_connect(tls_addr, "new.example", &acme).await.is_err());
    let ck = rcgen::generate_simple_self_signed(vec!["new.example".to_string()]).unwrap();
    challenges.set_tls_alpn01(
        "new.example",
        vec![ck.cert.der().to_vec()],
        ck.key_pair.serialize_der(),
    );
    let s = tls_connect(tls_addr, "new.example", &acme).await.unwrap();
    assert_eq!(peer_cert(&s).as_ref(), ck.cert.der().as_ref());
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(b"acme-tls/1".as_slice())
    );
    // Ordinary clients of that name do not see the challenge certificate.
    let s = tls_connect(tls_addr, "new.example", &[b"h2", b"acme-tls/1"])
        .await
        .unwrap();
    assert_ne!(peer_cert(&s).as_ref(), ck.cert.der().as_ref());
    challenges.remove_tls_alpn01("new.example");
    assert!(tls_connect(tls_addr, "new.example", &acme).await.is_err());
}

#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_with_tickets_and_prefer_aes_128() {
    let a = TestServer::start("a").await;
    let (proxy, _tx) = spawn_apps(vec![app("one", &a, &["one.localhost"])]);
    let addr = bound(&proxy, 443).await;
    // One client config: its session store keeps the ticket of the first connection.
    let connector = tls_client(&[b"http/1.1"]);
    let connect = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("one.localhost".to_string()).unwrap();
        connector.connect(name, tcp).await.unwrap()
    };
    let first = connect().await;
    let conn = first.get_ref().1;
    assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    assert_eq!(
        conn.negotiated_cipher_suite().unwrap().suite(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    // The ticket arrives after the handshake: a request reads it.
    assert_eq!(get_on(first, "one.localhost", "/").await, (200, "a".into()));
    let second = connect().await;
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert_eq!(
        get_on(second, "one.localhost", "/").await,
        (200, "a".into())
    );
}
