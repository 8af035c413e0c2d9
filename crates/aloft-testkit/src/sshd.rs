//! A real OpenSSH server for end-to-end tests of `ssh://` agent URLs.
//!
//! [`Sshd::start`] makes a host key and a client key with `ssh-keygen` in a temp dir and runs
//! `sshd -D -e` on 127.0.0.1 with an OS-assigned port (key login only, root allowed by key),
//! and writes the client's ssh config ([`Sshd::client_config`]): a `Host` alias with the port,
//! `root`, the client key, and a `known_hosts` of the temp dir (empty: the first connection
//! records the key). Tests pass that config in `ALOFT_SSH_CONFIG`. sshd is SIGKILLed on drop
//! and the temp dir removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::wait_for;

/// The `Host` alias of [`Sshd::client_config`].
pub const HOST_ALIAS: &str = "aloft-test-sshd";

const SSHD: &str = "/usr/sbin/sshd";

/// Why `sshd` tests cannot run here, if they cannot: they need root (sshd logs users in) and
/// the `openssh-server` and `openssh-client` packages.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("a test sshd needs root".into());
    }
    if !Path::new(SSHD).is_file() {
        return Some(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ));
    }
    for tool in ["ssh", "ssh-keygen"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is missing (apt-get install openssh-client)"
            ));
        }
    }
    None
}

/// A running test sshd; killed on drop.
pub struct Sshd {
    child: Child,
    pub port: u16,
    /// Keys, configs, `known_hosts`, the server's log.
    pub dir: tempfile::TempDir,
}

impl Sshd {
    /// Starts sshd (see the module doc); panics with sshd's log if it does not come up.
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("aloft-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path().to_path_buf();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::write(d.join("known_hosts"), "").unwrap();
        // The privilege separation dir sshd insists on.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        let log = d.join("sshd.log");
        let config = d.join("sshd_config");
        // A free port can be taken between the probe and sshd's bind: try a few.
        let mut failures = Vec::new();
        let mut dir = Some(dir);
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(&config, sshd_config(&d, port)).unwrap();
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("sshd starts");
            // Owned from here: a panic below still kills it.
            let mut sshd = Sshd {
                child,
                port,
                dir: dir.take().expect("the temp dir"),
            };
            let up = wait_for(Duration::from_secs(10), "sshd to listen", || {
                if let Ok(Some(status)) = sshd.child.try_wait() {
                    return Some(Err(format!("sshd exited ({status})")));
                }
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_ok()
                    .then_some(Ok(()))
            });
            match up {
                Ok(()) => {
                    sshd.write_client_config("client_config", "client_key");
                    return sshd;
                }
                Err(why) => {
                    failures.push(format!("{why}: {}", sshd.log()));
                    // Keep the temp dir for the next try; the dead sshd goes.
                    let placeholder = tempfile::tempdir().unwrap();
                    dir = Some(std::mem::replace(&mut sshd.dir, placeholder));
                }
            }
        }
        panic!("sshd did not start:\n{}", failures.join("\n"));
    }

    /// The ssh config of a client that logs in with the authorized key.
    pub fn client_config(&self) -> PathBuf {
        self.dir.path().join("client_config")
    }

    /// An ssh config like [`Sshd::client_config`] whose key the server does not know: ssh
    /// would have to ask for a password.
    pub fn unauthorized_config(&self) -> PathBuf {
        keygen(&self.dir.path().join("other_key"));
        self.write_client_config("unauthorized_config", "other_key")
    }

    /// Makes the client's `known_hosts` hold another key for this server (as after a
    /// reinstall, or a man in the middle).
    pub fn record_wrong_host_key(&self) {
        let other = self.dir.path().join("wrong_host_key");
        keygen(&other);
        let key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        std::fs::write(
            self.dir.path().join("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")),
        )
        .unwrap();
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn write_client_config(&self, name: &str, key: &str) -> PathBuf {
        let d = self.dir.path();
        let path = d.join(name);
        std::fs::write(
            &path,
            format!(
                "Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  \
                 IdentityFile {key}\n  IdentitiesOnly yes\n  IdentityAgent none\n  \
                 UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n",
                port = self.port,
                key = d.join(key).display(),
                known = d.join("known_hosts").display(),
            ),
        )
        .unwrap();
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_config(dir: &Path, port: u16) -> String {
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n\
         AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         UsePAM no\nStrictModes no\nAllowTcpForwarding yes\nPidFile {dir}/sshd.pid\n\
         LogLevel ERROR\n",
        host_key = dir.join("host_key").display(),
        dir = dir.display(),
    )
}

/// A new ed25519 key pair at `path` (and `path.pub`), without a passphrase.
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "aloft-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
