//! What an agent's containers leave on the host, and removing it: each test agent gets its own
//! bridge and subnet ([`network_for`], derived from its data dir so a restarted agent finds the
//! same), and [`reap_containers`] kills the shims and containers its data dir records, unmounts
//! their root filesystems, deletes their network namespaces, the bridge and its NAT rules.
//!
//! Only commands (`runc`, `ip`, `iptables`) and files: the kit knows no aloft crate.

use std::path::Path;
use std::process::{Command, Stdio};

/// The `--bridge` and `--subnet` of a test agent on `data_dir`: `alt` + 8 hex digits of a hash
/// of the path, and a /26 of 100.64.0.0/10 from the same hash (the runtime's own tests use
/// 10.210–249, real agents 10.209.0.0/16).
pub fn network_for(data_dir: &Path) -> (String, String) {
    let h = fnv(data_dir.as_os_str().as_encoded_bytes());
    let bridge = format!("alt{:08x}", h as u32);
    let s = (h >> 32) as u32 & 0xffff;
    let subnet = format!(
        "100.{}.{}.{}/26",
        64 + ((s >> 10) & 63),
        (s >> 2) & 255,
        (s & 3) * 64
    );
    (bridge, subnet)
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Kills and removes every container the agent on `data_dir` left, then its network: bridge,
/// nftables tables and any iptables rules of older agents (call once no agent runs there).
pub fn reap_containers(data_dir: &Path) {
    let runtime = data_dir.join("runtime");
    let containers = runtime.join("containers");
    if let Ok(entries) = std::fs::read_dir(&containers) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let id = entry.file_name().to_string_lossy().into_owned();
            for file in ["shim.pid", "init.pid"] {
                let pid = std::fs::read_to_string(dir.join(file))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok());
                if let Some(pid) = pid.filter(|p| *p > 1) {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let ours = file == "init.pid"
                        || cmdline
                            .split(|b| *b == 0)
                            .any(|a| a == dir.as_os_str().as_encoded_bytes());
                    if ours {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            quiet(
                Command::new("runc")
                    .arg("--root")
                    .arg(runtime.join("runc"))
                    .args(["delete", "--force", &id]),
            );
            let _ = nix::mount::umount2(&dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if let Ok(entries) = std::fs::read_dir(runtime.join("net")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                quiet(Command::new("ip").args(["netns", "del", &format!("aloft-{id}")]));
            }
        }
    }
    let (bridge, _) = network_for(data_dir);
    if Path::new("/sys/class/net").join(&bridge).exists() {
        quiet(Command::new("ip").args(["link", "del", &bridge]));
    }
    for family in ["inet", "bridge"] {
        quiet(Command::new("nft").args(["delete", "table", family, &format!("aloft-{bridge}")]));
    }
    let comment = format!("aloft:{bridge}");
    for table in ["nat", "filter"] {
        let Ok(out) = Command::new("iptables").args(["-t", table, "-S"]).output() else {
            continue;
        };
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            if !rule.contains(&comment) {
                continue;
            }
            let Some(spec) = rule.strip_prefix("-A ") else {
                continue;
            };
            let Some(args) = shlex::split(spec) else {
                continue;
            };
            quiet(
                Command::new("iptables")
                    .args(["-t", table, "-D"])
                    .args(args),
            );
        }
    }
}
