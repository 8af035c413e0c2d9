//! Reaping the volumes an agent left: an agent never unmounts a volume a machine may use (the
//! mounts and loop devices belong to the host and outlive it), so a test's data dir would keep
//! them. [`reap_volumes`] unmounts every mount under `<data-dir>/volumes` and frees the loop
//! devices whose image is there; [`volume_leftovers`] tells a test what is still attached.

use std::path::Path;

/// Mount points under `dir`, deepest first (from `/proc/self/mountinfo`).
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// Loop devices backed by a file under `dir` (`/dev/loopN`, backing file).
fn loops_under(dir: &Path) -> Vec<(String, String)> {
    let dir = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim().to_string();
            backing
                .starts_with(&dir)
                .then(|| (format!("/dev/{name}"), backing))
        })
        .collect()
}

/// What is still mounted or attached of the volumes under `data_dir`, one line each (empty
/// when everything was freed).
pub fn volume_leftovers(data_dir: &Path) -> Vec<String> {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let dir = dir.join("volumes");
    let mut out: Vec<String> = mounts_under(&dir)
        .into_iter()
        .map(|m| format!("mounted: {m}"))
        .collect();
    out.extend(
        loops_under(&dir)
            .into_iter()
            .map(|(d, f)| format!("loop device {d}: {f}")),
    );
    out
}

/// Unmounts the volumes under `data_dir` and frees their loop devices.
pub fn reap_volumes(data_dir: &Path) {
    let dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let dir = dir.join("volumes");
    for m in mounts_under(&dir) {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    for (device, _) in loops_under(&dir) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&device)
            .status();
    }
}
