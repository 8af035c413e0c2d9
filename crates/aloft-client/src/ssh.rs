//! The `ssh://` transport: the agent's loopback API reached through the user's own `ssh` (their
//! keys, ssh-agent, `known_hosts`, `~/.ssh/config` or `ALOFT_SSH_CONFIG`).
//!
//! URL: `ssh://[user@]host[:port][/remote/data/dir][?aloft=/path/to/aloft]`. The data dir is the
//! agent's on the server (default: the login user's default, as `aloft agent` picks it); `aloft`
//! is the server's `aloft` binary (default: `aloft` in the PATH of a non-interactive session).
//!
//! One connection per command, made by the system `ssh` as a ControlMaster in a private (0700)
//! temp dir ([`Tunnel`]):
//! 1. the master logs in (`BatchMode=yes`: never a prompt, `ConnectTimeout=5`) and runs
//!    `aloft agent connect-info --wait-stdin` on the server, which prints [`ConnectInfo`] (the
//!    API address from the data dir's `agent.addr`, whether it answers, and the token when the
//!    login user may read it), then holds the session until its stdin closes — so the master
//!    dies with this process however it ends;
//! 2. `ssh -O forward -L <dir>/api.sock:<api address>` asks the master to serve the API on a
//!    unix socket of that dir: every HTTP connection of the client (requests, log follows,
//!    deploy progress) is a channel of the one SSH connection.
//!
//! Host keys: unless the user's ssh config sets `StrictHostKeyChecking`, a first connection
//! accepts and records the server's key (`accept-new`); a changed key is refused by ssh itself.
//! Failures become errors that say what to do, within [`SETUP_DEADLINE`].

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use crate::client::Client;

/// Longest time from `connect` to a usable tunnel, or a clear error.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(9);

/// What `aloft agent connect-info` prints on the server (one JSON line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectInfo {
    /// The `aloft` version on the server.
    pub version: String,
    /// The agent's data dir on the server.
    pub data_dir: String,
    /// The API address from `<data-dir>/agent.addr` (a wildcard address made loopback), if an
    /// agent ever ran there.
    pub api: Option<String>,
    /// Whether something accepts connections at `api` right now.
    pub listening: bool,
    /// The API token from `<data-dir>/token`, when the login user may read it.
    pub token: Option<String>,
    /// Why the token could not be read.
    pub token_error: Option<String>,
}

/// An `ssh://` agent URL, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    /// The agent's data dir on the server.
    data_dir: Option<String>,
    /// The server's `aloft` binary.
    aloft: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let bad = |why: &str| {
            anyhow!("bad ssh:// agent URL {url}: {why}; write ssh://[USER@]HOST[:PORT][/DATA-DIR][?aloft=PATH]")
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("it names no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.starts_with('-') {
            return Err(bad("a host may not start with `-`"));
        }
        if parsed.password().is_some() {
            return Err(bad(
                "passwords do not go in the URL (ssh logs in with your keys)",
            ));
        }
        let user = Some(parsed.username())
            .filter(|u| !u.is_empty())
            .map(percent_decode)
            .transpose()
            .map_err(|e| bad(&e))?;
        if user.as_deref().is_some_and(|u| u.starts_with('-')) {
            return Err(bad("a user name may not start with `-`"));
        }
        let path = percent_decode(parsed.path()).map_err(|e| bad(&e))?;
        let data_dir = Some(path.trim_end_matches('/'))
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        let mut aloft = "aloft".to_string();
        for (key, value) in parsed.query_pairs() {
            match &*key {
                "aloft" if !value.is_empty() => aloft = value.into_owned(),
                other => return Err(bad(&format!("unknown parameter `{other}` (only `aloft`)"))),
            }
        }
        Ok(Target {
            user,
            host,
            port: parsed.port(),
            data_dir,
            aloft,
        })
    }

    /// `user@host:port` as people write it, for messages.
    fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    /// The `ssh` command line that tries the same login by hand.
    fn try_by_hand(&self) -> String {
        let mut s = "ssh ".to_string();
        if let Some(p) = self.port {
            s.push_str(&format!("-p {p} "));
        }
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        s
    }

    /// The command the master runs on the server (its login shell splits it: quoted).
    fn remote_command(&self) -> String {
        let mut words = vec![self.aloft.as_str(), "agent", "connect-info", "--wait-stdin"];
        if let Some(d) = &self.data_dir {
            words.push("--data-dir");
            words.push(d);
        }
        shlex::try_join(words).unwrap_or_default()
    }

    /// `ssh` with the user's config file, the port and the user; the destination comes last
    /// ([`Target::destination`]).
    fn ssh(&self, config: Option<&Path>) -> Command {
        let mut cmd = Command::new("ssh");
        if let Some(c) = config {
            cmd.arg("-F").arg(c);
        }
        if let Some(p) = self.port {
            cmd.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.arg("-l").arg(u);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn destination(&self) -> [&str; 2] {
        ["--", &self.host]
    }
}

/// Decodes the `%XX` escapes of a URL part.
fn percent_decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "a %-escape that is not UTF-8".to_string())
}

/// The SSH connection of a client: the ControlMaster process, its private dir (control socket,
/// API socket). Dropping it ends the connection and removes the dir.
struct Tunnel {
    master: Child,
    /// The master's stdin: the server side holds the session until it closes.
    _stdin: Option<ChildStdin>,
    /// Removed after the master is gone (fields drop after `drop`).
    _dir: tempfile::TempDir,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// A client of the agent at the `ssh://` URL `url`, with `token` if given (else the server's),
/// and the ssh config file `ssh_config` instead of `~/.ssh/config`.
pub(crate) fn connect(
    url: &str,
    token: Option<String>,
    ssh_config: Option<&Path>,
) -> anyhow::Result<Client> {
    let target = Target::parse(url)?;
    let who = target.display();
    let started = Instant::now();
    let config = ssh_config;
    if let Some(c) = config.filter(|c| !c.is_file()) {
        bail!(
            "the ssh config file {} (ALOFT_SSH_CONFIG) does not exist",
            c.display()
        );
    }
    let strict = user_sets_strict_host_key_checking(&target, config)?;
    let dir = private_dir()?;
    let control = dir.path().join("ctl");
    let socket = dir.path().join("api.sock");

    let mut master = target.ssh(config);
    master.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]);
    if !strict {
        master.args(["-o", "StrictHostKeyChecking=accept-new"]);
    }
    master
        .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no"])
        .arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .args([
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
        ])
        .args([
            "-T",
            "-o",
            "ClearAllForwardings=yes",
            "-o",
            "RemoteCommand=none",
        ])
        .args(target.destination())
        .arg(target.remote_command())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C of the command is the command's to handle; the master
        // ends when this process closes its stdin (at drop or exit).
        .process_group(0);
    let mut child = master.spawn().map_err(|e| {
        anyhow!("cannot run ssh for {url}: {e}; install the OpenSSH client (apt-get install openssh-client)")
    })?;
    let stdin = child.stdin.take();
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let lines = lines(child.stdout.take().expect("piped stdout"));
    let mut tunnel = Tunnel {
        master: child,
        _stdin: stdin,
        _dir: dir,
    };

    let deadline = started + SETUP_DEADLINE;
    // The first JSON line: a login shell's rc files may print before it.
    let mut noise = Vec::new();
    let info: ConnectInfo = loop {
        match lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => match serde_json::from_str(line.trim()) {
                Ok(info) => break info,
                Err(_) => noise.push(line.trim().to_string()),
            },
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "ssh to {who} did not log in within {}s ({}); check that the host answers ssh \
                 (`{}`)",
                SETUP_DEADLINE.as_secs(),
                last_words(&stderr),
                target.try_by_hand()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = wait_until(&mut tunnel.master, deadline);
                if status.is_some_and(|s| s.success()) {
                    bail!(
                        "`{}` on {who} printed no connection info ({:?}): is the aloft there as \
                         new as this one?",
                        target.remote_command(),
                        noise.join("\n")
                    );
                }
                return Err(login_error(&target, status, &settled(&stderr)));
            }
        }
    };
    let api = match (&info.api, info.listening) {
        (Some(api), true) => api.clone(),
        (api, _) => bail!(
            "no aloft agent runs on {who} (data dir {}{}): start it there with `aloft agent`, or \
             name its data dir in the URL (ssh://{who}/PATH/TO/DATA-DIR)",
            info.data_dir,
            match api {
                Some(a) => format!(", nothing answers at {a}"),
                None => ", which has no agent.addr".to_string(),
            }
        ),
    };
    let token = match (token, info.token) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => bail!(
            "the agent's API token on {who} could not be read ({}): log in as a user who may \
             read it, or pass it yourself in ALOFT_API_TOKEN (`cat {}/token` on the server)",
            info.token_error.as_deref().unwrap_or("no token file"),
            info.data_dir
        ),
    };

    wait_for_path(&control, deadline, &mut tunnel.master).with_context(|| {
        format!(
            "ssh to {who}: the control socket never appeared ({})",
            last_words(&stderr)
        )
    })?;
    let forward = target
        .ssh(config)
        .arg("-o")
        .arg(format!("ControlPath={}", control.display()))
        .args(["-O", "forward", "-L"])
        .arg(format!("{}:{api}", socket.display()))
        .args(target.destination())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ssh -O forward")?;
    let out = wait_output(forward, deadline)?;
    if !out.0.success() {
        bail!(
            "ssh to {who} could not forward the agent's API ({api}): {}; the server must allow \
             TCP forwarding (AllowTcpForwarding in its sshd_config)",
            out.1.trim()
        );
    }
    wait_for_path(&socket, deadline, &mut tunnel.master)
        .with_context(|| format!("ssh to {who}: the forwarded API socket never appeared"))?;

    let http = reqwest::Client::builder()
        .unix_socket(socket.as_path())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    Ok(Client::with_transport(
        http,
        format!("http://{api}"),
        Some(token),
        Some(Arc::new(tunnel)),
    ))
}

/// Whether the user's ssh config sets `StrictHostKeyChecking` for this host (`ssh -G` prints
/// the effective options; `ask` is the default, which `BatchMode` would turn into a refusal
/// of every new host).
fn user_sets_strict_host_key_checking(
    target: &Target,
    config: Option<&Path>,
) -> anyhow::Result<bool> {
    let out = target
        .ssh(config)
        .arg("-G")
        .args(target.destination())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| {
            anyhow!(
                "cannot run ssh: {e}; install the OpenSSH client (apt-get install openssh-client)"
            )
        })?;
    if !out.status.success() {
        bail!(
            "ssh does not accept its configuration for {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.strip_prefix("stricthostkeychecking ")
            .is_some_and(|v| v.trim() != "ask")
    }))
}

/// A new 0700 temp dir whose paths fit a unix socket's 108 bytes (ssh adds a suffix while it
/// binds the control socket). A CLI killed with SIGKILL leaves it behind (its ssh still ends).
fn private_dir() -> anyhow::Result<tempfile::TempDir> {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("aloft-ssh-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .with_context(|| format!("making a private temp dir in {}", base.display()))
}

/// Collects a pipe's text in the background; the returned buffer has one more owner while the
/// pipe is open.
fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let mine = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut b) = mine.lock() {
                // Keep the last 64 KiB at most.
                b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                if b.len() > 65536 {
                    let cut = b.len() - 65536;
                    let cut = (cut..b.len()).find(|&i| b.is_char_boundary(i)).unwrap_or(0);
                    b.drain(..cut);
                }
            }
        }
        drop(mine);
    });
    buf
}

/// The lines of a pipe, read in the background until it closes (then the channel closes).
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            // Once nobody listens, keep reading: ssh must never block on a full pipe.
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// All a [`drain`]ed pipe said, once it closed (a process that ended closes it at once; at most
/// half a second more for one that lingers).
fn settled(buf: &Arc<Mutex<String>>) -> String {
    let until = Instant::now() + Duration::from_millis(500);
    while Arc::strong_count(buf) > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    buf.lock().map(|s| s.clone()).unwrap_or_default()
}

/// The end of what ssh said, for a message.
fn last_words(stderr: &Mutex<String>) -> String {
    let text = stderr.lock().map(|s| s.clone()).unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        "ssh said nothing".to_string()
    } else {
        format!("ssh: {}", text.lines().last().unwrap_or_default())
    }
}

/// The child's exit status, killing it at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                return child.wait().ok();
            }
        }
    }
}

/// The exit status and stderr of a short ssh command, killed at `deadline`.
fn wait_output(mut child: Child, deadline: Instant) -> anyhow::Result<(ExitStatus, String)> {
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_until(&mut child, deadline).context("waiting for ssh")?;
    Ok((status, settled(&stderr)))
}

/// Waits for `path` to exist while the master lives.
fn wait_for_path(path: &Path, deadline: Instant, master: &mut Child) -> anyhow::Result<()> {
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Ok(Some(status)) = master.try_wait() {
            bail!("the ssh connection ended ({status})");
        }
        if Instant::now() >= deadline {
            bail!("timed out after {}s", SETUP_DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The error of a master that ended before the server printed its connection info.
fn login_error(target: &Target, status: Option<ExitStatus>, stderr: &str) -> anyhow::Error {
    let who = target.display();
    let said = stderr
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("@@@")
                && !l.starts_with("Warning: Permanently added")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let code = status.and_then(|s| s.code());
    if code == Some(127) {
        return anyhow!(
            "`{}` was not found on {who}: install aloft there, or give its path in the URL \
             (ssh://{who}/DATA-DIR?aloft=/usr/local/bin/aloft)\n{said}",
            target.aloft
        );
    }
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("Host key verification failed")
    {
        let offending = stderr
            .lines()
            .find(|l| l.contains("Offending") || l.contains("known_hosts"))
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default();
        return anyhow!(
            "ssh refused {who}: its host key is not the one recorded in your known_hosts{offending}. \
             If the server was reinstalled, check its new key and remove the old one \
             (ssh-keygen -R HOST); otherwise someone may be in the middle\n{said}"
        );
    }
    if stderr.contains("Permission denied") || stderr.contains("Too many authentication failures") {
        return anyhow!(
            "ssh could not log in to {who} without a prompt: add your key there ({}) or load \
             it in ssh-agent (ssh-add); aloft never asks for passwords\n{said}",
            target.try_by_hand().replacen("ssh", "ssh-copy-id", 1)
        );
    }
    if [
        "Could not resolve hostname",
        "Connection refused",
        "Connection timed out",
        "No route to host",
        "Network is unreachable",
        "Connection closed by",
        "Connection reset",
    ]
    .iter()
    .any(|m| stderr.contains(m))
    {
        return anyhow!(
            "cannot reach {who} over ssh: check the host name and port, and that sshd runs \
             there (`{}`)\n{said}",
            target.try_by_hand()
        );
    }
    match code {
        Some(255) | None => anyhow!("ssh to {who} failed: {said}"),
        Some(code) => anyhow!(
            "`{}` failed on {who} (exit {code}): {said}",
            target.remote_command()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_user_host_port_data_dir_and_binary() {
        let t =
            Target::parse("ssh://deploy@example.com:2222/var/lib/aloft/?aloft=/opt/aloft").unwrap();
        assert_eq!(
            t,
            Target {
                user: Some("deploy".into()),
                host: "example.com".into(),
                port: Some(2222),
                data_dir: Some("/var/lib/aloft".into()),
                aloft: "/opt/aloft".into(),
            }
        );
        assert_eq!(t.display(), "deploy@example.com:2222");
        let t = Target::parse("ssh://box").unwrap();
        assert_eq!((t.user, t.port, t.data_dir), (None, None, None));
        assert_eq!(t.aloft, "aloft");
        assert_eq!(Target::parse("ssh://[::1]:22").unwrap().host, "::1");
    }

    #[test]
    fn bad_urls_are_refused_with_the_form_to_use() {
        for url in [
            "ssh://",
            "ssh://-oProxyCommand=x",
            "ssh://-l@host",
            "ssh://u:secret@host",
            "ssh://host?nope=1",
            "ssh://host:99999",
        ] {
            let err = Target::parse(url).unwrap_err().to_string();
            assert!(err.contains("ssh://[USER@]HOST"), "{url}: {err}");
        }
    }

    #[test]
    fn the_remote_command_is_quoted_for_the_login_shell() {
        let t = Target::parse("ssh://h/srv/my%20data?aloft=/opt/a;b").unwrap();
        assert_eq!(
            t.remote_command(),
            "'/opt/a;b' agent connect-info --wait-stdin --data-dir '/srv/my data'"
        );
    }

    #[test]
    fn ssh_failures_become_errors_that_say_what_to_do() {
        let t = Target::parse("ssh://root@box").unwrap();
        let exit = |code: i32| {
            use std::os::unix::process::ExitStatusExt;
            Some(ExitStatus::from_raw(code << 8))
        };
        let cases = [
            (255, "root@box: Permission denied (publickey).", "ssh-copy-id"),
            (255, "ssh: connect to host box port 22: Connection refused", "cannot reach"),
            (255, "ssh: Could not resolve hostname box: Name or service not known", "cannot reach"),
            (
                255,
                "@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nOffending ED25519 key in /k/known_hosts:1\nHost key verification failed.",
                "/k/known_hosts:1",
            ),
            (127, "bash: line 1: aloft: command not found", "?aloft="),
            (1, "Error: boom", "exit 1"),
        ];
        for (code, stderr, expected) in cases {
            let msg = login_error(&t, exit(code), stderr).to_string();
            assert!(msg.contains(expected), "{stderr} -> {msg}");
        }
    }

    #[test]
    fn the_private_dir_is_the_users_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = private_dir().unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn connect_info_round_trips_as_json() {
        let info = ConnectInfo {
            version: "1.0".into(),
            data_dir: "/d".into(),
            api: Some("127.0.0.1:4280".into()),
            listening: true,
            token: None,
            token_error: Some("denied".into()),
        };
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<ConnectInfo>(&text).unwrap(), info);
    }
}
