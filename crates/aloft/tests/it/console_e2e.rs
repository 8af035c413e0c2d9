//! `aloft ssh console` end to end: the real `aloft` binary on a pseudo-terminal the test holds
//! (as a user's terminal emulator would: `setsid -c` makes it the CLI's controlling terminal,
//! so resizing it sends SIGWINCH), a real `aloft agent`, a process-runtime machine; `aloft
//! console`'s one-off machines; and the session's WebSocket over each transport of the client
//! (plain HTTP, TLS, an `ssh://` tunnel).
//! (Container machines: `containers_e2e::a_console_runs_in_the_container`.)

use std::io::Read;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_api::console::{ConsoleParams, MAX_SESSIONS_PER_MACHINE};
use reqwest::Method;
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use serde_json::json;

use crate::common::{alive, setup, wait_for, AgentProc};

/// The test's side of a terminal the CLI runs on.
pub struct Terminal {
    master: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
    pub child: Child,
}

impl Terminal {
    /// Runs `aloft ARGS` against `agent` on a new pseudo-terminal of 80x24.
    pub fn run(agent: &AgentProc, args: &[&str]) -> Terminal {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let slave = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        resize(&master, 80, 24);
        let child = Command::new("setsid")
            .arg("-c")
            .arg(env!("CARGO_BIN_EXE_aloft"))
            .args(args)
            .env("ALOFT_API_URL", &agent.url)
            .env("ALOFT_API_TOKEN", &agent.token)
            .env("TERM", "xterm-256color")
            .env_remove("ALOFT_APP")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("setsid and aloft run");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = std::fs::File::from(master.try_clone().unwrap());
        let into = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the CLI (the last holder of the slave) is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    return;
                }
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            master,
            seen,
            child,
        }
    }

    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    pub fn type_in(&self, text: &str) {
        rustix::io::write(&self.master, text.as_bytes()).unwrap();
    }

    /// Waits until the terminal shows `text` (after what it showed before `since`).
    pub fn expect(&self, since: usize, text: &str) {
        aloft_testkit::wait_for_explained(
            Duration::from_secs(30),
            &format!("the terminal to show {text:?}"),
            || format!("it shows {:?}", self.seen()),
            || {
                self.seen.lock().unwrap()[since..]
                    .windows(text.len())
                    .any(|w| w == text.as_bytes())
            },
        );
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        resize(&self.master, cols, rows);
    }

    /// Waits for the CLI to exit; its exit code.
    pub fn exit_code(&mut self) -> Option<i32> {
        let child = &mut self.child;
        wait_for(Duration::from_secs(30), "the CLI to exit", || {
            child.try_wait().unwrap()
        })
        .code()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resize(master: &OwnedFd, cols: u16, rows: u16) {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, size).unwrap();
}

/// The pids of the machine's processes whose command line contains `needle` (the agent's `ps`).
async fn pids_running(agent: &AgentProc, app: &str, id: &str, needle: &str) -> Vec<i32> {
    let list = agent
        .ok(
            Method::GET,
            &format!("/v1/apps/{app}/machines/{id}/ps"),
            None,
        )
        .await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|p| p["command"].as_str().is_some_and(|c| c.contains(needle)))
        .map(|p| p["pid"].as_i64().unwrap() as i32)
        .collect()
}

async fn process_machine(agent: &AgentProc, app: &str, image: &str) -> String {
    agent.create_app(app).await;
    let id = agent
        .create(
            app,
            json!({"config": {"image": format!("dir://{image}"),
            "init": {"exec": ["/bin/sh", "-c", "exec sleep 100000"]}}}),
        )
        .await;
    agent.wait_state(app, &id, "started").await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_on_a_terminal_answers_resizes_interrupts_and_exits_with_its_code() {
    let (tmp, _image, image_s) = setup();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &[], None);
    let id = process_machine(&agent, "co", &image_s).await;

    let mut t = Terminal::run(&agent, &["ssh", "console", "-a", "co"]);
    // A command, its output on the terminal; TERM is the client's.
    t.type_in("echo hello-$((6*7)) $TERM\r");
    t.expect(0, "hello-42 xterm-256color");
    t.type_in("stty size\r");
    t.expect(0, "24 80");

    // A resize of the local terminal reaches the machine's (SIGWINCH → resize frame). The
    // signal and the typed command race in the CLI, so ask again until the answer changes.
    t.resize(101, 37);
    wait_for(
        Duration::from_secs(30),
        "stty size to show the new size",
        || {
            let since = t.len();
            t.type_in("stty size\r");
            std::thread::sleep(Duration::from_millis(300));
            t.seen()[..].len() > since && t.seen()[since..].contains("37 101")
        },
    );

    // Ctrl-C is a byte for the machine's terminal: it interrupts the foreground sleep there.
    t.type_in("sleep 4242\r");
    let sleeper = wait_for_pids(&agent, "co", &id, "sleep 4242").await;
    t.type_in("\x03");
    wait_for(Duration::from_secs(30), "Ctrl-C to end the sleep", || {
        !alive(sleeper)
    });
    let since = t.len();
    t.type_in("echo after-$((1+1))\r");
    t.expect(since, "after-2");

    // `exit 3` ends the session; the CLI exits with 3 and leaves the terminal as it found it.
    t.type_in("exit 3\r");
    assert_eq!(t.exit_code(), Some(3), "terminal: {}", t.seen());
}

async fn wait_for_pids(agent: &AgentProc, app: &str, id: &str, needle: &str) -> i32 {
    for _ in 0..300 {
        if let Some(pid) = pids_running(agent, app, id, needle).await.first() {
            return *pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no process {needle:?} ever ran in machine {id}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_killed_mid_session_leaves_no_process_and_no_session() {
    let (tmp, _image, image_s) = setup();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &[], None);
    let id = process_machine(&agent, "gone", &image_s).await;

    // A command that ignores SIGHUP is killed all the same once the grace period is over.
    let mut t = Terminal::run(
        &agent,
        &[
            "ssh",
            "console",
            "-a",
            "gone",
            "--machine",
            &id,
            "--command",
            "sh -c 'trap \"\" HUP; sleep 4343'",
        ],
    );
    let sleeper = wait_for_pids(&agent, "gone", &id, "sleep 4343").await;
    t.child.kill().unwrap();
    t.child.wait().unwrap();
    wait_for(
        Duration::from_secs(30),
        "the session's processes to be gone after the client was killed",
        || !alive(sleeper),
    );
    assert!(
        pids_running(&agent, "gone", &id, "sleep 4343")
            .await
            .is_empty(),
        "nothing of the session is left in the machine"
    );

    // Its place is free again: a machine's full quota of sessions opens, one more is a 429.
    let client = aloft_client::Client::new(agent.url.clone(), Some(agent.token.clone()));
    let params = ConsoleParams {
        cmd: Some("sleep 4444".into()),
        ..Default::default()
    };
    let mut open = Vec::new();
    wait_for_async_sessions_freed(&client, &id, &params, &mut open).await;
    assert_eq!(open.len(), MAX_SESSIONS_PER_MACHINE);
    let refused = client
        .console("gone", &id, &params)
        .await
        .err()
        .expect("one session more than a machine allows is refused");
    let status = aloft_client::status_error(&refused).expect("an HTTP refusal");
    assert_eq!(status.status.as_u16(), 429, "{refused:#}");
    assert!(
        status.message.contains("console sessions"),
        "{}",
        status.message
    );

    // Clients that hang up leave nothing running.
    drop(open);
    wait_for_async_gone(&agent, "gone", &id, "sleep 4444").await;
}

/// Opens sessions until the machine's quota is reached, retrying the first while the killed
/// client's session is still being finished (its grace period).
async fn wait_for_async_sessions_freed(
    client: &aloft_client::Client,
    id: &str,
    params: &ConsoleParams,
    open: &mut Vec<(
        aloft_client::console::ConsoleWriter,
        aloft_client::console::ConsoleReader,
    )>,
) {
    for _ in 0..300 {
        match client.console("gone", id, params).await {
            Ok(s) => open.push(s),
            Err(e) if aloft_client::status_error(&e).is_some_and(|s| s.status.as_u16() == 429) => {
                if open.len() == MAX_SESSIONS_PER_MACHINE {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("opening a session: {e:#}"),
        }
        if open.len() == MAX_SESSIONS_PER_MACHINE {
            return;
        }
    }
    panic!("the killed client's session never gave its place back");
}

async fn wait_for_async_gone(agent: &AgentProc, app: &str, id: &str, needle: &str) {
    for _ in 0..300 {
        if pids_running(agent, app, id, needle).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("processes {needle:?} of closed sessions still run in machine {id}");
}

/// The app's machines that are not destroyed, as (id, group).
async fn live_machines(agent: &AgentProc, app: &str) -> Vec<(String, String)> {
    let list = agent
        .ok(Method::GET, &format!("/v1/apps/{app}/machines"), None)
        .await;
    list.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] != "destroyed")
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["config"]["metadata"]["fly_process_group"]
                    .as_str()
                    .unwrap_or("app")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn aloft_console_runs_a_one_off_machine_and_leaves_none() {
    let (tmp, _image, image_s) = setup();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &[], None);
    let id = process_machine(&agent, "oneoff", &image_s).await;

    // A command on a new machine of the app's config; its exit code is the CLI's.
    let mut t = Terminal::run(
        &agent,
        &[
            "console",
            "-a",
            "oneoff",
            "--command",
            "sh -c 'echo one-off-$((2+3)) $FLY_PROCESS_GROUP; exit 7'",
        ],
    );
    t.expect(0, "one-off-5");
    assert_eq!(t.exit_code(), Some(7), "terminal: {}", t.seen());
    assert_eq!(
        live_machines(&agent, "oneoff").await,
        vec![(id.clone(), "app".to_string())],
        "the console machine is gone"
    );

    // A client killed mid-session: the agent destroys the console machine itself.
    let mut t = Terminal::run(
        &agent,
        &["console", "-a", "oneoff", "--command", "sleep 4747"],
    );
    let console = console_machine(&agent, "oneoff", &mut t).await;
    wait_for_pids(&agent, "oneoff", &console, "sleep 4747").await;
    t.child.kill().unwrap();
    t.child.wait().unwrap();
    for _ in 0..300 {
        if live_machines(&agent, "oneoff").await.len() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the console machine outlived its killed client: {:?}",
        live_machines(&agent, "oneoff").await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_console_machine_left_by_a_killed_agent_is_destroyed_by_the_next() {
    let (tmp, _image, image_s) = setup();
    let data = tmp.path().join("data");
    let mut agent = AgentProc::start_with(&data, &[], None);
    let id = process_machine(&agent, "left", &image_s).await;
    let mut t = Terminal::run(
        &agent,
        &["console", "-a", "left", "--command", "sleep 4848"],
    );
    let console = console_machine(&agent, "left", &mut t).await;
    wait_for_pids(&agent, "left", &console, "sleep 4848").await;
    agent.kill9();
    t.child.kill().unwrap();
    t.child.wait().unwrap();

    let agent = AgentProc::start_with(&data, &[], None);
    assert_eq!(
        live_machines(&agent, "left").await,
        vec![(id, "app".to_string())],
        "the restarted agent destroyed the console machine before serving"
    );
}

/// The console's WebSocket is an upgrade of the client's own connection: over TLS too (the
/// agent's self-signed certificate, required by its fingerprint).
#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_runs_over_the_tls_api() {
    let (tmp, _image, image_s) = setup();
    let data = tmp.path().join("data");
    let agent = AgentProc::start_with(&data, &["--tls"], None);
    assert!(agent.url.starts_with("https://"), "{}", agent.url);
    let fingerprint = std::fs::read_to_string(data.join("agent.fingerprint")).unwrap();
    let client = aloft_client::connect(
        &agent.url,
        aloft_client::ConnectOptions {
            token: Some(agent.token.clone()),
            fingerprint: Some(fingerprint.trim().to_string()),
            ..Default::default()
        },
    )
    .unwrap();
    session_exits_with_its_code(&client, "tls", &image_s).await;
}

/// …and through an `ssh://` agent URL's tunnel (the forwarded unix socket). Needs root (sshd).
#[tokio::test(flavor = "multi_thread")]
async fn a_console_session_runs_through_an_ssh_tunnel() {
    if !crate::common::privileged_or_skip(
        "a_console_session_runs_through_an_ssh_tunnel",
        aloft_testkit::sshd::unavailable().map_or(Ok(()), Err),
    ) {
        return;
    }
    let sshd = aloft_testkit::sshd::Sshd::start();
    let (tmp, _image, image_s) = setup();
    let data = tmp.path().join("data");
    let _agent = AgentProc::start_with(&data, &["--no-proxy"], None);
    let url = format!(
        "ssh://{}{}?aloft={}",
        aloft_testkit::sshd::HOST_ALIAS,
        data.display(),
        aloft_testkit::agent::aloft_bin().display()
    );
    let ssh_config = sshd.client_config();
    let client = tokio::task::spawn_blocking(move || {
        aloft_client::connect(
            &url,
            aloft_client::ConnectOptions {
                ssh_config: Some(ssh_config),
                ..Default::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    session_exits_with_its_code(&client, "overssh", &image_s).await;
}

/// A machine of a new app `app`, a session on it that echoes a typed line and exits 5.
async fn session_exits_with_its_code(client: &aloft_client::Client, app: &str, image_s: &str) {
    client.create_app(app, "personal").await.unwrap();
    let req: aloft_api::CreateMachineRequest = serde_json::from_value(json!({"config": {
        "image": format!("dir://{image_s}"),
        "init": {"exec": ["/bin/sh", "-c", "exec sleep 100000"]}}}))
    .unwrap();
    let m = client.create_machine(app, &req).await.unwrap();
    client
        .wait_machine(
            app,
            &m.id,
            aloft_api::MachineState::Started,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let params = ConsoleParams {
        cmd: Some("sh -c 'read line; echo got-$line; exit 5'".into()),
        ..Default::default()
    };
    let (mut writer, mut reader) = client.console(app, &m.id, &params).await.unwrap();
    writer.input(b"over-tls\r").await.unwrap();
    let mut seen = Vec::new();
    let code = loop {
        match reader.next().await.unwrap() {
            aloft_client::console::ConsoleEvent::Output(b) => seen.extend_from_slice(&b),
            aloft_client::console::ConsoleEvent::Exit(code) => break code,
        }
    };
    assert_eq!(code, 5);
    assert!(
        String::from_utf8_lossy(&seen).contains("got-over-tls"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn select_lists_the_started_machines_and_connects_to_the_one_chosen() {
    let (tmp, _image, image_s) = setup();
    let agent = AgentProc::start_with(&tmp.path().join("data"), &[], None);
    let first = process_machine(&agent, "pick", &image_s).await;
    let second = agent
        .create(
            "pick",
            json!({"config": {"image": format!("dir://{image_s}"),
            "init": {"exec": ["/bin/sh", "-c", "exec sleep 100000"]}}}),
        )
        .await;
    agent.wait_state("pick", &second, "started").await;

    let mut t = Terminal::run(
        &agent,
        &[
            "ssh",
            "console",
            "-a",
            "pick",
            "-s",
            "--command",
            "sh -c 'echo on-$FLY_MACHINE_ID'",
        ],
    );
    t.expect(0, &first);
    t.expect(0, &second);
    // The list is in the API's order; choose the line that names the second machine.
    let listed = t.seen();
    let line = listed
        .lines()
        .find(|l| l.contains(&second))
        .unwrap()
        .trim()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    t.type_in(&format!("{line}\r"));
    t.expect(0, &format!("on-{second}"));
    assert_eq!(t.exit_code(), Some(0), "terminal: {}", t.seen());
}

/// The id of the console machine `aloft console` (running as `t`) made in `app`, once it exists;
/// fails if the CLI ends first.
async fn console_machine(agent: &AgentProc, app: &str, t: &mut Terminal) -> String {
    loop {
        let ms = live_machines(agent, app).await;
        if let Some((cid, _)) = ms.iter().find(|(_, g)| g == "fly_app_console") {
            return cid.clone();
        }
        assert!(
            t.child.try_wait().unwrap().is_none(),
            "the CLI ended: {}",
            t.seen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
