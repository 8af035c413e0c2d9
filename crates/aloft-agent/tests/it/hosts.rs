//! Many apps on one agent's 80/443: two apps with `[http_service]` served on the same ports by
//! `Host` (`<app>.localhost` and custom hostnames from the certificates API) and by TLS SNI,
//! the 404 of an unknown host, and the certificates API's answers to bad input.
//! Real agent in-process, python3 HTTP servers as machines, real sockets on 127.0.0.1.

use std::sync::Arc;

use aloft_agent::{Agent, AgentHandle};
use aloft_testkit::ReapOnDrop;
use reqwest::{Client, Method, StatusCode};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

/// Answers `<app>` on every path.
const SERVER: &str = r#"
import http.server, os
app = os.environ["FLY_APP_NAME"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = app.encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

struct Harness {
    agent: AgentHandle,
    http: Client,
    image: tempfile::TempDir,
    _reaper: ReapOnDrop,
    _data: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let data = tempfile::tempdir().unwrap();
        let mut config = crate::common::agent_config(data.path());
        let proxy = config.proxy.as_mut().unwrap();
        proxy.bind_ip = "127.0.0.1".parse().unwrap();
        proxy.port_map = [(80, 0), (443, 0)].into_iter().collect();
        let agent = Agent::start(config).await.expect("agent starts");
        let image = tempfile::tempdir().unwrap();
        std::fs::write(image.path().join("server.py"), SERVER).unwrap();
        Harness {
            agent,
            http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            image,
            _reaper: ReapOnDrop::new(data.path()),
            _data: data,
        }
    }

    /// `(status, body)` of an API call.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.agent.url()))
            .bearer_auth(&self.agent.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// An app with one started machine serving `[http_service]` (80 http, 443 tls+http).
    async fn web_app(&self, app: &str) {
        let (s, b) = self
            .call(
                Method::POST,
                "/v1/apps",
                Some(json!({"app_name": app, "org_slug": "personal"})),
            )
            .await;
        assert!(s.is_success(), "{b}");
        let config = json!({
            "image": self.image.path(),
            "init": {"exec": ["python3", "server.py"]},
            "services": [{
                "protocol": "tcp", "internal_port": 8080,
                "ports": [{"port": 80, "handlers": ["http"]}, {"port": 443, "handlers": ["tls", "http"]}],
            }],
        });
        let (s, m) = self
            .call(
                Method::POST,
                &format!("/v1/apps/{app}/machines"),
                Some(json!({"config": config})),
            )
            .await;
        assert!(s.is_success(), "{m}");
        let id = m["id"].as_str().unwrap();
        let (s, b) = self
            .call(
                Method::GET,
                &format!("/v1/apps/{app}/machines/{id}/wait?state=started"),
                None,
            )
            .await;
        assert!(s.is_success(), "{b}");
    }

    /// Where the proxy serves external `port`.
    async fn proxy_addr(&self, port: u16) -> String {
        aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, "proxy port bound", || async {
            let (_, ports) = self.call(Method::GET, "/v1/proxy", None).await;
            ports.as_array()?.iter().find(|p| p["port"] == port)?["listen"]
                .as_str()
                .map(str::to_string)
        })
        .await
    }

    /// `(status, body)` of `GET /` through the proxy with `Host: host`.
    async fn get(&self, addr: &str, host: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("http://{addr}/"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_http_apps_share_port_80_by_host_and_custom_hostnames_follow_the_certificates_api() {
    let h = Harness::start().await;
    h.web_app("alpha").await;
    h.web_app("beta").await;
    let addr = h.proxy_addr(80).await;
    aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, "both apps served", || async {
        let a = h.get(&addr, "alpha.localhost").await;
        let b = h.get(&addr, "beta.localhost:80").await;
        (a == (200, "alpha".into()) && b == (200, "beta".into())).then_some(())
    })
    .await;
    let (status, body) = h.get(&addr, "gamma.localhost").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("alpha.localhost, beta.localhost"),
        "the 404 names the hostnames served: {body}"
    );
    // Both apps listed on port 80 by /v1/proxy.
    let (_, ports) = h.call(Method::GET, "/v1/proxy", None).await;
    let apps: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["port"] == 80)
        .map(|p| p["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["alpha", "beta"]);

    // A custom hostname of beta (self-signed), routed at once.
    let (s, cert) = h
        .call(
            Method::POST,
            "/v1/apps/beta/certificates",
            Some(json!({"hostname": "WWW.Beta.Example."})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    assert_eq!(cert["hostname"], "www.beta.example");
    assert_eq!(cert["source"], "self-signed");
    assert_eq!(cert["status"], "ready");
    assert!(cert["not_after"].is_string(), "{cert}");
    assert_eq!(h.get(&addr, "www.beta.example").await, (200, "beta".into()));

    // PEM files for a second hostname, served by SNI on 443 from the next handshake.
    let ck = rcgen::generate_simple_self_signed(vec!["shop.beta.example".to_string()]).unwrap();
    let (s, b) = h
        .call(
            Method::POST,
            "/v1/apps/beta/certificates",
            Some(json!({"hostname": "shop.beta.example", "chain_pem": ck.cert.pem(), "key_pem": ck.key_pair.serialize_pem()})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["source"], "files");
    let tls_addr: std::net::SocketAddr = h.proxy_addr(443).await.parse().unwrap();
    let served = peer_cert(tls_addr, "shop.beta.example").await;
    assert_eq!(served.as_ref(), ck.cert.der().as_ref());
    // HTTPS requests for both apps on the one 443 listener (SNI and Host alike).
    for (host, app) in [
        ("alpha.localhost", "alpha"),
        ("beta.localhost", "beta"),
        ("shop.beta.example", "beta"),
    ] {
        let client = Client::builder()
            .danger_accept_invalid_certs(true)
            .resolve(host, tls_addr)
            .build()
            .unwrap();
        let resp = client
            .get(format!("https://{host}:{}/", tls_addr.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        assert_eq!(resp.text().await.unwrap(), app, "{host}");
    }
    let alpha_cert = peer_cert(tls_addr, "alpha.localhost").await;
    assert!(
        alpha_cert.windows(15).any(|w| w == b"alpha.localhost"),
        "alpha gets a self-signed certificate of its own name"
    );

    // The same hostname for alpha: 409 naming beta; nothing changes.
    let (s, b) = h
        .call(
            Method::POST,
            "/v1/apps/alpha/certificates",
            Some(json!({"hostname": "www.beta.example"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["status"], "hostname_taken");
    assert!(b["error"].as_str().unwrap().contains("\"beta\""), "{b}");
    assert_eq!(h.get(&addr, "www.beta.example").await, (200, "beta".into()));

    // List, show, remove.
    let (_, list) = h
        .call(Method::GET, "/v1/apps/beta/certificates", None)
        .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop.beta.example", "www.beta.example"]);
    let (s, _) = h
        .call(
            Method::GET,
            "/v1/apps/alpha/certificates/www.beta.example",
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another app's hostname is not found"
    );
    let (s, _) = h
        .call(
            Method::DELETE,
            "/v1/apps/beta/certificates/www.beta.example",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (status, body) = h.get(&addr, "www.beta.example").await;
    assert_eq!(
        status, 404,
        "removed hostnames are no longer served: {body}"
    );

    for app in ["alpha", "beta"] {
        h.call(Method::DELETE, &format!("/v1/apps/{app}?force=true"), None)
            .await;
    }
    h.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificates_api_refuses_bad_input_with_clear_errors() {
    let h = Harness::start().await;
    h.call(
        Method::POST,
        "/v1/apps",
        Some(json!({"app_name": "web", "org_slug": "personal"})),
    )
    .await;
    let add = |body: Value| h.call(Method::POST, "/v1/apps/web/certificates", Some(body));
    for (hostname, says) in [
        ("10.0.0.1", "IP address"),
        ("[::1]", "IP address"),
        ("bad..example", "empty label"),
        ("-x.example", "may hold only"),
        ("under score!.example", "may hold only"),
        ("single", "single label"),
        ("", "empty"),
    ] {
        let (s, b) = add(json!({"hostname": hostname})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{hostname}: {b}");
        let msg = b["error"].as_str().unwrap();
        assert!(msg.contains(says), "{hostname}: {msg}");
    }
    let long = format!("{}.example", "a".repeat(64));
    let (s, _) = add(json!({"hostname": long})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // PEMs: one without the other, garbage, a key that is not the certificate's.
    let a = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).unwrap();
    for (body, says) in [
        (
            json!({"hostname": "a.example", "chain_pem": a.cert.pem()}),
            "both",
        ),
        (
            json!({"hostname": "a.example", "chain_pem": "junk", "key_pem": "junk"}),
            "certificate",
        ),
        (
            json!({"hostname": "a.example", "chain_pem": a.cert.pem(), "key_pem": b.key_pair.serialize_pem()}),
            "does not fit",
        ),
    ] {
        let (s, r) = add(body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
        assert!(r["error"].as_str().unwrap().contains(says), "{r}");
    }
    // Not JSON, wrong types: 400, never 500.
    let resp = h
        .http
        .post(format!("{}/v1/apps/web/certificates", h.agent.url()))
        .bearer_auth(&h.agent.token)
        .header("content-type", "application/json")
        .body("{\"hostname\": 7}")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    // Unknown app and unknown hostname: 404.
    let (s, b) = h
        .call(
            Method::POST,
            "/v1/apps/nope/certificates",
            Some(json!({"hostname": "a.example"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert!(b["error"].as_str().unwrap().contains("nope"), "{b}");
    let (s, _) = h
        .call(Method::GET, "/v1/apps/nope/certificates", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = h
        .call(Method::DELETE, "/v1/apps/web/certificates/a.example", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    // Nothing was stored by the refused requests.
    let (_, list) = h.call(Method::GET, "/v1/apps/web/certificates", None).await;
    assert_eq!(list, json!([]));
    h.agent.shutdown().await;
}

/// The certificate the proxy presents for `sni`.
async fn peer_cert(addr: std::net::SocketAddr, sni: &str) -> CertificateDer<'static> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
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
