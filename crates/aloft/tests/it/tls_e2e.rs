//! The API over TLS end to end (`aloft agent --tls`): the real CLI pins a self-signed agent's
//! certificate on first use and then works, refuses a changed certificate (a new agent on the
//! same address) with the warning and leaves the pin file alone, requires a context's
//! fingerprint exactly, trusts the local data dir's own certificate; a plain-HTTP API off
//! loopback needs `--insecure-listen`. Each CLI run has its own HOME/XDG dirs in a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{wait_for, PATIENCE};

/// An `aloft agent --no-proxy` of its own (at a chosen address, which the testkit's runner does
/// not offer), killed on drop.
struct Agent {
    child: Child,
    url: String,
    token: String,
}

impl Agent {
    fn start(data_dir: &Path, listen: &str, args: &[&str], log: Option<&Path>) -> Agent {
        let _ = std::fs::remove_file(data_dir.join("agent.addr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_aloft"));
        command
            .args(["agent", "--no-proxy", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("ALOFT_LOG", "warn")
            .stdout(Stdio::null());
        match log {
            Some(path) => command.stderr(std::fs::File::create(path).unwrap()),
            None => command.stderr(Stdio::inherit()),
        };
        let mut agent = Agent {
            child: command.spawn().expect("aloft agent starts"),
            url: String::new(),
            token: String::new(),
        };
        agent.url = wait_for(PATIENCE, "the agent to write agent.addr", || {
            std::fs::read_to_string(data_dir.join("agent.addr"))
                .ok()
                .filter(|s| s.ends_with('\n'))
        })
        .trim()
        .to_string();
        agent.token = std::fs::read_to_string(data_dir.join("token"))
            .unwrap()
            .trim()
            .to_string();
        agent
    }

    /// `host:port` of the API.
    fn addr(&self) -> &str {
        self.url.rsplit("://").next().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI with HOME, XDG_CONFIG_HOME and XDG_STATE_HOME under `home`, and `env`.
fn aloft(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aloft"));
    command
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("ALOFT_LOG", "warn");
    for var in [
        "ALOFT_API_URL",
        "ALOFT_API_TOKEN",
        "ALOFT_CONTEXT",
        "ALOFT_DATA_DIR",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("run aloft")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pins_file(home: &Path) -> PathBuf {
    home.join("config/aloft/known_agents")
}

fn fingerprint_of(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("agent.fingerprint"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_pinned_agent_works_and_a_changed_certificate_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let (data1, data2) = (tmp.path().join("agent1"), tmp.path().join("agent2"));
    let first = Agent::start(&data1, "127.0.0.1:0", &["--tls"], None);
    assert!(first.url.starts_with("https://127.0.0.1:"), "{}", first.url);
    let fp1 = fingerprint_of(&data1);
    let env = [
        ("ALOFT_API_URL", first.url.as_str()),
        ("ALOFT_API_TOKEN", first.token.as_str()),
    ];

    // First use: pinned, and the user told once.
    let created = aloft(&home, &env, &["apps", "create", "pinned-app"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stderr(&created).contains("on first use") && stderr(&created).contains(&fp1),
        "the pin is announced: {}",
        stderr(&created)
    );
    let pins = std::fs::read_to_string(pins_file(&home)).unwrap();
    assert_eq!(pins, format!("{} {fp1}\n", first.addr()));
    let listed = aloft(&home, &env, &["apps", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("pinned-app"));
    assert!(
        !stderr(&listed).contains("on first use"),
        "told once: {}",
        stderr(&listed)
    );

    // Another agent (another self-signed certificate) at the same address: refused.
    let addr = first.addr().to_string();
    drop(first);
    let second = Agent::start(&data2, &addr, &["--tls"], None);
    let fp2 = fingerprint_of(&data2);
    assert_ne!(fp1, fp2);
    let env = [
        ("ALOFT_API_URL", second.url.as_str()),
        ("ALOFT_API_TOKEN", second.token.as_str()),
    ];
    let started = Instant::now();
    let refused = aloft(&home, &env, &["apps", "create", "must-not-exist"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!refused.status.success());
    let warning = stderr(&refused);
    for part in ["HAS CHANGED", &addr, &fp1, &fp2, "known_agents"] {
        assert!(warning.contains(part), "`{part}` missing from: {warning}");
    }
    assert_eq!(
        std::fs::read_to_string(pins_file(&home)).unwrap(),
        pins,
        "the pin file is left alone"
    );

    // A context's fingerprint wins over the pin file: the right one works, a wrong one is
    // refused.
    let wrong = format!("sha256:{}", "0".repeat(64));
    for (name, fingerprint) in [("right", fp2.as_str()), ("wrong", wrong.as_str())] {
        let added = aloft(
            &home,
            &[],
            &[
                "context",
                "add",
                name,
                &second.url,
                "--fingerprint",
                fingerprint,
            ],
        );
        assert!(added.status.success(), "{}", stderr(&added));
    }
    let token = [("ALOFT_API_TOKEN", second.token.as_str())];
    let right = aloft(&home, &token, &["-C", "right", "apps", "list"]);
    assert!(right.status.success(), "{}", stderr(&right));
    let wrong = aloft(&home, &token, &["-C", "wrong", "apps", "create", "nope"]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("other than the required one") && stderr(&wrong).contains(&fp2),
        "{}",
        stderr(&wrong)
    );
    let apps = aloft(&home, &token, &["-C", "right", "apps", "list"]);
    assert!(!String::from_utf8_lossy(&apps.stdout).contains("must-not-exist"));
    assert!(!String::from_utf8_lossy(&apps.stdout).contains("nope"));

    // The local agent of a data dir: its own certificate, no pinning.
    let fresh_home = tmp.path().join("home2");
    let data_dir = data2.display().to_string();
    let local = aloft(
        &fresh_home,
        &[("ALOFT_DATA_DIR", &data_dir)],
        &["apps", "list"],
    );
    assert!(local.status.success(), "{}", stderr(&local));
    assert!(
        !stderr(&local).contains("on first use"),
        "{}",
        stderr(&local)
    );
    assert!(!pins_file(&fresh_home).exists());
}

#[test]
fn a_certificate_from_files_is_served_and_tls_errors_are_clear_and_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let data = tmp.path().join("agent");
    let (c, k) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let agent = Agent::start(
        &data,
        "127.0.0.1:0",
        &["--tls-cert", &c, "--tls-key", &k],
        None,
    );
    let expected = aloft_client::pins::fingerprint_of(cert.der());
    assert_eq!(fingerprint_of(&data), expected);
    let env = [
        ("ALOFT_API_URL", agent.url.as_str()),
        ("ALOFT_API_TOKEN", agent.token.as_str()),
    ];
    // A client that never finishes its handshake holds no one else up.
    let _stalled = std::net::TcpStream::connect(agent.addr()).unwrap();
    let listed = aloft(&home, &env, &["apps", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stderr(&listed).contains(&expected), "{}", stderr(&listed));

    // https:// to a plain-HTTP agent, and to nothing at all.
    let plain = Agent::start(&tmp.path().join("plain"), "127.0.0.1:0", &[], None);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    for (url, says) in [
        (format!("https://{}", plain.addr()), "TLS"),
        (closed_url, "cannot reach the aloft agent"),
    ] {
        let started = Instant::now();
        let out = aloft(&home, &[("ALOFT_API_URL", &url)], &["apps", "list"]);
        assert!(started.elapsed() < Duration::from_secs(10), "{url}");
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{url}: {}", stderr(&out));
    }
}

#[test]
fn plain_http_off_loopback_needs_insecure_listen() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("agent");
    let refused = Command::new(env!("CARGO_BIN_EXE_aloft"))
        .args(["agent", "--no-proxy", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env("ALOFT_LOG", "warn")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains("plain HTTP on 0.0.0.0:0") && text.contains("--insecure-listen"),
        "{text}"
    );
    assert!(!data.join("agent.addr").exists());

    let log = tmp.path().join("agent.log");
    let _agent = Agent::start(&data, "0.0.0.0:0", &["--insecure-listen"], Some(&log));
    wait_for(PATIENCE, "the warning", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("warning:") && t.contains("clear text"))
    });
}
