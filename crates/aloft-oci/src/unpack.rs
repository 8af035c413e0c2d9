//! One layer blob (tar, gzip or zstd) → `layers/<diff-id hex>/`, a directory overlayfs can use as a
//! lower layer.
//!
//! - Atomic and idempotent: unpacked into a temporary directory, checked, then renamed; a layer
//!   already there is not unpacked again.
//! - Faithful: modes, uid/gid (when root), mtimes, xattrs, symlinks, hard links within the layer,
//!   FIFOs, and device nodes when root.
//! - OCI whiteouts become overlayfs ones: `.wh.NAME` → a character device 0:0 named `NAME`;
//!   `.wh..wh..opq` → xattr `trusted.overlay.opaque=y` on its directory (both need root).
//! - Confined: an entry named with `..` or an absolute path, or reached through a symlink
//!   leaving the layer, is refused with an error naming it.
//! - Verified: the sha256 of the uncompressed tar must equal the config's diff_id.
//!
//! Layers may be plain tars, gzip or zstd (any number of frames; `ruzstd`, pure Rust).

use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::digest::{Digest, Hasher};
use crate::error::{OciError, OciResult};
use crate::manifest::Compression;

/// xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// An unpacked layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackedLayer {
    pub dir: PathBuf,
    /// Sum of its regular files' sizes.
    pub size: u64,
}

/// Where a layer of `diff_id` is (or would be) unpacked under `layers_dir`.
pub fn layer_dir(layers_dir: &Path, diff_id: &Digest) -> PathBuf {
    layers_dir.join(diff_id.hex())
}

fn size_file(layers_dir: &Path, diff_id: &Digest) -> PathBuf {
    layers_dir.join(format!("{}.size", diff_id.hex()))
}

/// Unpacks the layer blob at `blob` (digest `layer`, of `media_type`) into
/// `layers_dir/<diff_id hex>/`, through a temporary directory in `tmp_dir` (same filesystem).
pub fn unpack_layer(
    blob: &Path,
    media_type: &str,
    layer: &Digest,
    diff_id: &Digest,
    layers_dir: &Path,
    tmp_dir: &Path,
) -> OciResult<UnpackedLayer> {
    let dest = layer_dir(layers_dir, diff_id);
    if dest.is_dir() {
        let size = std::fs::read_to_string(size_file(layers_dir, diff_id))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        return Ok(UnpackedLayer { dir: dest, size });
    }
    let declared = Compression::of_layer(media_type)?;
    let mut file = BufReader::with_capacity(
        256 * 1024,
        std::fs::File::open(blob).map_err(OciError::io(blob))?,
    );
    let compression = sniff(&mut file)
        .map_err(OciError::io(blob))?
        .unwrap_or(declared);
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(ZstdFrames {
            source: file,
            decoder: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!("layer-{}-", diff_id.hex()))
        .tempdir_in(tmp_dir)
        .map_err(OciError::io(tmp_dir))?;
    let mut hashing = HashingReader {
        inner: decoded,
        hasher: Hasher::default(),
    };
    let size = unpack_tar(&mut hashing, tmp.path(), layer)?;
    // The tar's end-of-archive blocks count in the diff_id too.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(OciError::io(blob))?;
    let actual = hashing.hasher.finish();
    if &actual != diff_id {
        return Err(OciError::DiffIdMismatch {
            layer: layer.clone(),
            expected: diff_id.clone(),
            actual,
        });
    }
    use std::os::unix::fs::PermissionsExt;
    let root_meta = std::fs::metadata(tmp.path()).map_err(OciError::io(tmp.path()))?;
    if root_meta.permissions().mode() & 0o777 == 0o700 {
        // The temporary directory's own mode, not one the layer set for `/`.
        let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755));
    }
    let size_path = size_file(layers_dir, diff_id);
    std::fs::write(&size_path, size.to_string()).map_err(OciError::io(&size_path))?;
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => {}
        // Unpacked meanwhile by someone else: theirs is identical.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(OciError::io(&dest)(e));
        }
    }
    Ok(UnpackedLayer { dir: dest, size })
}

/// The compression the first bytes show, if they show one.
fn sniff(r: &mut BufReader<std::fs::File>) -> std::io::Result<Option<Compression>> {
    use std::io::BufRead;
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    })
}

/// A zstd stream of any number of frames (skippable ones skipped), decoded as it is read
/// (`ruzstd`, pure Rust: no C library to build).
struct ZstdFrames<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    /// Whether `decoder` holds a frame not yet read to its end.
    in_frame: bool,
}

impl<R: std::io::BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        use ruzstd::decoding::BlockDecodingStrategy;
        loop {
            if !self.in_frame {
                if self.source.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.decoder.init(&mut self.source) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        let skipped = std::io::copy(
                            &mut (&mut self.source).take(length.into()),
                            &mut std::io::sink(),
                        )?;
                        if skipped != u64::from(length) {
                            return Err(std::io::Error::other("truncated skippable zstd frame"));
                        }
                        continue;
                    }
                    Err(e) => return Err(std::io::Error::other(e)),
                }
            }
            while self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(std::io::Error::other)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done; the stream may hold another.
            self.in_frame = false;
        }
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The entry's path inside the layer, refused when it could leave it.
fn confined_path(raw: &Path, layer: &Digest) -> OciResult<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(OciError::Unpack {
                    layer: layer.clone(),
                    entry: raw.display().to_string(),
                    why: "escapes the layer (absolute path or `..`); the layer is refused".into(),
                })
            }
        }
    }
    Ok(out)
}

/// Creates `rel`'s directories under `root`, refusing to pass through a symlink (which could
/// lead out of the layer).
fn confined_dirs(root: &Path, rel: &Path, layer: &Digest, entry: &str) -> OciResult<PathBuf> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(OciError::Unpack {
                    layer: layer.clone(),
                    entry: entry.into(),
                    why: format!(
                        "goes through the symlink {}; the layer is refused",
                        rel.display()
                    ),
                })
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir(&at).map_err(OciError::io(&at))?,
        }
    }
    Ok(at)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Unpacks a tar stream into `root`; returns the sum of its regular files' sizes.
fn unpack_tar(reader: impl Read, root: &Path, layer: &Digest) -> OciResult<u64> {
    let root_user = is_root();
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_ownerships(root_user);
    let bad = |entry: &str, why: String| OciError::Unpack {
        layer: layer.clone(),
        entry: entry.into(),
        why,
    };
    let entries = archive
        .entries()
        .map_err(|e| bad("(archive)", format!("is not a tar: {e}")))?;
    let mut size = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad("(next entry)", format!("cannot be read: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| bad("(name)", format!("has a bad name: {e}")))?
            .into_owned();
        let name = raw.display().to_string();
        let rel = confined_path(&raw, layer)?;
        let Some(file_name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the layer's root itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let kind = entry.header().entry_type();
        if file_name == OPAQUE_MARKER {
            let dir = confined_dirs(root, parent_rel, layer, &name)?;
            xattr::set(&dir, OPAQUE_XATTR, b"y").map_err(|e| {
                bad(
                    &name,
                    format!("cannot mark its directory opaque ({e}); unpacking images needs root"),
                )
            })?;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            let dir = confined_dirs(root, parent_rel, layer, &name)?;
            let target = dir.join(hidden);
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| {
                bad(
                    &name,
                    format!(
                        "cannot become an overlayfs whiteout ({e}); unpacking images needs root"
                    ),
                )
            })?;
            continue;
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            if !root_user && !kind.is_fifo() {
                continue; // only root can make device nodes; a container would not get them either
            }
            let dir = confined_dirs(root, parent_rel, layer, &name)?;
            let target = dir.join(&file_name);
            let h = entry.header();
            let mode = h.mode().unwrap_or(0o644);
            let (major, minor) = (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            );
            let flag = if kind.is_character_special() {
                SFlag::S_IFCHR
            } else if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            let _ = std::fs::remove_file(&target);
            mknod(
                &target,
                flag,
                Mode::from_bits_truncate(mode),
                makedev(major.into(), minor.into()),
            )
            .map_err(|e| bad(&name, format!("cannot be created: {e}")))?;
            if root_user {
                let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
                let _ = nix::unistd::chown(
                    &target,
                    Some(nix::unistd::Uid::from_raw(uid as u32)),
                    Some(nix::unistd::Gid::from_raw(gid as u32)),
                );
            }
            continue;
        }
        // An overlayfs xattr carried in the tar (opaque, redirect, metacopy…) would let a layer
        // change what the merged filesystem shows beyond its own files.
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if ext
                    .key_bytes()
                    .starts_with(b"SCHILY.xattr.trusted.overlay.")
                {
                    return Err(bad(
                        &name,
                        format!(
                            "carries the overlayfs attribute {:?}; the layer is refused",
                            String::from_utf8_lossy(&ext.key_bytes()["SCHILY.xattr.".len()..])
                        ),
                    ));
                }
            }
        }
        if kind.is_file() || kind.is_contiguous() {
            size += entry.size();
        }
        entry.set_preserve_permissions(true);
        entry.set_preserve_mtime(true);
        entry.set_unpack_xattrs(root_user);
        // tar refuses (with its own error) what would land outside `root`, symlinks included.
        let unpacked = entry
            .unpack_in(root)
            .map_err(|e| bad(&name, format!("cannot be unpacked: {e}")))?;
        if !unpacked {
            return Err(bad(&name, "escapes the layer; the layer is refused".into()));
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testing::{gzip, raw_tar_file, tar, Entry};
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    struct Dirs {
        _t: tempfile::TempDir,
        layers: PathBuf,
        tmp: PathBuf,
        blob: PathBuf,
    }

    fn dirs() -> Dirs {
        let t = tempfile::tempdir().unwrap();
        let (layers, tmp) = (t.path().join("layers"), t.path().join("tmp"));
        std::fs::create_dir_all(&layers).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        Dirs {
            blob: t.path().join("blob"),
            _t: t,
            layers,
            tmp,
        }
    }

    fn unpack(d: &Dirs, tar: &[u8], compress: bool) -> OciResult<UnpackedLayer> {
        let bytes = if compress { gzip(tar) } else { tar.to_vec() };
        std::fs::write(&d.blob, &bytes).unwrap();
        let mt = if compress {
            GZ
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        unpack_layer(
            &d.blob,
            mt,
            &Digest::of_bytes(&bytes),
            &Digest::of_bytes(tar),
            &d.layers,
            &d.tmp,
        )
    }

    #[test]
    fn unpacks_files_links_and_modes_once() {
        let d = dirs();
        let t = tar(&[
            Entry::Dir("usr/bin"),
            Entry::File("usr/bin/tool", b"#!/bin/sh\n", 0o4755),
            Entry::Symlink("bin", "usr/bin"),
            Entry::Hardlink("usr/bin/tool2", "usr/bin/tool"),
            Entry::File("etc/secret", b"s", 0o600),
        ]);
        let got = unpack(&d, &t, true).unwrap();
        assert_eq!(got.size, 11);
        let tool = got.dir.join("usr/bin/tool");
        assert_eq!(
            std::fs::metadata(&tool).unwrap().permissions().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            std::fs::read_link(got.dir.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert_eq!(
            std::fs::metadata(got.dir.join("usr/bin/tool2"))
                .unwrap()
                .ino(),
            std::fs::metadata(&tool).unwrap().ino()
        );
        assert_eq!(
            std::fs::metadata(got.dir.join("etc/secret"))
                .unwrap()
                .mode()
                & 0o777,
            0o600
        );
        // Idempotent: the same directory comes back, nothing is left in tmp.
        std::fs::write(got.dir.join("marker"), "").unwrap();
        let again = unpack(&d, &t, true).unwrap();
        assert_eq!(again, got);
        assert!(again.dir.join("marker").exists());
        assert_eq!(std::fs::read_dir(&d.tmp).unwrap().count(), 0);
        // Plain tars work too.
        let plain = tar(&[Entry::File("a", b"1", 0o644)]);
        assert!(unpack(&d, &plain, false).unwrap().dir.join("a").is_file());
    }

    #[test]
    fn zstd_layers_of_several_frames_unpack() {
        use ruzstd::encoding::{compress_to_vec, CompressionLevel};
        let d = dirs();
        let t = tar(&[
            Entry::File("one", &[7u8; 5000], 0o644),
            Entry::File("two", b"2", 0o644),
        ]);
        // Two frames with a skippable frame between them, as zstd:chunked writes.
        let (head, tail) = t.split_at(3000);
        let mut blob = compress_to_vec(head, CompressionLevel::Fastest);
        blob.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        blob.extend_from_slice(&4u32.to_le_bytes());
        blob.extend_from_slice(b"meta");
        blob.extend(compress_to_vec(tail, CompressionLevel::Fastest));
        std::fs::write(&d.blob, &blob).unwrap();
        let got = unpack_layer(
            &d.blob,
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &Digest::of_bytes(&blob),
            &Digest::of_bytes(&t),
            &d.layers,
            &d.tmp,
        )
        .unwrap();
        assert_eq!(std::fs::read(got.dir.join("one")).unwrap(), [7u8; 5000]);
        assert_eq!(std::fs::read(got.dir.join("two")).unwrap(), b"2");
    }

    #[test]
    fn entries_escaping_the_layer_are_refused() {
        for name in ["../evil", "/etc/evil", "a/../../evil"] {
            let d = dirs();
            let err = unpack(&d, &raw_tar_file(name, b"x"), true)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("escapes the layer") && err.contains(name),
                "{name}: {err}"
            );
            assert_eq!(std::fs::read_dir(&d.layers).unwrap().count(), 0);
            assert_eq!(
                std::fs::read_dir(&d.tmp).unwrap().count(),
                0,
                "no temporary left"
            );
        }
        // Through a symlink pointing out of the layer.
        let d = dirs();
        let outside = tempfile::tempdir().unwrap();
        let t = tar(&[
            Entry::Symlink("out", outside.path().to_str().unwrap()),
            Entry::File("out/evil", b"x", 0o644),
        ]);
        let err = unpack(&d, &t, true).unwrap_err().to_string();
        assert!(err.contains("out/evil"), "{err}");
        assert!(!outside.path().join("evil").exists());
        let t = tar(&[
            Entry::Symlink("out", outside.path().to_str().unwrap()),
            Entry::File("out/.wh.x", b"", 0o644),
        ]);
        let err = unpack(&d, &t, true).unwrap_err().to_string();
        assert!(err.contains("goes through the symlink"), "{err}");
    }

    #[test]
    fn overlayfs_xattrs_in_a_layer_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "d", &[][..]).unwrap();
        let d = dirs();
        let err = unpack(&d, &b.into_inner().unwrap(), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trusted.overlay.redirect"), "{err}");
        assert_eq!(std::fs::read_dir(&d.layers).unwrap().count(), 0);
    }

    #[test]
    fn a_layer_that_does_not_match_its_diff_id_is_refused() {
        let d = dirs();
        let t = tar(&[Entry::File("a", b"1", 0o644)]);
        let gz = gzip(&t);
        std::fs::write(&d.blob, &gz).unwrap();
        let wrong = Digest::of_bytes(b"other");
        let err = unpack_layer(
            &d.blob,
            GZ,
            &Digest::of_bytes(&gz),
            &wrong,
            &d.layers,
            &d.tmp,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("image config says") && err.contains(wrong.as_str()),
            "{err}"
        );
        assert!(!layer_dir(&d.layers, &wrong).exists());
    }

    #[test]
    fn whiteouts_become_overlayfs_whiteouts() {
        if !aloft_testkit::privileged_or_skip("whiteouts_become_overlayfs_whiteouts", root_or_why())
        {
            return;
        }
        let d = dirs();
        let t = tar(&[
            Entry::File("etc/.wh.gone", b"", 0o644),
            Entry::File("var/cache/.wh..wh..opq", b"", 0o644),
            Entry::File("var/cache/new", b"n", 0o644),
        ]);
        let got = unpack(&d, &t, true).unwrap();
        let wh = std::fs::symlink_metadata(got.dir.join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!got.dir.join("etc/.wh.gone").exists());
        assert_eq!(
            xattr::get(got.dir.join("var/cache"), OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(!got.dir.join("var/cache/.wh..wh..opq").exists());
        // Device nodes and FIFOs are made as the layer describes them.
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, major, minor) in [
            ("dev/null", tar::EntryType::Char, 1, 3),
            ("run/fifo", tar::EntryType::Fifo, 0, 0),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(0o666);
            h.set_size(0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            b.append_data(&mut h, name, &[][..]).unwrap();
        }
        let got = unpack(&d, &b.into_inner().unwrap(), true).unwrap();
        let null = std::fs::symlink_metadata(got.dir.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert!(std::fs::symlink_metadata(got.dir.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    /// Whiteouts and opaque directories really hide the lower layer's files under overlayfs.
    #[test]
    fn whiteouts_hide_lower_files_when_mounted() {
        if !aloft_testkit::privileged_or_skip(
            "whiteouts_hide_lower_files_when_mounted",
            root_or_why(),
        ) {
            return;
        }
        let d = dirs();
        let lower = unpack(
            &d,
            &tar(&[
                Entry::File("etc/keep", b"k", 0o644),
                Entry::File("etc/gone", b"g", 0o644),
                Entry::File("cache/old1", b"1", 0o644),
                Entry::File("cache/old2", b"2", 0o644),
            ]),
            true,
        )
        .unwrap();
        let upper = unpack(
            &d,
            &tar(&[
                Entry::File("etc/.wh.gone", b"", 0o644),
                Entry::File("cache/.wh..wh..opq", b"", 0o644),
                Entry::File("cache/new", b"n", 0o644),
            ]),
            true,
        )
        .unwrap();
        let mnt = tempfile::tempdir().unwrap();
        let opts = format!("lowerdir={}:{}", upper.dir.display(), lower.dir.display());
        let mounted = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt.path())
            .status();
        if !matches!(mounted, Ok(s) if s.success()) {
            assert!(
                aloft_testkit::privileged_or_skip(
                    "whiteouts_hide_lower_files_when_mounted",
                    Err("cannot mount overlayfs here".into())
                ),
                "unreachable"
            );
            return;
        }
        let names = |p: &str| {
            let mut v: Vec<String> = std::fs::read_dir(mnt.path().join(p))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let (etc, cache) = (names("etc"), names("cache"));
        let _ = std::process::Command::new("umount")
            .arg(mnt.path())
            .status();
        assert_eq!(etc, ["keep"]);
        assert_eq!(cache, ["new"]);
    }

    fn root_or_why() -> Result<(), String> {
        if is_root() {
            Ok(())
        } else {
            Err("needs root (mknod, trusted xattrs, mount)".into())
        }
    }
}
