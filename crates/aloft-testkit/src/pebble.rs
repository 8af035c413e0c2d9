//! Runs pebble (Let's Encrypt's ACME test server) and pebble-challtestsrv (as its DNS server,
//! answering every A query with 127.0.0.1) on free loopback ports, with a test CA made here
//! for pebble's own HTTPS listener. Both processes are killed on drop. Used by the tests of
//! aloft-acme (the ACME client) and aloft-agent (issuance through the proxy).
//!
//! Without pebble installed the tests are skipped with a printed reason, unless CI=true, where
//! they fail (scripts/install-test-deps.sh installs it).

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub struct PebbleOptions {
    /// Where pebble's validator sends HTTP-01 requests (on 127.0.0.1).
    pub http_port: u16,
    /// Where pebble's validator opens TLS-ALPN-01 connections (on 127.0.0.1).
    pub tls_port: u16,
    /// PEBBLE_AUTHZREUSE: the percentage of valid authorizations pebble reuses in new orders.
    pub authz_reuse: u8,
}

pub struct Pebble {
    pub directory_url: String,
    /// The root of pebble's own HTTPS listener (made here): the client's extra root.
    pub listener_root_pem: String,
    management_url: String,
    dir: tempfile::TempDir,
    children: Vec<(&'static str, Child)>,
}

impl Pebble {
    /// `None` (having printed why) when pebble is not installed and CI is not set.
    pub fn start(options: PebbleOptions) -> Option<Pebble> {
        let (Some(pebble), Some(challtestsrv)) =
            (find_in_path("pebble"), find_in_path("pebble-challtestsrv"))
        else {
            let reason = "pebble and pebble-challtestsrv are not installed (Debian package \
                          `pebble`; scripts/install-test-deps.sh installs it)";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{reason}");
            }
            // Straight to stderr: libtest captures `eprintln!` of passing tests, and a skip
            // must show.
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let listener_root_pem = write_listener_certificate(dir.path());
        let (listen, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.path().join("listener.pem"),
                "privateKey": dir.path().join("listener.key"),
                "httpPort": options.http_port,
                "tlsPort": options.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = dir.path().join("pebble.json");
        fs::write(&config_path, config.to_string()).unwrap();

        let mut started = Pebble {
            directory_url: format!("https://127.0.0.1:{listen}/dir"),
            listener_root_pem,
            management_url: format!("https://127.0.0.1:{management}"),
            children: Vec::new(),
            dir,
        };
        let dns_server = started.spawn(
            "pebble-challtestsrv",
            Command::new(challtestsrv)
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]),
        );
        started.children.push(dns_server);
        started.wait_for_port(dns_management);
        let ca = started.spawn(
            "pebble",
            Command::new(pebble)
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-strict"])
                // Validate at once rather than after a random 0-15 s pause.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_AUTHZREUSE", options.authz_reuse.to_string()),
        );
        started.children.push(ca);
        started.wait_for_port(listen);
        started.wait_for_port(management);
        Some(started)
    }

    /// The root pebble issues under (random per run; served on its management port).
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let root = CertificateDer::from_pem_slice(self.listener_root_pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_der(&root).unwrap())
            .build()
            .unwrap();
        let pem = client
            .get(format!("{}/roots/0", self.management_url))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn spawn(&self, name: &'static str, command: &mut Command) -> (&'static str, Child) {
        let log = fs::File::create(self.log_path(name)).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        (name, child)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Waits until something accepts TCP connections on the port, failing with the logs if a
    /// child exits or 20 s pass.
    fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = self.children.iter_mut().find_map(|(name, child)| {
                child
                    .try_wait()
                    .unwrap()
                    .map(|status| format!("{name} exited ({status})"))
            });
            if let Some(exited) = exited {
                panic!("{exited}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on port {port} after 20 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        ["pebble-challtestsrv", "pebble"]
            .iter()
            .map(|name| {
                let text = fs::read_to_string(self.log_path(name)).unwrap_or_default();
                format!("--- {name} ---\n{text}")
            })
            .collect()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
}

/// A loopback port free for TCP and UDP (the DNS server takes both) right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A test CA and, signed by it, pebble's listener certificate for 127.0.0.1 and localhost
/// (`listener.pem`, `listener.key` in `dir`). Returns the CA's certificate in PEM.
fn write_listener_certificate(dir: &Path) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "aloft-acme test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    fs::write(dir.join("listener.pem"), cert.pem()).unwrap();
    fs::write(dir.join("listener.key"), key.serialize_pem()).unwrap();
    ca.pem()
}
