//! `ssh://` agent URLs end to end: a real sshd (Debian's openssh-server on a loopback port, a
//! test key, [`Sshd`]) in front of a real `aloft agent`, driven by the real CLI with no
//! `ALOFT_API_TOKEN` (the token comes from the server's data dir). Deploy, status, scale and
//! `logs -f` go through one SSH connection per command; every failure — unreachable host, a key
//! the server does not know, no `aloft` or no agent on the server, an unreadable token, a
//! changed host key — is a clear error within 10 s. Needs root (sshd logs users in).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aloft_testkit::sshd::{self, Sshd, HOST_ALIAS};
use aloft_testkit::KillOnDrop;

use crate::common::{self, privileged_or_skip, wait_for, AgentProc};

/// The longest a failing command may take (issue 15: "a clear error in under 10 s").
const QUICK: Duration = Duration::from_secs(10);

const RUN_SH: &str = r#"#!/bin/sh
# Prints a numbered line every 200 ms until stopped.
i=0
while :; do i=$((i+1)); echo "tick $i"; sleep 0.2; done
"#;

/// The CLI as a user on another host: the agent only through `url`, no token, a local data
/// dir and home of its own (no local agent's token or contexts to fall back on).
struct Remote {
    tmp: tempfile::TempDir,
    url: String,
    ssh_config: PathBuf,
}

impl Remote {
    fn new(url: String, ssh_config: PathBuf) -> Remote {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("app")).unwrap();
        Remote {
            tmp,
            url,
            ssh_config,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_aloft"));
        c.args(args)
            .current_dir(self.tmp.path().join("app"))
            .env("ALOFT_API_URL", &self.url)
            .env("ALOFT_SSH_CONFIG", &self.ssh_config)
            .env("ALOFT_DATA_DIR", self.tmp.path().join("local-data"))
            .env("HOME", self.tmp.path())
            .env("TMPDIR", self.tmp.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("ALOFT_API_TOKEN")
            .env_remove("ALOFT_CONTEXT")
            .env_remove("ALOFT_APP")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("aloft runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = common::combined(&out);
        assert!(out.status.success(), "aloft {args:?} failed:\n{text}");
        text
    }

    /// Runs `args`, which must fail within [`QUICK`]; returns stderr.
    fn fails_quickly(&self, args: &[&str]) -> String {
        let started = Instant::now();
        let out = self.run(args);
        let took = started.elapsed();
        let text = common::combined(&out);
        assert!(!out.status.success(), "aloft {args:?} should fail:\n{text}");
        assert!(
            took < QUICK,
            "aloft {args:?} took {took:?} to fail:\n{text}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The URL of the agent of `data_dir` behind the test sshd, with the `aloft` under test as the
/// server's binary.
fn url(data_dir: &Path) -> String {
    format!(
        "ssh://{HOST_ALIAS}{}?aloft={}",
        data_dir.display(),
        aloft_testkit::agent::aloft_bin().display()
    )
}

fn sshd_or_skip(test: &str) -> Option<Sshd> {
    privileged_or_skip(test, sshd::unavailable().map_or(Ok(()), Err)).then(Sshd::start)
}

/// The `ssh` processes of the CLI runs of a [`Remote`] (their control sockets lie in its temp
/// dir, its `TMPDIR`; ssh may retitle a master `ssh: <control path> [mux]`).
fn ssh_clients(tmp: &Path) -> Vec<u32> {
    let tmp = tmp.display().to_string();
    aloft_testkit::procs::all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("ssh") && c.contains(&tmp)
            })
        })
        .collect()
}

/// Average wall time of `n` runs of a command.
fn time(n: u32, mut run: impl FnMut()) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        run();
    }
    started.elapsed() / n
}

#[test]
fn deploy_status_scale_and_logs_through_ssh() {
    let Some(sshd) = sshd_or_skip("deploy_status_scale_and_logs_through_ssh") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &["--no-proxy"], None);
    let remote = Remote::new(url(&agent.data_dir), sshd.client_config());
    let app = remote.tmp.path().join("app");
    std::fs::write(app.join("run.sh"), RUN_SH).unwrap();
    std::fs::write(
        app.join("fly.toml"),
        "app = \"over-ssh\"\nprimary_region = \"gru\"\nkill_timeout = \"2s\"\n\n\
         [experimental]\nentrypoint = [\"sh\"]\n\n[processes]\nweb = \"run.sh\"\n",
    )
    .unwrap();

    remote.ok(&["apps", "create", "over-ssh"]);
    let deployed = remote.ok(&["deploy"]);
    assert!(deployed.contains("web"), "{deployed}");
    // The first connection recorded the server's key (accept-new).
    let known = std::fs::read_to_string(sshd.dir.path().join("known_hosts")).unwrap();
    assert!(
        known.contains(&format!("[127.0.0.1]:{}", sshd.port)),
        "{known}"
    );

    let status = remote.ok(&["status"]);
    assert!(
        status.contains("web") && status.contains("started"),
        "{status}"
    );

    remote.ok(&["scale", "count", "web=2", "--yes"]);
    let machines: Vec<serde_json::Value> =
        serde_json::from_str(&remote.ok(&["machine", "list", "--json"])).unwrap();
    assert_eq!(machines.len(), 2, "{machines:?}");

    // A context names the same agent (`-C`), no ALOFT_API_URL needed.
    remote.ok(&["context", "add", "srv", &remote.url]);
    let out = remote
        .command(&["-C", "srv", "apps", "list"])
        .env_remove("ALOFT_API_URL")
        .output()
        .unwrap();
    let listed = common::combined(&out);
    assert!(
        out.status.success() && listed.contains("over-ssh"),
        "{listed}"
    );

    // `logs` (following) streams through the tunnel: lines printed after it started arrive.
    let follow_err = remote.tmp.path().join("logs.stderr");
    let mut follow = KillOnDrop(
        remote
            .command(&["logs"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&follow_err).unwrap())
            .spawn()
            .expect("aloft logs runs"),
    );
    let follow_said = || std::fs::read_to_string(&follow_err).unwrap_or_default();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let tick = |line: &str| -> Option<u64> { line.rsplit("tick ").next()?.trim().parse().ok() };
    let first = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "the log follower ended before printing a line: {}",
                follow_said()
            );
        };
        if let Some(n) = tick(&line) {
            break n;
        }
    };
    let later = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| tick(&l).filter(|n| *n > first + 3));
    assert!(
        later.is_some(),
        "the log follower stopped before new lines came: {}",
        follow_said()
    );
    // Still following (its stdout is open: `lines` is only borrowed), over its own connection.
    assert_eq!(follow.try_wait().unwrap(), None, "{}", follow_said());
    assert!(
        !ssh_clients(remote.tmp.path()).is_empty(),
        "the follower's ssh connection is not seen"
    );
    drop(follow);

    // Round-trip cost of a command: ssh:// (login, connect-info, forward, request) vs direct.
    let direct = time(3, || {
        let out = Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(["status", "-a", "over-ssh"])
            .env("ALOFT_API_URL", &agent.url)
            .env("ALOFT_API_TOKEN", &agent.token)
            .env_remove("ALOFT_CONTEXT")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", common::combined(&out));
    });
    let over_ssh = time(3, || {
        remote.ok(&["status"]);
    });
    let _ = writeln_stderr(format_args!(
        "aloft status: direct {direct:?}, over ssh:// {over_ssh:?} ({:.1}x)",
        over_ssh.as_secs_f64() / direct.as_secs_f64()
    ));

    // Every command's connection ended with it, the SIGKILLed `logs` follower included.
    wait_for(Duration::from_secs(10), "no ssh connection left", || {
        ssh_clients(remote.tmp.path()).is_empty().then_some(())
    });
    drop(agent);
    drop(sshd);
}

fn writeln_stderr(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    writeln!(std::io::stderr(), "{args}")
}

#[test]
fn ssh_failures_are_clear_and_quick() {
    let Some(sshd) = sshd_or_skip("ssh_failures_are_clear_and_quick") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = sshd.client_config();

    // Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Remote::new(format!("ssh://root@127.0.0.1:{closed}"), config.clone())
        .fails_quickly(&["apps", "list"]);
    assert!(err.contains("cannot reach root@127.0.0.1"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");

    // Something accepts the connection but never speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let err = Remote::new(format!("ssh://root@127.0.0.1:{port}"), config.clone())
        .fails_quickly(&["apps", "list"]);
    assert!(err.contains("root@127.0.0.1"), "{err}");
    drop(silent);

    // A key the server does not know: ssh would ask for a password; it must not (no tty).
    let err = Remote::new(url(&data), sshd.unauthorized_config()).fails_quickly(&["apps", "list"]);
    assert!(
        err.contains("without a prompt") && err.contains("ssh-copy-id"),
        "{err}"
    );

    // No `aloft` at the given path on the server.
    let err = Remote::new(
        format!(
            "ssh://{HOST_ALIAS}{}?aloft=/nonexistent/aloft",
            data.display()
        ),
        config.clone(),
    )
    .fails_quickly(&["apps", "list"]);
    assert!(err.contains("`/nonexistent/aloft` was not found"), "{err}");

    // A data dir no agent ever ran in, then one whose agent is gone.
    let remote = Remote::new(url(&data), config.clone());
    let err = remote.fails_quickly(&["apps", "list"]);
    assert!(
        err.contains("no aloft agent runs on") && err.contains("aloft agent"),
        "{err}"
    );
    std::fs::write(data.join("agent.addr"), format!("127.0.0.1:{closed}\n")).unwrap();
    let err = remote.fails_quickly(&["apps", "list"]);
    assert!(
        err.contains(&format!("nothing answers at 127.0.0.1:{closed}")),
        "{err}"
    );

    // Something answers, but the token cannot be read: say how to pass it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::fs::write(data.join("agent.addr"), format!("{addr}\n")).unwrap();
    let err = remote.fails_quickly(&["apps", "list"]);
    assert!(err.contains("ALOFT_API_TOKEN"), "{err}");
    drop(listener);

    // The server's key is not the one known_hosts records for it: refused.
    sshd.record_wrong_host_key();
    let err = remote.fails_quickly(&["apps", "list"]);
    assert!(err.contains("host key"), "{err}");
    let known_hosts = sshd.dir.path().join("known_hosts");
    assert!(err.contains(&known_hosts.display().to_string()), "{err}");
}
