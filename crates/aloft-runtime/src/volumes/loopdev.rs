//! Loop devices of volume images: found by their backing file in sysfs
//! (`/sys/block/loopN/loop/backing_file`), attached and freed with `losetup`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run, VolumeError};

/// Every loop device and the file behind it (the kernel appends ` (deleted)` to a removed one).
fn devices() -> Vec<(PathBuf, String)> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some((
                Path::new("/dev").join(name),
                backing.trim_end_matches('\n').to_string(),
            ))
        })
        .collect()
}

/// The loop devices backed by `image`.
pub(super) fn find(image: &Path) -> Vec<PathBuf> {
    let Ok(image) = image.canonicalize() else {
        return Vec::new();
    };
    let image = image.to_string_lossy();
    devices()
        .into_iter()
        .filter(|(_, backing)| *backing == image)
        .map(|(device, _)| device)
        .collect()
}

/// Loop devices whose backing file under `root` was deleted.
pub(super) fn deleted_under(root: &Path) -> Vec<PathBuf> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let root = root.to_string_lossy().into_owned();
    devices()
        .into_iter()
        .filter(|(_, backing)| backing.starts_with(&root) && backing.ends_with(" (deleted)"))
        .map(|(device, _)| device)
        .collect()
}

/// The loop device of `image`: the one already attached, else a new one (direct IO when the
/// host filesystem allows it).
pub(super) fn attach(id: &str, image: &Path) -> Result<PathBuf, VolumeError> {
    if let Some(device) = find(image).into_iter().next() {
        return Ok(device);
    }
    let out = Command::new("losetup")
        .args(["--find", "--show", "--direct-io=on"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| VolumeError::new(id, format!("cannot run losetup: {e}")))?;
    if !out.status.success() {
        return Err(VolumeError::new(
            id,
            format!(
                "losetup cannot attach {} ({}): {}",
                image.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(device))
}

/// Frees a loop device (deferred by the kernel until its last user is gone).
pub(super) fn detach(id: &str, device: &Path) -> Result<(), VolumeError> {
    run(id, Command::new("losetup").arg("-d").arg(device))
}

/// Whether a loop device is in use by a mounted filesystem, in any mount namespace (it is
/// claimed exclusively then: `O_EXCL` fails with EBUSY).
pub(super) fn busy(device: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    matches!(
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(device),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY)
    )
}
