//! ACME in the agent: `POST /v1/apps/{app}/certificates {"acme": true}` gets a certificate from
//! a real CA (Let's Encrypt's `pebble`, validating against the agent's proxy on loopback
//! ports), the proxy serves it by SNI, and it is renewed when due; an unreachable CA leaves a
//! status that says why, retried with a backoff, while the agent keeps serving.
//! Real agent in-process, a python3 HTTP server as the app's machine.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aloft_agent::settings::ChallengeKind;
use aloft_agent::{AcmeSettings, Agent, AgentHandle};
use aloft_testkit::ReapOnDrop;
use reqwest::{Client, Method, StatusCode};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};

use aloft_testkit::pebble::{free_port, Pebble, PebbleOptions};

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

const APP: &str = "shop";
const HOST: &str = "www.shop.test";

struct Harness {
    agent: AgentHandle,
    http: Client,
    image: tempfile::TempDir,
    /// The local port of the proxy's 443.
    tls_port: u16,
    _reaper: ReapOnDrop,
    _data: tempfile::TempDir,
}

impl Harness {
    /// An agent whose proxy serves 80 and 443 on the given local ports, with `acme` settings.
    async fn start(acme: AcmeSettings, http_port: u16, tls_port: u16) -> Harness {
        let data = tempfile::tempdir().unwrap();
        let mut config = crate::common::agent_config(data.path());
        let proxy = config.proxy.as_mut().unwrap();
        proxy.bind_ip = "127.0.0.1".parse().unwrap();
        proxy.port_map = [(80, http_port), (443, tls_port)].into_iter().collect();
        config.acme = acme;
        let agent = Agent::start(config).await.expect("agent starts");
        let image = tempfile::tempdir().unwrap();
        std::fs::write(image.path().join("server.py"), SERVER).unwrap();
        Harness {
            agent,
            http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            image,
            tls_port,
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

    async fn create_app(&self) {
        let (s, b) = self
            .call(
                Method::POST,
                "/v1/apps",
                Some(json!({"app_name": APP, "org_slug": "personal"})),
            )
            .await;
        assert!(s.is_success(), "{b}");
    }

    /// The app with one started machine serving `[http_service]` (80 http, 443 tls+http),
    /// once the proxy listens on both ports.
    async fn web_app(&self) {
        self.create_app().await;
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
                &format!("/v1/apps/{APP}/machines"),
                Some(json!({"config": config})),
            )
            .await;
        assert!(s.is_success(), "{m}");
        let id = m["id"].as_str().unwrap();
        let (s, b) = self
            .call(
                Method::GET,
                &format!("/v1/apps/{APP}/machines/{id}/wait?state=started"),
                None,
            )
            .await;
        assert!(s.is_success(), "{b}");
        aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, "proxy on 80 and 443", || async {
            let (_, ports) = self.call(Method::GET, "/v1/proxy", None).await;
            let bound = |port: u16| {
                ports.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|p| p["port"] == port && p["listen"].is_string())
                })
            };
            (bound(80) && bound(443)).then_some(())
        })
        .await;
    }

    /// `POST …/certificates {"hostname": HOST, "acme": true}`.
    async fn add_acme_hostname(&self) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/v1/apps/{APP}/certificates"),
            Some(json!({"hostname": HOST, "acme": true})),
        )
        .await
    }

    async fn certificate(&self) -> Value {
        let (s, cert) = self
            .call(
                Method::GET,
                &format!("/v1/apps/{APP}/certificates/{HOST}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{cert}");
        cert
    }

    /// Waits until the certificate's status is `ready`; fails at once on a failure status.
    async fn wait_ready(&self, pebble: &Pebble) -> Value {
        aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, "certificate issued", || async {
            let cert = self.certificate().await;
            let status = cert["status"].as_str().unwrap().to_string();
            assert!(
                !status.contains("failed"),
                "issuance failed: {status}\n{}",
                pebble.logs()
            );
            (status == "ready").then_some(cert)
        })
        .await
    }

    /// `GET https://HOST/` on the proxy's 443, trusting only `root`: the chain must verify for
    /// HOST. The body and the leaf presented.
    async fn get_https(&self, root: &CertificateDer<'_>) -> (String, Vec<u8>) {
        let client = Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_der(root).unwrap())
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.tls_port)))
            .tls_info(true)
            .build()
            .unwrap();
        let resp = client
            .get(format!("https://{HOST}:{}/", self.tls_port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https://{HOST}/ with pebble's root: {e:?}"));
        let leaf = resp
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .expect("the peer certificate")
            .to_vec();
        assert_eq!(resp.status(), 200);
        (resp.text().await.unwrap(), leaf)
    }
}

/// Pebble validating against the proxy's ports, and an agent using it.
async fn with_pebble(kind: ChallengeKind) -> Option<(Harness, Pebble, tempfile::TempDir)> {
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(PebbleOptions {
        http_port,
        tls_port,
        // Every order validates anew (a renewal answers a challenge again).
        authz_reuse: 0,
    })?;
    let roots = tempfile::tempdir().unwrap();
    let roots_file = roots.path().join("pebble-roots.pem");
    std::fs::write(&roots_file, &pebble.listener_root_pem).unwrap();
    let acme = AcmeSettings {
        directory_url: pebble.directory_url.clone(),
        contact: vec!["ops@shop.test".to_string()],
        ca_roots: Some(roots_file),
        challenge: kind,
    };
    let h = Harness::start(acme, http_port, tls_port).await;
    Some((h, pebble, roots))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_hostname_is_issued_over_http01_served_by_sni_and_renewed_when_due() {
    let Some((h, pebble, _roots)) = with_pebble(ChallengeKind::Http01).await else {
        return;
    };
    h.web_app().await;
    let (s, cert) = h.add_acme_hostname().await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    assert_eq!(cert["source"], "acme");
    assert_eq!(cert["status"], "awaiting issuance");

    let issued = h.wait_ready(&pebble).await;
    assert!(issued["not_after"].is_string(), "{issued}");
    let root = pebble.issuing_root().await;
    let (body, first_leaf) = h.get_https(&root).await;
    assert_eq!(body, APP, "the app answers at its ACME hostname");
    // The account was kept with the agent's state.
    let accounts: Vec<_> = std::fs::read_dir(h.agent.data_dir.join("acme"))
        .unwrap()
        .collect();
    assert_eq!(accounts.len(), 1, "one account file: {accounts:?}");

    // Due (an hour before it expires): a new certificate replaces it, served at once.
    let not_after = time::OffsetDateTime::parse(
        issued["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let due = SystemTime::from(not_after) - Duration::from_secs(3600);
    h.agent.acme.as_ref().unwrap().check_as_of(due);
    let renewed = aloft_testkit::wait_for_async(
        aloft_testkit::PATIENCE,
        "renewed certificate served",
        || async {
            let (_, leaf) = h.get_https(&root).await;
            (leaf != first_leaf).then_some(leaf)
        },
    )
    .await;
    assert_ne!(renewed, first_leaf);
    let after = h.wait_ready(&pebble).await;
    assert_eq!(after["source"], "acme");
    h.agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_hostname_is_issued_over_tls_alpn01() {
    let Some((h, pebble, _roots)) = with_pebble(ChallengeKind::TlsAlpn01).await else {
        return;
    };
    h.web_app().await;
    let (s, cert) = h.add_acme_hostname().await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");
    h.wait_ready(&pebble).await;
    let (body, _) = h.get_https(&pebble.issuing_root().await).await;
    assert_eq!(body, APP);
    h.agent.shutdown().await;
}

/// A TCP listener that counts connections and closes each at once: a CA that cannot be read.
struct DeadCa {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl DeadCa {
    fn start() -> DeadCa {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/dir", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        DeadCa { url, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_leaves_a_status_saying_why_and_is_retried_with_backoff() {
    let ca = DeadCa::start();
    let acme = AcmeSettings {
        directory_url: ca.url.clone(),
        ..AcmeSettings::default()
    };
    let h = Harness::start(acme, 0, 0).await;
    h.create_app().await;
    let (s, cert) = h.add_acme_hostname().await;
    assert_eq!(s, StatusCode::CREATED, "{cert}");

    let status =
        aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, "a failure status", || async {
            let cert = h.certificate().await;
            let status = cert["status"].as_str().unwrap().to_string();
            (status != "awaiting issuance").then_some(status)
        })
        .await;
    assert!(status.starts_with("failed: "), "{status}");
    assert!(
        status.contains(&format!("could not read the ACME directory at {}", ca.url)),
        "names the CA: {status}"
    );
    assert!(
        status.contains("check the URL"),
        "says what to do: {status}"
    );
    assert!(status.contains("next attempt at "), "says when: {status}");
    assert!(ca.connections() >= 1);

    // Backed off: another look does not contact the CA again…
    let tried = ca.connections();
    h.agent
        .acme
        .as_ref()
        .unwrap()
        .check_as_of(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ca.connections(), tried, "no retry before the backoff ends");
    // …but adding the hostname again does, at once.
    let (s, again) = h.add_acme_hostname().await;
    assert_eq!(s, StatusCode::OK, "{again}");
    aloft_testkit::wait_for_async(aloft_testkit::PATIENCE, "a new attempt", || async {
        (ca.connections() > tried).then_some(())
    })
    .await;

    // The agent keeps serving: other hostnames get their (self-signed) certificates.
    let (s, b) = h
        .call(
            Method::POST,
            &format!("/v1/apps/{APP}/certificates"),
            Some(json!({"hostname": "other.shop.test"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "ready");
    h.agent.shutdown().await;
}
