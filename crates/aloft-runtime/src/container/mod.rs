//! Machines as OCI containers: the image's layers under an overlay root filesystem, run by runc,
//! held by a per-machine shim ([`shim`]) so they outlive the agent.
//!
//! The supervisor calls [`start`] where it would spawn a process; what comes back
//! ([`Container`]) is waited on through a pidfd on the shim, and its output is tailed from the
//! shim's `output.log` into the agent's log store ([`tail`]). After an agent restart,
//! [`adopt`] finds the shims still running and hands back the same [`Container`]s, so the
//! supervisor carries on as if it had started them.
//!
//! Runtime choice: runc (Debian's 1.1) starts a busybox container in ~35 ms here and runs on
//! cgroup v1, v2 and the hybrid layout these hosts have (crun 1.8 refuses hybrid hosts); youki's
//! `libcontainer` would run in process, but a container's life must not depend on the agent's
//! process, which a shim gives anyway. The init is `tini` (Debian's `tini-static`), mounted
//! read-only into every container.

pub mod netns;
pub mod rootfs;
pub mod shim;
pub mod spec;
pub mod tail;
pub mod users;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncBufReadExt;

use crate::cgroup::MachineCgroup;
use crate::logs::Labels;
use crate::net::Attachment;
use crate::{env, LaunchSpec, LogStore, RuntimeError};

/// How the runtime runs containers; `None` in [`crate::RuntimeConfig`] means it cannot.
#[derive(Clone)]
pub struct ContainerConfig {
    /// The OCI runtime binary (runc).
    pub runc: PathBuf,
    /// The static init mounted into containers (tini-static).
    pub init: PathBuf,
    /// The executable that runs `<shim_exe> shim <dir>` (the `aloft` binary itself).
    pub shim_exe: PathBuf,
    /// Gives each container its network namespace and address; `None`: an empty namespace (no
    /// network but loopback).
    pub network: Option<Arc<dyn Netns>>,
}

impl std::fmt::Debug for ContainerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerConfig")
            .field("runc", &self.runc)
            .field("init", &self.init)
            .field("shim_exe", &self.shim_exe)
            .field("network", &self.network.is_some())
            .finish()
    }
}

impl ContainerConfig {
    /// runc (or `oci_runtime`, any runtime with runc's command line, such as crun) and
    /// tini-static from `PATH` (or the usual Debian places), the current executable as the shim.
    /// The error names what is missing and the package that provides it.
    pub fn detect(
        network: Option<Arc<dyn Netns>>,
        oci_runtime: Option<&Path>,
    ) -> Result<ContainerConfig, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "the agent does not run as root, which containers need (namespaces, \
                        overlay mounts, the machines' bridge): run the agent as root, or deploy \
                        without a Dockerfile to use the process runtime"
                    .into(),
            );
        }
        let find = |names: &[&str], package: &str| -> Result<PathBuf, String> {
            let path = std::env::var_os("PATH").unwrap_or_default();
            for name in names {
                for dir in std::env::split_paths(&path)
                    .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
                {
                    let candidate = dir.join(name);
                    if candidate.is_file() {
                        return Ok(candidate);
                    }
                }
            }
            Err(format!(
                "{} is not installed (apt-get install {package})",
                names[0]
            ))
        };
        let runc = match oci_runtime {
            Some(path) => {
                let found = if path.components().count() > 1 {
                    path.is_file().then(|| path.to_path_buf())
                } else {
                    find(&[&path.to_string_lossy()], "crun").ok()
                };
                found.ok_or_else(|| {
                    format!(
                        "the OCI runtime {} (--oci-runtime) is not an executable file",
                        path.display()
                    )
                })?
            }
            None => find(&["runc"], "runc")?,
        };
        Ok(ContainerConfig {
            runc,
            init: find(&["tini-static"], "tini")?,
            shim_exe: std::env::current_exe()
                .map_err(|e| format!("cannot find the agent's own executable: {e}"))?,
            network,
        })
    }
}

/// What a container needs from the network: its namespace and addresses.
pub trait Netns: Send + Sync {
    /// The network namespace file and private addresses of the machine of organization `org`,
    /// made on first use and the same until [`Netns::detach`]; `true` when [`Netns::connect`]
    /// must still wire it (which may run while the container starts in the namespace).
    fn prepare(&self, machine_id: &str, org: &str) -> Result<(Attachment, bool), String>;
    /// Wires a prepared namespace to the network (veth on the bridge, addresses, routes).
    fn connect(&self, machine_id: &str, org: &str) -> Result<(), String>;
    /// The machine's IPv4 address, if it has one now (no host changes).
    fn address(&self, machine_id: &str) -> Option<std::net::Ipv4Addr>;
    /// The machine's attachment (both addresses, its organization's prefix), if it has one now
    /// (no host changes; `None` for a machine recorded before IPv6 until its next start).
    fn attachment(&self, machine_id: &str) -> Option<Attachment>;
    /// Frees what [`Netns::attach`] gave (the machine is destroyed). Idempotent.
    fn detach(&self, machine_id: &str);
    /// Detaches every machine not in `keep` (after an agent restart: destroyed meanwhile).
    fn keep_only(&self, keep: &[String]);
    /// The service (Flycast) address `key` of organization `org`, made on first use.
    fn service_address(&self, org: &str, key: &str) -> Result<std::net::Ipv6Addr, String>;
    /// Takes the service address `key` off the network. Idempotent.
    fn release_service_address(&self, key: &str);
}

/// The image side of a container launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerImage {
    /// Unpacked layers, bottom → top.
    pub layers: Vec<PathBuf>,
    /// Image ENV, `K=V`.
    pub env: Vec<String>,
    /// Image WORKDIR (empty: `/`).
    pub workdir: String,
    /// Image USER (empty: root).
    pub user: String,
}

/// A running container, as the supervisor holds it.
pub(crate) struct Container {
    pub dir: PathBuf,
    /// The init's pid on the host (tini, PID 1 inside).
    pub pid: u32,
    pidfd: AsyncFd<OwnedFd>,
}

/// `<runtime>/containers`: a directory per container machine; its root filesystem is mounted
/// at `<machine id>/rootfs` while it runs (the proxy serves `[[statics]]` from there).
pub fn containers_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("containers")
}

/// runc's state root for this agent.
pub(crate) fn runc_root(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("runc")
}

/// Everything about a launch the container path needs besides the spec.
pub(crate) struct Start<'a> {
    pub runtime_dir: &'a Path,
    pub config: &'a ContainerConfig,
    pub image: &'a ContainerImage,
    pub argv: &'a [String],
    pub labels: &'a Labels,
    pub cgroup: Option<&'a MachineCgroup>,
    pub cgroup_parent: &'a str,
    pub nofile: u64,
    pub log_file_bytes: u64,
    pub logs: &'a Arc<LogStore>,
}

/// Starts the machine's container through a new shim; returns once its init runs.
pub(crate) async fn start(
    spec: &LaunchSpec,
    s: Start<'_>,
) -> Result<(Container, tail::Tailer), RuntimeError> {
    let machine_id = spec.machine_id.clone();
    let t0 = std::time::Instant::now();
    let fail = |message: String| RuntimeError::Container {
        machine_id: machine_id.clone(),
        message,
    };
    let dir = containers_dir(s.runtime_dir).join(&spec.machine_id);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    fs::create_dir_all(runc_root(s.runtime_dir)).map_err(io(s.runtime_dir))?;
    let user = users::resolve(&s.image.user, &s.image.layers).map_err(&fail)?;
    let args = shim::ShimArgs {
        machine_id: spec.machine_id.clone(),
        runc: s.config.runc.clone(),
        runc_root: runc_root(s.runtime_dir),
        layers: s.image.layers.clone(),
        app: s.labels.app.clone(),
        group: s.labels.group.clone(),
        region: s.labels.region.clone(),
        log_file_bytes: s.log_file_bytes,
        oom_file: s.cgroup.map(MachineCgroup::oom_file),
    };
    write_json(&dir.join(shim::ARGS_FILE), &args).map_err(io(&dir))?;
    let _ = fs::remove_file(dir.join(shim::SHIM_PID_FILE));
    let _ = fs::remove_file(dir.join("config.json"));
    // The tail starts where the previous run's ended: the spool keeps what no agent read yet.
    let tail = tail::Tailer::resume(&dir, s.logs.clone());
    // The shim starts first (exec, fork, overlay mount) while the namespace and the bundle are
    // made here; it runs runc only once told to go.
    let mut child = tokio::process::Command::new(&s.config.shim_exe)
        .arg("shim")
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot start the shim {}: {e}",
                s.config.shim_exe.display()
            ))
        })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    // The namespace exists before runc needs it; wiring it (two `ip` runs) overlaps the
    // container's start and is awaited before the machine counts as started.
    let prepared = match &s.config.network {
        Some(net) => {
            let (net, id, org) = (net.clone(), spec.machine_id.clone(), spec.org.clone());
            tokio::task::spawn_blocking(move || net.prepare(&id, &org))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .map(Some)
        }
        None => Ok(None),
    };
    tracing::debug!(machine_id, elapsed = ?t0.elapsed(), "container: namespace prepared");
    let mut wiring = None;
    let ready = prepared.map_err(&fail).and_then(|p| {
        let (netns, ip) = match p {
            Some((a, needs)) => {
                if let (true, Some(net)) = (needs, &s.config.network) {
                    let (net, id, org) = (net.clone(), spec.machine_id.clone(), spec.org.clone());
                    wiring = Some(tokio::task::spawn_blocking(move || net.connect(&id, &org)));
                }
                (Some(a.netns_path.clone()), Some(a))
            }
            None => (None, None),
        };
        write_bundle(spec, &s, &dir, &user, netns.as_deref(), ip.as_ref())
    });
    // Go, or (an error above) close the pipe: the shim then cleans up and says it failed.
    if let (Ok(()), Some(mut stdin)) = (&ready, stdin) {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(b"go\n").await;
    }
    let _ = child.wait().await;
    tracing::debug!(machine_id, elapsed = ?t0.elapsed(), "container: shim detached");
    let mut line = String::new();
    if let Some(out) = stdout {
        let mut reader = tokio::io::BufReader::new(out);
        let _ = reader.read_line(&mut line).await;
    }
    let line = line.trim_end();
    tracing::debug!(machine_id, elapsed = ?t0.elapsed(), "container: shim reported {line:?}");
    if let Err(e) = ready {
        if let Some(w) = wiring {
            let _ = w.await;
        }
        return Err(e);
    }
    let pid = match line.split_once('\t') {
        Some(("started", pid)) => pid.parse::<u32>().ok(),
        Some(("failed", why)) => {
            if let Some(w) = wiring {
                let _ = w.await;
            }
            return Err(fail(start_failure(why, &spec.image_ref)));
        }
        _ => None,
    };
    let Some(pid) = pid else {
        if let Some(w) = wiring {
            let _ = w.await;
        }
        return Err(fail(format!(
            "the shim ended without starting the container (it said {line:?})"
        )));
    };
    let shim_pid = read_pid(&dir.join(shim::SHIM_PID_FILE))
        .ok_or_else(|| fail("the shim started the container but left no shim.pid".to_string()))?;
    let pidfd = pidfd(shim_pid).map_err(|e| fail(format!("cannot watch the shim: {e}")))?;
    if let Some(wiring) = wiring {
        let wired = wiring.await.map_err(|e| e.to_string()).and_then(|r| r);
        if let Err(why) = wired {
            // Not reachable: the container goes (its shim then records the exit).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(fail(format!("cannot connect its network: {why}")));
        }
    }
    tracing::debug!(machine_id, elapsed = ?t0.elapsed(), "container: started and wired");
    Ok((Container { dir, pid, pidfd }, tail))
}

/// Writes what runc reads: `hosts`, `hostname`, `resolv.conf` (with a network) and
/// `config.json` of the container's bundle.
fn write_bundle(
    spec: &LaunchSpec,
    s: &Start<'_>,
    dir: &Path,
    user: &users::User,
    netns: Option<&Path>,
    net: Option<&Attachment>,
) -> Result<(), RuntimeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::Io { path, source }
    };
    let hosts = dir.join("hosts");
    let hostname = dir.join("hostname");
    fs::write(&hosts, hosts_file(spec, net)).map_err(io(&hosts))?;
    fs::write(&hostname, format!("{}\n", spec.machine_id)).map_err(io(&hostname))?;
    let resolv = match net {
        Some(a) => {
            let path = dir.join("resolv.conf");
            fs::write(&path, resolv_conf(a)).map_err(io(&path))?;
            Some(path)
        }
        None => None,
    };
    let env = spec::environment(
        &s.image.env,
        &spec.config.env,
        &spec.secrets.0,
        &platform_env(spec, net),
    );
    let cwd = if s.image.workdir.is_empty() {
        "/".to_string()
    } else {
        s.image.workdir.clone()
    };
    let cgroups_path = format!("/{}/{}", s.cgroup_parent, spec.machine_id);
    let rootfs = rootfs::rootfs_dir(dir);
    let config = spec::config_json(&spec::ContainerSpec {
        machine_id: &spec.machine_id,
        argv: s.argv,
        env: &env,
        cwd: &cwd,
        uid: user.uid,
        gid: user.gid,
        additional_gids: &user.additional_gids,
        rootfs: &rootfs,
        init: &s.config.init,
        netns,
        hosts_file: &hosts,
        hostname_file: &hostname,
        resolv_file: resolv.as_deref(),
        cgroups_path: &cgroups_path,
        nofile: s.nofile,
        volumes: &spec.volumes,
    });
    write_json(&dir.join("config.json"), &config).map_err(io(dir))
}

/// Why a container did not start, with the image it runs and what to do.
fn start_failure(why: &str, image_ref: &str) -> String {
    let missing_program = ["executable file not found", "no such file or directory"]
        .iter()
        .any(|m| why.contains(m));
    let hint = if missing_program {
        "the image has no such program: fix ENTRYPOINT/CMD in the Dockerfile, or the process \
         group's command in fly.toml (init.exec/init.cmd in the machine config)"
    } else if why.contains("permission denied") {
        "the program is not executable by the image's USER: fix its mode or the USER in the \
         Dockerfile"
    } else {
        "check the image and the machine's config; `aloft logs` shows what the container printed"
    };
    format!("{why} (image {image_ref}); {hint}")
}

/// `/etc/hosts` of a container: localhost, and with a network its own addresses under its id
/// and its `.internal` name (as on Fly).
fn hosts_file(spec: &LaunchSpec, net: Option<&Attachment>) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    if let Some(a) = net {
        let id = &spec.machine_id;
        let vm = format!("{id}.vm.{}.internal", spec.app);
        text.push_str(&format!("{}\t{vm} {id}\n", a.ip6));
        text.push_str(&format!("{}\t{id}\n", a.ip));
    }
    text
}

/// `/etc/resolv.conf` of a container with a network: the agent's DNS server on the bridge's
/// gateway addresses (`.internal` names, everything else forwarded to the host's resolvers).
fn resolv_conf(a: &Attachment) -> String {
    format!(
        "# Aloft: .internal names, other names through the host's resolvers\nnameserver {}\nnameserver {}\n",
        a.gateway6, a.gateway
    )
}

/// The private IPv6 address of a started container, if it has one (the machine's
/// `private_ip`).
pub(crate) fn address(config: &ContainerConfig, machine_id: &str) -> Option<std::net::IpAddr> {
    Some(config.network.as_ref()?.attachment(machine_id)?.ip6.into())
}

/// Frees the machine's network namespace and address (it is destroyed).
pub(crate) fn release_network(config: &ContainerConfig, machine_id: &str) {
    if let Some(net) = &config.network {
        net.detach(machine_id);
    }
}

/// The `FLY_*` variables and `PORT` of a container: it listens on its internal port, as on Fly;
/// `FLY_PRIVATE_IP` is its private IPv6 address.
fn platform_env(spec: &LaunchSpec, net: Option<&Attachment>) -> BTreeMap<String, String> {
    let ip = net.map_or_else(|| "127.0.0.1".into(), |a| a.ip6.to_string());
    let mut env = env::fly_vars(spec, &ip);
    if let Some(port) = env::single_service_port(&spec.config) {
        env.insert("PORT".into(), port.to_string());
    }
    env
}

impl Container {
    /// Waits for the shim to end and returns how the container ended (`exit.json`; a shim that
    /// died without writing it counts as a SIGKILL, and what it held is cleaned up here).
    pub(crate) async fn wait(
        &mut self,
        config: &ContainerConfig,
        runtime_dir: &Path,
        machine_id: &str,
    ) -> shim::ExitRecord {
        // Readable once the shim has exited (an error means it cannot be watched: read on).
        if let Ok(mut guard) = self.pidfd.readable().await {
            guard.retain_ready();
        }
        let exit_path = self.dir.join(shim::EXIT_FILE);
        match fs::read(&exit_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<shim::ExitRecord>(&b).ok())
        {
            Some(record) => record,
            None => {
                tracing::warn!(
                    machine_id,
                    "its shim died without recording the exit; cleaning up after it"
                );
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                force_delete(config, runtime_dir, machine_id);
                rootfs::unmount(&self.dir);
                shim::ExitRecord {
                    exit_code: 137,
                    signal: libc::SIGKILL,
                    ..shim::ExitRecord::default()
                }
            }
        }
    }
}

/// `runc delete --force`, for what a dead shim left.
fn force_delete(config: &ContainerConfig, runtime_dir: &Path, machine_id: &str) {
    let _ = std::process::Command::new(&config.runc)
        .arg("--root")
        .arg(runc_root(runtime_dir))
        .args(["delete", "--force", machine_id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A container whose shim a previous agent started.
pub(crate) enum Found {
    /// Still running: supervise it again.
    Running(Container, tail::Tailer),
    /// Ended while no agent watched (its exit record), or its shim vanished.
    Exited(shim::ExitRecord),
}

/// Looks for the shim of `machine_id` left by a previous agent.
pub(crate) fn adopt(runtime_dir: &Path, machine_id: &str, logs: &Arc<LogStore>) -> Option<Found> {
    let dir = containers_dir(runtime_dir).join(machine_id);
    if !dir.join(shim::ARGS_FILE).exists() {
        return None;
    }
    let exit = || {
        fs::read(dir.join(shim::EXIT_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<shim::ExitRecord>(&b).ok())
    };
    let alive_shim = read_pid(&dir.join(shim::SHIM_PID_FILE))
        .filter(|pid| is_shim(*pid, &dir))
        .and_then(|pid| pidfd(pid).ok());
    let init = read_pid(&dir.join(shim::INIT_PID_FILE));
    match (alive_shim, init) {
        (Some(pidfd), Some(pid)) if exit().is_none() => {
            let tail = tail::Tailer::resume(&dir, logs.clone());
            Some(Found::Running(Container { dir, pid, pidfd }, tail))
        }
        _ => {
            // Read what it logged while no agent watched, then report the exit.
            let mut tail = tail::Tailer::resume(&dir, logs.clone());
            tail.drain();
            Some(Found::Exited(exit().unwrap_or(shim::ExitRecord {
                exit_code: 137,
                signal: libc::SIGKILL,
                ..shim::ExitRecord::default()
            })))
        }
    }
}

/// Every machine with a container directory (for adoption and reaping).
pub(crate) fn known(runtime_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(containers_dir(runtime_dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(shim::ARGS_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Kills a container a previous agent left and that nobody adopts, and cleans up after it.
pub(crate) fn reap(config: Option<&ContainerConfig>, runtime_dir: &Path, machine_id: &str) {
    let dir = containers_dir(runtime_dir).join(machine_id);
    if let Some(pid) = read_pid(&dir.join(shim::SHIM_PID_FILE)).filter(|p| is_shim(*p, &dir)) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Some(pid) = read_pid(&dir.join(shim::INIT_PID_FILE)) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Some(config) = config {
        force_delete(config, runtime_dir, machine_id);
    }
    rootfs::unmount(&dir);
    let _ = fs::remove_dir_all(&dir);
}

/// Removes a container's directory after its last run (its spool read, its mount gone).
pub(crate) fn remove(runtime_dir: &Path, machine_id: &str) {
    let dir = containers_dir(runtime_dir).join(machine_id);
    rootfs::unmount(&dir);
    let _ = fs::remove_dir_all(&dir);
}

/// Whether `pid` is the shim of `dir` (pids are reused: its command line must name the dir).
fn is_shim(pid: u32, dir: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let dir = dir.as_os_str().as_encoded_bytes();
        c.split(|b| *b == 0).any(|arg| arg == dir)
    }) && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Written through a temporary file and a rename, mode 0600: `config.json` holds the machine's
/// environment, app secrets included, and only root (the shim, runc) reads these files.
fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    drop(file);
    fs::rename(tmp, path)
}

/// A pidfd for `pid`, readable once the process has exited.
fn pidfd(pid: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    let pid =
        rustix::process::Pid::from_raw(pid as i32).ok_or_else(|| std::io::Error::other("pid 0"))?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    register(fd)
}

#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the descriptor is owned by the `AsyncFd`, so it stays open while registered and
    // is deregistered before it is closed.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_oci_runtime_is_named() {
        let err = ContainerConfig::detect(None, Some(Path::new("/no/such/crun"))).unwrap_err();
        if nix::unistd::geteuid().is_root() {
            assert!(
                err.contains("/no/such/crun") && err.contains("--oci-runtime"),
                "{err}"
            );
        } else {
            assert!(err.contains("root"), "{err}");
        }
        if nix::unistd::geteuid().is_root() {
            let err =
                ContainerConfig::detect(None, Some(Path::new("no-such-runtime"))).unwrap_err();
            assert!(err.contains("no-such-runtime"), "{err}");
        }
    }
}
