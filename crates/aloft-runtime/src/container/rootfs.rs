//! A container's root filesystem: the image's layers, read-only, under a writable layer of its
//! own, joined by overlayfs at `<dir>/rootfs`. The writable layer (`upper/`, with overlayfs'
//! `work/`) is emptied at every start, as a Fly machine's root filesystem is reset from its
//! image: what must persist belongs on a volume.
//!
//! Limits: overlayfs takes the layer list in the mount's option string, which the kernel caps at
//! one page (4096 bytes): with layers under `<data-dir>/oci/layers/<64 hex>` that is some 40
//! layers, more than images usually have.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The mount point inside a container's directory.
pub fn rootfs_dir(dir: &Path) -> PathBuf {
    dir.join("rootfs")
}

/// Resets the writable layer and mounts the overlay of `layers` (bottom → top) at
/// [`rootfs_dir`]. A mount left by an earlier run is replaced.
pub fn mount_overlay(dir: &Path, layers: &[PathBuf]) -> io::Result<()> {
    unmount(dir);
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work] {
        match fs::remove_dir_all(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::create_dir_all(d)?;
    }
    let rootfs = rootfs_dir(dir);
    fs::create_dir_all(&rootfs)?;
    let empty = dir.join("empty");
    let mut lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    if lower.is_empty() {
        fs::create_dir_all(&empty)?;
        lower.push(empty.display().to_string());
    }
    if let Some(bad) = lower.iter().find(|l| l.contains([':', ','])) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("layer path {bad:?} contains ':' or ',', which overlayfs cannot take"),
        ));
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| io::Error::other(format!("mount overlay at {}: {e}", rootfs.display())))
}

/// Unmounts the root filesystem if mounted (lazily: a process still inside cannot block it).
pub fn unmount(dir: &Path) {
    let rootfs = rootfs_dir(dir);
    while umount2(&rootfs, MntFlags::MNT_DETACH).is_ok() {}
}

/// Whether `dir`'s root filesystem is mounted now.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = rootfs_dir(dir);
    let target = target.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == target))
}
