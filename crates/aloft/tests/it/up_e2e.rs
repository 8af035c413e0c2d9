//! `aloft up` end to end, the README's first command: the real binary runs
//! `up -c <copy of examples/process-groups>/fly.toml` with its own HOME and state dir (so it
//! starts an embedded agent there) and `ALOFT_API_URL` on a port where nothing listens (so no
//! agent of this machine is used). The test reads the printed URL, GETs the web page through
//! the proxy, waits for the log lines of web, worker and cron, sends SIGINT and checks that the
//! machines were stopped cleanly, `up` exited 0 and no process is left. Then it runs `up` again
//! on the same state: the stopped machines must run again and old log lines stay unprinted.
//!
//! The example is an image-built app (its machines are containers), so this runs as root with
//! buildah, runc and tini (skipped otherwise), with its own image store, bridge and subnet.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloft_testkit::wait_for_explained as wait_for;

/// A running `aloft up`: its own process group, output collected line by line. On drop (a
/// failed assertion included) the whole group is SIGKILLed; the machines die with it
/// (PR_SET_PDEATHSIG), whatever else runs under the temp dir is SIGKILLed too, and the machines'
/// cgroups are removed.
struct Up {
    child: Child,
    tmp: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(tmp: &Path, dead_url: &str) -> Up {
        let (bridge, subnet) = aloft_testkit::containers::network_for(&tmp.join("state/aloft"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_aloft"))
            .args(["up", "--bridge", &bridge, "--subnet", &subnet, "-c"])
            .arg(tmp.join("app/fly.toml"))
            .current_dir(tmp)
            .env("CONTAINERS_STORAGE_CONF", tmp.join("storage.conf"))
            .env("HOME", tmp.join("home"))
            .env("XDG_STATE_HOME", tmp.join("state"))
            .env("ALOFT_API_URL", dead_url)
            .env("ALOFT_LOG", "warn")
            .env_remove("ALOFT_API_TOKEN")
            .env_remove("ALOFT_DATA_DIR")
            .env_remove("ALOFT_APP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("aloft up starts");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Up {
            child,
            tmp: tmp.to_path_buf(),
            stdout,
            stderr,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// The first stdout line for which `f` is true.
    fn wait_line(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        wait_for(
            Duration::from_secs(30),
            what,
            || self.output(),
            || self.lines().into_iter().find(|l| f(l)),
        )
    }

    /// The URL `up` printed for the service's port 80.
    fn web_url(&self) -> String {
        let line = self.wait_line("the URL of service port 80", |l| {
            l.contains("(service port 80)")
        });
        let url = line.split_whitespace().next().unwrap().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "ports below 1024 are served on a free local port of 127.0.0.1: {line}\n{}",
            self.output()
        );
        url
    }

    /// Sends SIGINT (Ctrl-C) and waits for `up` to exit.
    fn interrupt(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let t0 = Instant::now();
        let (stdout, stderr) = (self.stdout.clone(), self.stderr.clone());
        let status = wait_for(
            Duration::from_secs(15),
            "aloft up to exit after SIGINT",
            || format!("{:?}\n{:?}", stdout.lock().unwrap(), stderr.lock().unwrap()),
            || self.child.try_wait().unwrap(),
        );
        drop((stdout, stderr));
        eprintln!("aloft up exited {:?} after SIGINT", t0.elapsed());
        // The pipes close when the process exits; let the readers drain them.
        wait_for(
            Duration::from_secs(5),
            "the output pipes to close",
            || self.output(),
            || {
                (Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1)
                    .then_some(())
            },
        );
        status
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // What a SIGKILLed `up` cannot stop: background children of the machines' scripts.
        for p in processes_under(&self.tmp) {
            let pid = p.split(':').next().unwrap();
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        // And the machines' cgroups, which the embedded agent's data dir records.
        aloft_testkit::reap_machines(&self.tmp.join("state/aloft"), Some(self.child.id()));
    }
}

/// Reads `r` line by line into a shared vector on a thread of its own.
fn collect(r: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            out.lock().unwrap().push(line);
        }
    });
    lines
}

/// `GET /` over plain HTTP/1.1; the status line and the body.
fn http_get(url: &str) -> (String, String) {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .unwrap_or_else(|e| panic!("read {url}: {e}"));
    let status = resp.lines().next().unwrap_or_default().to_string();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Processes whose working directory or command line is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cwd_under = std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if cwd_under || cmdline.contains(dir.to_str().unwrap()) {
            out.push(format!("{}: {}", e.file_name().to_string_lossy(), cmdline));
        }
    }
    out
}

/// A log line of `group` (prefix `group[machine] region`) that contains `text` and is not one
/// of `old` (the lines of an earlier run).
fn log_line(lines: &[String], old: &[String], group: &str, text: &str) -> Option<String> {
    lines
        .iter()
        .find(|l| l.contains(&format!(" {group}[")) && l.contains(text) && !old.contains(l))
        .cloned()
}

/// A loopback address where nothing listens (bound, then released).
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/process-groups")
}

/// One `aloft up` session: URL, page, logs of every group, SIGINT. Returns its stdout.
/// `earlier` is the stdout of the previous session: its log lines must not be printed again.
fn session(tmp: &Path, dead: &str, run: u32, earlier: &[String]) -> Vec<String> {
    let mut up = Up::start(tmp, dead);
    let url = up.web_url();
    up.wait_line("the log banner", |l| l.starts_with("Following logs"));

    let (status, body) = http_get(&url);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "run {run}: GET {url}: {status}\n{body}\n{}",
        up.output()
    );
    assert!(
        body.contains("hello from aloft") && body.contains("\"group\": \"web\""),
        "run {run}: GET {url}: the web group's page, got {body}"
    );

    // Each group's start-up lines, and the request just made (so logs are followed live).
    for (group, text) in [
        ("web", "web: listening on"),
        ("worker", "worker: watching"),
        ("cron", "cron: started"),
        ("web", "url:/"),
    ] {
        let line = wait_for(
            Duration::from_secs(15),
            &format!("run {run}: a log line of {group} with {text:?}"),
            || up.output(),
            || log_line(&up.lines(), earlier, group, text),
        );
        assert!(
            !line.contains('\x1b'),
            "no colours when stdout is not a terminal: {line:?}"
        );
    }

    let status = up.interrupt();
    let out = up.output();
    assert_eq!(
        status.code(),
        Some(0),
        "run {run}: exit status {status}\n{out}"
    );
    let lines = up.lines();
    assert!(
        lines
            .iter()
            .any(|l| l == "Stopped 3 machine(s) of hello-groups"),
        "run {run}: SIGINT stops the app's 3 machines\n{out}"
    );
    // The TERM traps ran: a clean stop, not the SIGKILL of the machines dying with `up`.
    for group in ["worker", "cron"] {
        assert!(
            log_line(&lines, earlier, group, &format!("{group}: stopping")).is_some(),
            "run {run}: {group} was stopped with its kill_signal\n{out}"
        );
    }
    let left = wait_for(
        Duration::from_secs(5),
        "no process left under the temp dir",
        || format!("{:?}", processes_under(tmp)),
        || {
            let p = processes_under(tmp);
            p.is_empty().then_some(p)
        },
    );
    assert!(left.is_empty());
    lines
}

#[test]
fn up_runs_the_process_groups_example_until_ctrl_c() {
    // The example is an image-built app: its machines are containers.
    if !crate::common::privileged_or_skip(
        "up_runs_the_process_groups_example_until_ctrl_c",
        crate::common::can_run_containers(),
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(tmp.path().join("home")).unwrap();
    for e in std::fs::read_dir(example_dir()).unwrap().flatten() {
        if e.file_name() != "busybox" {
            std::fs::copy(e.path(), app.join(e.file_name())).unwrap();
        }
    }
    // What scripts/up-example.sh does: the static busybox the image is made of.
    std::fs::copy(crate::common::BUSYBOX, app.join("busybox")).unwrap();
    crate::common::private_image_store(tmp.path());
    let dead = dead_url();

    let first = session(tmp.path(), &dead, 1, &[]);
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("Started an embedded agent")),
        "no agent answers, so up embeds one: {first:?}"
    );
    assert!(
        tmp.path().join("state/aloft/state.db").exists(),
        "the embedded agent keeps its state under $XDG_STATE_HOME/aloft"
    );

    // Again, on the state the first run left: the machines it stopped run again.
    let second = session(tmp.path(), &dead, 2, &first);
    assert!(
        !second.iter().any(|l| l == "Created app hello-groups"),
        "the app exists already: {second:?}"
    );
    // Log lines start with their timestamp; none of the first run's is printed again.
    let replayed: Vec<&String> = second
        .iter()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && first.contains(l))
        .collect();
    assert!(
        replayed.is_empty(),
        "the second run does not replay the first run's logs: {replayed:?}"
    );
}
