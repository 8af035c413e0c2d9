//! Volumes on the host: a volume is a sparse ext4 image file with an enforced size, attached to
//! a loop device and mounted on the host while a machine may use it; a container machine gets
//! the mount bind-mounted at its `mounts[].path` (`container::spec`).
//!
//! Layout under the agent's `<data-dir>/volumes`:
//! - `<vol_id>/disk.img`: the filesystem (`mkfs.ext4`, no reserved blocks), sparse: it takes
//!   only the space written. Its apparent size is the volume's size (GiB: `size_gb << 30`), so
//!   writing past it fails with ENOSPC inside the machine and the host's disk is never filled
//!   beyond it.
//! - `<vol_id>/mnt`: where it is mounted (from the loop device; `losetup`).
//! - `snapshots/<snap_id>.img`: a snapshot, a sparse copy of the image taken while the
//!   filesystem is frozen (`fsfreeze`), so it is consistent; kept after its volume is destroyed.
//!
//! Why an image on a loop device (and not a directory with a project quota): the size holds for
//! any host filesystem (quotas need ext4/xfs with project quotas enabled at mount time), a
//! snapshot or fork is a copy of one file, and growing is `truncate` + `losetup -c` +
//! `resize2fs`, online where the host allows it (`CAP_SYS_RESOURCE`), else offline at the next
//! mount (`e2fsck -f` + `resize2fs` on the image, only when no machine has it mounted). Loop devices with direct IO (`--direct-io=on`, where the host filesystem
//! takes it) skip the double page cache: `bench/volumes.sh` compares it to the host filesystem.
//!
//! Attaching is idempotent ([`VolumeHost::mount`]): the loop device of an image is found again
//! by its backing file (`/sys/block/loop*/loop/backing_file`) and a mount by
//! `/proc/self/mountinfo`, so an agent killed with `kill -9` finds what its predecessor set up;
//! never two loop devices on one image (two filesystems over the same blocks would corrupt it).
//! [`VolumeHost::keep_only`] frees the mounts and loop devices of volumes the agent no longer
//! knows. Mounts and loop devices belong to the host, not to the agent's process: machines keep
//! their data while no agent runs.
//!
//! Needs root and loop devices ([`VolumeHost::available`]); without them volumes are refused
//! with the reason. Only container machines mount volumes (the agent refuses a mount on a
//! host-process machine: it shares the host's filesystem and has no root of its own to mount
//! into).

mod loopdev;
mod mountinfo;
mod superblock;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Bytes in one volume GB (GiB, as `df -h` shows it).
pub const GB: u64 = 1 << 30;

/// A volume mounted into a machine: the host directory and the path inside the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeBind {
    pub source: PathBuf,
    pub destination: String,
}

/// A volume operation that failed, with what to do.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume}: {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
    /// The host's disk is full.
    pub disk_full: bool,
}

impl VolumeError {
    fn new(volume: &str, message: impl Into<String>) -> VolumeError {
        VolumeError {
            volume: volume.to_string(),
            message: message.into(),
            disk_full: false,
        }
    }
    fn io(volume: &str, what: &str, path: &Path, e: std::io::Error) -> VolumeError {
        VolumeError {
            volume: volume.to_string(),
            disk_full: e.kind() == std::io::ErrorKind::StorageFull,
            message: format!("{what} {}: {e}", path.display()),
        }
    }
}

/// Where a new volume's data comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A new empty filesystem.
    Empty,
    /// A copy of this snapshot.
    Snapshot(String),
    /// A copy of this volume's current data (a fork).
    Volume(String),
}

/// Filesystem figures of a mounted volume (`statvfs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeStats {
    pub block_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
}

/// When an extended volume's filesystem has its new size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grown {
    /// Now, while mounted.
    Online,
    /// At its next mount (it is not mounted, or the host refuses online resizing).
    AtNextMount,
}

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Bytes allocated on the host.
    pub size: u64,
}

/// The volumes of one agent (see the module docs).
pub struct VolumeHost {
    root: PathBuf,
    /// One lock per volume: attach, detach, extend, copy and destroy of a volume never overlap.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl VolumeHost {
    /// The volumes under `root` (`<data-dir>/volumes`), or why this host cannot have any.
    pub fn new(root: PathBuf) -> Result<VolumeHost, String> {
        available()?;
        for dir in [root.clone(), root.join("snapshots")] {
            fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        Ok(VolumeHost {
            root,
            locks: Mutex::default(),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
    fn image(&self, id: &str) -> PathBuf {
        self.dir(id).join("disk.img")
    }
    /// Where volume `id` is mounted on the host while attached.
    pub fn mount_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("mnt")
    }
    fn snapshot_file(&self, snapshot_id: &str) -> PathBuf {
        self.root
            .join("snapshots")
            .join(format!("{snapshot_id}.img"))
    }

    fn lock(&self, id: &str) -> Arc<Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Makes volume `id` of `size_gb` from `source`. A copy is at least as large as its source
    /// (it grows to `size_gb` at its first mount). On failure nothing is left behind.
    pub fn create(&self, id: &str, size_gb: u32, source: &Source) -> Result<(), VolumeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.dir(id);
        if dir.exists() {
            return Err(VolumeError::new(
                id,
                format!("{} exists already", dir.display()),
            ));
        }
        let made = self.create_in(id, size_gb, source);
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    fn create_in(&self, id: &str, size_gb: u32, source: &Source) -> Result<(), VolumeError> {
        let dir = self.dir(id);
        fs::create_dir_all(self.mount_dir(id))
            .map_err(|e| VolumeError::io(id, "cannot create", &dir, e))?;
        let image = self.image(id);
        match source {
            Source::Empty => {
                let f = fs::File::create(&image)
                    .map_err(|e| VolumeError::io(id, "cannot create", &image, e))?;
                f.set_len(u64::from(size_gb) * GB)
                    .map_err(|e| VolumeError::io(id, "cannot size", &image, e))?;
                drop(f);
                run(
                    id,
                    Command::new("mkfs.ext4")
                        .args(["-q", "-F", "-m", "0", "-L"])
                        .arg(label(id))
                        .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
                        .arg(&image),
                )?;
            }
            Source::Snapshot(snapshot) => {
                let from = self.snapshot_file(snapshot);
                if !from.exists() {
                    return Err(VolumeError::new(
                        id,
                        format!(
                            "snapshot {snapshot} has no data on this host ({} is missing)",
                            from.display()
                        ),
                    ));
                }
                sparse_copy(id, &from, &image)?;
            }
            Source::Volume(source) => {
                let lock = self.lock(source);
                let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                self.frozen_copy(source, &image).map_err(|e| {
                    VolumeError::new(id, format!("cannot copy volume {source}: {}", e.message))
                })?;
            }
        }
        let want = u64::from(size_gb) * GB;
        let len = fs::metadata(&image)
            .map_err(|e| VolumeError::io(id, "cannot read", &image, e))?
            .len();
        if want > len {
            fs::OpenOptions::new()
                .write(true)
                .open(&image)
                .and_then(|f| f.set_len(want))
                .map_err(|e| VolumeError::io(id, "cannot grow", &image, e))?;
        }
        Ok(())
    }

    /// Copies volume `id`'s image to `to`, its filesystem frozen meanwhile if it is mounted (the
    /// caller holds `id`'s lock).
    fn frozen_copy(&self, id: &str, to: &Path) -> Result<(), VolumeError> {
        let image = self.image(id);
        if !image.exists() {
            return Err(VolumeError::new(id, "it has no data on this host"));
        }
        let mnt = self.mount_dir(id);
        if !mountinfo::is_mounted(&mnt) {
            return sparse_copy(id, &image, to);
        }
        run(id, Command::new("fsfreeze").arg("-f").arg(&mnt))?;
        let copied = sparse_copy(id, &image, to);
        let thawed = run(id, Command::new("fsfreeze").arg("-u").arg(&mnt));
        copied.and(thawed)
    }

    /// Attaches volume `id` to a loop device and mounts it (idempotent: what is attached and
    /// mounted already is reused), its filesystem grown to its image's size where it can be
    /// (see [`VolumeHost::extend`]); the mount directory.
    pub fn mount(&self, id: &str) -> Result<PathBuf, VolumeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.image(id);
        if !image.exists() {
            return Err(VolumeError::new(
                id,
                format!("its image {} is missing on this host", image.display()),
            ));
        }
        let mnt = self.mount_dir(id);
        if mountinfo::is_mounted(&mnt) {
            if self.grow_online(id, &image)? {
                return Ok(mnt);
            }
            // Growth refused online: unmounted here, so it grows offline below unless a
            // machine still has it.
            self.unmount_here(id)?;
        }
        // Not mounted here. A loop device still in use (mounted in a running machine's mount
        // namespace) is reused as it is; an idle one is freed, so the filesystem can be grown
        // offline first.
        let devices = loopdev::find(&image);
        let in_use = devices.iter().any(|d| loopdev::busy(d));
        if !in_use {
            for d in &devices {
                loopdev::detach(id, d)?;
            }
            if superblock::needs_growth(&image) {
                run(id, Command::new("e2fsck").args(["-f", "-p"]).arg(&image))?;
                run(id, Command::new("resize2fs").arg(&image))?;
            }
        }
        let device = loopdev::attach(id, &image)?;
        fs::create_dir_all(&mnt).map_err(|e| VolumeError::io(id, "cannot create", &mnt, e))?;
        nix::mount::mount(
            Some(device.as_path()),
            &mnt,
            Some("ext4"),
            nix::mount::MsFlags::MS_NOATIME,
            None::<&str>,
        )
        .map_err(|e| {
            VolumeError::new(
                id,
                format!(
                    "cannot mount {} at {}: {e}",
                    device.display(),
                    mnt.display()
                ),
            )
        })?;
        if in_use {
            self.grow_online(id, &image)?;
        }
        Ok(mnt)
    }

    /// Grows the mounted filesystem of `id` to its image's size, online; `Ok(false)` when the
    /// host does not allow it (online resizing needs `CAP_SYS_RESOURCE`, which some sandboxes
    /// drop): it grows offline at its next mount.
    fn grow_online(&self, id: &str, image: &Path) -> Result<bool, VolumeError> {
        if !superblock::needs_growth(image) {
            return Ok(true);
        }
        let Some(device) = loopdev::find(image).into_iter().next() else {
            return Ok(false);
        };
        match run(id, Command::new("resize2fs").arg(&device)) {
            Ok(()) => Ok(true),
            Err(e) if e.message.contains("Permission denied") => {
                tracing::warn!(volume = id, "this host refuses online resizing (no CAP_SYS_RESOURCE): the filesystem grows at the volume's next mount");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Unmounts volume `id` and frees its loop device (idempotent). A machine that still has
    /// it mounted keeps it until it ends (the loop device is freed then: autoclear).
    pub fn unmount(&self, id: &str) -> Result<(), VolumeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        self.unmount_locked(id)
    }

    /// Unmounts the host's mount of `id` (its loop device stays).
    fn unmount_here(&self, id: &str) -> Result<(), VolumeError> {
        let mnt = self.mount_dir(id);
        while mountinfo::is_mounted(&mnt) {
            nix::mount::umount2(&mnt, nix::mount::MntFlags::empty()).map_err(|e| {
                VolumeError::new(id, format!("cannot unmount {}: {e}", mnt.display()))
            })?;
        }
        Ok(())
    }

    fn unmount_locked(&self, id: &str) -> Result<(), VolumeError> {
        self.unmount_here(id)?;
        let image = self.image(id);
        for device in loopdev::find(&image) {
            loopdev::detach(id, &device)?;
        }
        Ok(())
    }

    /// Grows volume `id` to `size_gb`: the image, the loop device and, while it is mounted,
    /// the filesystem, online (the machine keeps running). Never shrinks. [`Grown::AtNextMount`]
    /// when the host refuses online resizing: the filesystem grows when the volume is next
    /// mounted (its machine's next start after a stop).
    pub fn extend(&self, id: &str, size_gb: u32) -> Result<Grown, VolumeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.image(id);
        let want = u64::from(size_gb) * GB;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .map_err(|e| VolumeError::io(id, "cannot open", &image, e))?;
        let len = f
            .metadata()
            .map_err(|e| VolumeError::io(id, "cannot read", &image, e))?
            .len();
        if want < len {
            return Err(VolumeError::new(
                id,
                format!("it is {} GB already; volumes only grow", len / GB),
            ));
        }
        f.set_len(want)
            .map_err(|e| VolumeError::io(id, "cannot grow", &image, e))?;
        drop(f);
        for device in loopdev::find(&image) {
            run(id, Command::new("losetup").arg("-c").arg(&device))?;
        }
        if !mountinfo::is_mounted(&self.mount_dir(id)) {
            return Ok(Grown::AtNextMount);
        }
        Ok(if self.grow_online(id, &image)? {
            Grown::Online
        } else {
            Grown::AtNextMount
        })
    }

    /// Takes snapshot `snapshot_id` of volume `id`: a consistent sparse copy of its image.
    pub fn snapshot(&self, id: &str, snapshot_id: &str) -> Result<SnapshotInfo, VolumeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let to = self.snapshot_file(snapshot_id);
        let tmp = to.with_extension("partial");
        let copied = self.frozen_copy(id, &tmp).and_then(|()| {
            fs::rename(&tmp, &to).map_err(|e| VolumeError::io(id, "cannot keep", &to, e))
        });
        if copied.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        copied?;
        Ok(SnapshotInfo {
            size: allocated_bytes(&to),
        })
    }

    /// Deletes snapshot `snapshot_id`'s copy (idempotent).
    pub fn remove_snapshot(&self, snapshot_id: &str) -> Result<(), VolumeError> {
        let file = self.snapshot_file(snapshot_id);
        match fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io(snapshot_id, "cannot remove", &file, e)),
        }
    }

    /// Removes volume `id`: unmounted, loop device freed, files deleted (idempotent).
    pub fn destroy(&self, id: &str) -> Result<(), VolumeError> {
        let lock = self.lock(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        self.unmount_locked(id)?;
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io(id, "cannot remove", &dir, e)),
        }
    }

    /// Figures of volume `id`'s filesystem while it is mounted.
    pub fn stats(&self, id: &str) -> Option<VolumeStats> {
        let mnt = self.mount_dir(id);
        if !mountinfo::is_mounted(&mnt) {
            return None;
        }
        let s = nix::sys::statvfs::statvfs(&mnt).ok()?;
        Some(VolumeStats {
            block_size: s.fragment_size() as u64,
            blocks: s.blocks() as u64,
            blocks_free: s.blocks_free() as u64,
            blocks_avail: s.blocks_available() as u64,
        })
    }

    /// At start-up: unmounts, detaches and deletes the volumes under the root that are not in
    /// `keep` (destroyed while no agent ran, or made by an agent killed before it recorded
    /// them), and frees loop devices whose image was deleted. Returns the ids removed.
    pub fn keep_only(&self, keep: &[String]) -> Vec<String> {
        let mut removed = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("vol_") && !keep.contains(&name) {
                    match self.destroy(&name) {
                        Ok(()) => removed.push(name),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot remove a volume no machine knows")
                        }
                    }
                }
            }
        }
        for device in loopdev::deleted_under(&self.root) {
            if let Err(e) = loopdev::detach("(deleted)", &device) {
                tracing::warn!(error = %e, "cannot free a stale loop device");
            }
        }
        removed
    }
}

/// Why volumes cannot be made on this host, if they cannot.
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err(
            "volumes need an agent running as root (they are ext4 images on loop devices)".into(),
        );
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(
            "volumes need loop devices and /dev/loop-control is missing (modprobe loop)".into(),
        );
    }
    for tool in ["mkfs.ext4", "e2fsck", "resize2fs", "losetup", "fsfreeze"] {
        if which(tool).is_none() {
            return Err(format!(
                "volumes need {tool}, which is not installed (Debian: apt-get install e2fsprogs util-linux)"
            ));
        }
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d: PathBuf| d.join(tool))
        .find(|p| p.is_file())
}

/// The ext4 label: at most 16 bytes.
fn label(id: &str) -> String {
    id.chars().take(16).collect()
}

/// Copies `from` to `to` keeping holes (`cp --sparse=always`).
fn sparse_copy(id: &str, from: &Path, to: &Path) -> Result<(), VolumeError> {
    run(
        id,
        Command::new("cp")
            .arg("--sparse=always")
            .arg("--")
            .arg(from)
            .arg(to),
    )
}

/// Bytes a file takes on disk.
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// Runs a tool; its stderr is the error.
fn run(id: &str, cmd: &mut Command) -> Result<(), VolumeError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| VolumeError::new(id, format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(VolumeError {
        volume: id.to_string(),
        disk_full: stderr.contains("No space left"),
        message: format!("{program} failed ({}): {}", out.status, stderr.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_ext4() {
        assert_eq!(label("vol_0123456789abcdefgh").len(), 16);
        assert_eq!(label("vol_1"), "vol_1");
    }
}
