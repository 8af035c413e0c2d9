//! The OCI runtime configuration (`config.json`) of one machine container: a pure function of
//! the launch, so what a machine gets (argv, env, user, namespaces, mounts, limits) is unit
//! tested without running anything.
//!
//! What it sets, and why:
//! - process: the init (`tini`, bind-mounted read-only at [`INIT_PATH`]) as PID 1, which runs
//!   the machine's argv, reaps zombies and forwards signals to the argv's process group (`-g`);
//!   the image's WORKDIR (default `/`) and USER (resolved by [`super::users`]); the environment
//!   of [`environment`].
//! - namespaces: pid, mount, uts (hostname = machine id), ipc, and network (the machine's own
//!   namespace from the network module, or a fresh empty one when none is given);
//! - mounts: `/proc`, `/dev` (tmpfs with the standard nodes runc adds), `/dev/pts`, `/dev/shm`,
//!   `/dev/mqueue`, `/sys` and its cgroup read-only, `/etc/hosts` and `/etc/hostname` files
//!   the runtime writes per machine; the machine's volumes (`LaunchSpec::volumes`), read-write;
//! - capabilities: Docker's default set (what images built for Docker expect);
//! - cgroup: `cgroupsPath` is the machine's own cgroup (`/<parent>/<machine_id>`), created with
//!   the guest's limits by the runtime before the container starts, so limits, OOM detection
//!   and reaping work the same for processes and containers. No `resources` here: one writer.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

/// Where the init binary is mounted inside every container.
pub const INIT_PATH: &str = "/.aloft/init";

/// Docker's default capability set.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Everything `config.json` is made of.
pub struct ContainerSpec<'a> {
    pub machine_id: &'a str,
    /// argv of the machine (ENTRYPOINT + CMD, or `init.exec`), run by the init.
    pub argv: &'a [String],
    /// `K=V` pairs, in order (a later one wins inside the container).
    pub env: &'a [String],
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: &'a [u32],
    /// The mounted root filesystem (the overlay).
    pub rootfs: &'a Path,
    /// The init binary on the host.
    pub init: &'a Path,
    /// The network namespace to join; `None` gives the container an empty one of its own.
    pub netns: Option<&'a Path>,
    /// `/etc/hosts` and `/etc/hostname` of this machine, on the host.
    pub hosts_file: &'a Path,
    pub hostname_file: &'a Path,
    /// `/etc/resolv.conf` when the container has a network (else the image's own).
    pub resolv_file: Option<&'a Path>,
    /// `/<parent>/<machine_id>`.
    pub cgroups_path: &'a str,
    /// The soft `RLIMIT_NOFILE` the process starts with.
    pub nofile: u64,
    /// Volumes, bind-mounted read-write at their paths.
    pub volumes: &'a [crate::volumes::VolumeBind],
}

/// The `config.json` document.
pub fn config_json(spec: &ContainerSpec<'_>) -> Value {
    let mut args = vec![INIT_PATH.to_string(), "-g".into(), "--".into()];
    args.extend(spec.argv.iter().cloned());
    let caps: Vec<&str> = CAPABILITIES.to_vec();
    let mut network = json!({"type": "network"});
    if let Some(path) = spec.netns {
        network["path"] = json!(path);
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": spec.uid,
                "gid": spec.gid,
                "additionalGids": spec.additional_gids,
            },
            "args": args,
            "env": spec.env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": spec.nofile.max(1024), "soft": spec.nofile}],
            "noNewPrivileges": false,
        },
        "root": {"path": spec.rootfs, "readonly": false},
        "hostname": spec.machine_id,
        "mounts": mounts(spec),
        "linux": {
            "cgroupsPath": spec.cgroups_path,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"},
                network,
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

fn mounts(spec: &ContainerSpec<'_>) -> Vec<Value> {
    let bind_ro = |source: &Path, destination: &str| {
        json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": ["rbind", "ro", "nosuid", "nodev"],
        })
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        bind_ro(spec.init, INIT_PATH),
        bind_ro(spec.hosts_file, "/etc/hosts"),
        bind_ro(spec.hostname_file, "/etc/hostname"),
    ];
    if let Some(resolv) = spec.resolv_file {
        mounts.push(bind_ro(resolv, "/etc/resolv.conf"));
    }
    for v in spec.volumes {
        mounts.push(json!({
            "destination": v.destination,
            "type": "bind",
            "source": v.source,
            "options": ["rbind", "rw", "nosuid", "nodev"],
        }));
    }
    mounts
}

/// The container's environment: the image's ENV, then the config's env, then the app's
/// secrets, then the platform variables (which win). `PATH` falls back to the usual default
/// when the image sets none.
pub fn environment(
    image_env: &[String],
    config_env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    platform: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set("PATH", crate::env::DEFAULT_PATH);
    for pair in image_env {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        set(k, v);
    }
    for (k, v) in config_env.iter().chain(secrets).chain(platform) {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_env_then_config_then_secrets_then_platform() {
        let image = vec![
            "PATH=/app/bin".to_string(),
            "A=image".into(),
            "B=image".into(),
            "C=image".into(),
        ];
        let config = BTreeMap::from([
            ("B".to_string(), "config".to_string()),
            ("C".to_string(), "config".to_string()),
        ]);
        let secrets = BTreeMap::from([
            ("C".to_string(), "secret".to_string()),
            ("PORT".to_string(), "1".to_string()),
        ]);
        let platform = BTreeMap::from([("PORT".to_string(), "8080".to_string())]);
        assert_eq!(
            environment(&image, &config, &secrets, &platform),
            [
                "PATH=/app/bin",
                "A=image",
                "B=config",
                "C=secret",
                "PORT=8080"
            ]
        );
        assert_eq!(
            environment(&[], &BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new()),
            [format!("PATH={}", crate::env::DEFAULT_PATH)]
        );
    }

    #[test]
    fn the_init_runs_the_argv_in_the_machines_namespaces() {
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "serve".into()];
        let spec = ContainerSpec {
            machine_id: "e2865013a9d086",
            argv: &argv,
            env: &["PATH=/bin".to_string()],
            cwd: "/app",
            uid: 1000,
            gid: 1000,
            additional_gids: &[],
            rootfs: Path::new("/r/rootfs"),
            init: Path::new("/usr/bin/tini-static"),
            netns: Some(Path::new("/run/netns/aloft-e2865013a9d086")),
            hosts_file: Path::new("/r/hosts"),
            hostname_file: Path::new("/r/hostname"),
            resolv_file: Some(Path::new("/r/resolv.conf")),
            cgroups_path: "/aloft/e2865013a9d086",
            nofile: 1024,
            volumes: &[],
        };
        let c = config_json(&spec);
        assert_eq!(
            c["process"]["args"],
            json!([INIT_PATH, "-g", "--", "/bin/sh", "-c", "serve"])
        );
        assert_eq!(c["hostname"], "e2865013a9d086");
        assert_eq!(c["process"]["user"]["uid"], 1000);
        assert_eq!(c["process"]["cwd"], "/app");
        assert_eq!(
            c["linux"]["namespaces"][1]["path"],
            "/run/netns/aloft-e2865013a9d086"
        );
        let init_mount = c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == INIT_PATH)
            .unwrap();
        assert_eq!(init_mount["source"], "/usr/bin/tini-static");
    }
}
