//! App directory images: the CLI packs the app directory into a deterministic tar
//! (honouring `.dockerignore` and `.gitignore`), content-addressed by sha256 so an unchanged tree
//! has the same digest and is not re-sent; the agent unpacks it and runs the machines' commands
//! in it as host processes (the process runtime of apps without a Dockerfile: their command
//! comes from fly.toml alone). An app with a Dockerfile is built into an OCI image instead, by
//! the CLI's `build` module.
//!
//! Determinism: entries sorted by path, mtime 0, uid/gid 0, no user names, mode 0644 or 0755
//! (executable bit kept), symlinks kept as links. Directories are implied by their files.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("walking {path}: {message}")]
    Walk { path: PathBuf, message: String },
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("image entry {0:?} is not a plain relative path")]
    UnsafePath(String),
    #[error(
        "symlink {path:?} points outside the image (to {target:?}): an image is self-contained; \
         replace the link with a copy of what it points to, or with a link inside the app directory"
    )]
    EscapingLink { path: String, target: String },
    #[error("image digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("bad image digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A packed app directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedImage {
    /// `sha256:<hex>` of `tar`.
    pub digest: String,
    pub tar: Vec<u8>,
    /// Number of files packed.
    pub files: usize,
}

/// `sha256:<hex>` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for b in hash {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Checks the form `sha256:<64 lowercase hex>` (also accepts the bare hex) and returns the hex.
pub fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(ImageError::BadDigest(digest.to_string()))
    }
}

/// The files of `dir` that go into the image, relative, sorted: everything except what
/// `.dockerignore` / `.gitignore` / `.ignore` exclude, `.git/` and `.aloft/`.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    if !dir.is_dir() {
        return Err(ImageError::NotADirectory(dir.to_path_buf()));
    }
    let walker = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .parents(false)
        .add_custom_ignore_filename(".dockerignore")
        .follow_links(false)
        .filter_entry(|e| {
            !matches!(e.file_name().to_str(), Some(".git" | ".aloft")) || e.depth() == 0
        })
        .build();
    let mut files = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| ImageError::Walk {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(dir)
            .expect("walk stays under dir")
            .to_path_buf();
        files.push(rel);
    }
    files.sort();
    Ok(files)
}

/// Packs `dir` (see the module doc).
pub fn pack_dir(dir: &Path) -> Result<PackedImage, ImageError> {
    let files = list_files(dir)?;
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for rel in &files {
        let path = dir.join(rel);
        let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io(&path))?;
            check_link(rel, &target)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            builder
                .append_link(&mut header, rel, &target)
                .map_err(io(&path))?;
        } else {
            let data = fs::read(&path).map_err(io(&path))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(if is_executable(&meta) { 0o755 } else { 0o644 });
            builder
                .append_data(&mut header, rel, data.as_slice())
                .map_err(io(&path))?;
        }
    }
    let tar = builder.into_inner().map_err(io(dir))?;
    Ok(PackedImage {
        digest: digest_of(&tar),
        tar,
        files: files.len(),
    })
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

/// Unpacks an image into `dest` (created if needed) after checking its digest. Entries must be
/// plain relative paths (no `..`, no absolute paths); only files, directories and symlinks that
/// stay inside the image.
pub fn unpack(tar_bytes: &[u8], expected_digest: &str, dest: &Path) -> Result<(), ImageError> {
    let expected = digest_hex(expected_digest)?;
    let actual = digest_of(tar_bytes);
    if actual.strip_prefix("sha256:") != Some(expected) {
        return Err(ImageError::DigestMismatch {
            expected: expected_digest.to_string(),
            actual,
        });
    }
    unpack_from(tar_bytes, dest)
}

/// Unpacks a tar whose digest the caller has checked (see [`unpack`] for what is refused).
pub fn unpack_from(tar: impl std::io::Read, dest: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dest).map_err(io(dest))?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_mtime(false);
    for entry in archive.entries().map_err(io(dest))? {
        let mut entry = entry.map_err(io(dest))?;
        let rel = entry.path().map_err(io(dest))?.into_owned();
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(ImageError::UnsafePath(rel.display().to_string()));
        }
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(io(&dest.join(&rel)))?
                .unwrap_or_default();
            check_link(&rel, &target)?;
        }
        if !entry.unpack_in(dest).map_err(io(&dest.join(&rel)))? {
            return Err(ImageError::UnsafePath(rel.display().to_string()));
        }
    }
    Ok(())
}

/// Refuses a symlink at `rel` (relative to the image root) whose `target` is absolute or climbs
/// out of the image: the agent and, later, the proxy read image files, and must never be led to
/// the host's files through one.
fn check_link(rel: &Path, target: &Path) -> Result<(), ImageError> {
    let escaping = || ImageError::EscapingLink {
        path: rel.display().to_string(),
        target: target.display().to_string(),
    };
    // Depth of the directory holding the link, then walk the target from there.
    let mut depth = rel
        .parent()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count()
        })
        .unwrap_or(0);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(escaping())
            }
        }
    }
    if target.as_os_str().is_empty() {
        return Err(escaping());
    }
    Ok(())
}

/// Lists the regular files of a tar with their sizes (used by tests and `--dry-run` output).
pub fn tar_listing(tar_bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, ImageError> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(tar_bytes);
    let here = Path::new(".");
    for entry in archive.entries().map_err(io(here))? {
        let mut entry = entry.map_err(io(here))?;
        let path = entry.path().map_err(io(here))?.display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(io(here))?;
        out.insert(path, data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn pack_honours_ignore_files_and_is_deterministic() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "web.py", "print('hi')");
        write(d, "sub/data.txt", "x");
        write(d, "node_modules/big.js", "junk");
        write(d, "secret.env", "K=V");
        write(d, "build/out.o", "obj");
        write(d, ".git/HEAD", "ref");
        write(d, ".dockerignore", "node_modules\n*.env\n");
        write(d, ".gitignore", "build/\n");
        write(d, "Dockerfile", "FROM scratch\n");
        let a = pack_dir(d).unwrap();
        let listing = tar_listing(&a.tar).unwrap();
        let names: Vec<&str> = listing.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                ".dockerignore",
                ".gitignore",
                "Dockerfile",
                "sub/data.txt",
                "web.py"
            ]
        );

        let b = pack_dir(d).unwrap();
        assert_eq!(a.digest, b.digest, "unchanged tree, same digest");
        write(d, "node_modules/big.js", "more junk");
        assert_eq!(
            pack_dir(d).unwrap().digest,
            a.digest,
            "ignored files do not matter"
        );
        write(d, "web.py", "print('changed')");
        assert_ne!(pack_dir(d).unwrap().digest, a.digest);
    }

    #[test]
    fn unpack_round_trips_and_checks_the_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write(&src, "run.sh", "#!/bin/sh\necho hi\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let img = pack_dir(&src).unwrap();
        let dest = tmp.path().join("dest");
        unpack(&img.tar, &img.digest, &dest).unwrap();
        assert_eq!(
            fs::read_to_string(dest.join("run.sh")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(dest.join("run.sh"))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777,
                0o755
            );
        }
        let wrong = digest_of(b"other");
        assert!(matches!(
            unpack(&img.tar, &wrong, &dest),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(matches!(
            unpack(&img.tar, "sha256:xyz", &dest),
            Err(ImageError::BadDigest(_))
        ));
    }

    #[test]
    fn unpack_refuses_escaping_paths() {
        let mut header = tar::Header::new_gnu();
        let data = b"pwned";
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // Write the raw name: `Builder::append_data` itself refuses `..`.
        header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil\0\0");
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, &data[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("d");
        let err = unpack(&bytes, &digest_of(&bytes), &dest).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath(_)), "{err}");
        assert!(!tmp.path().join("evil").exists());
    }

    /// A symlink entry with the given name and target.
    fn tar_with_link(name: &str, target: &str) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        let mut b = tar::Builder::new(Vec::new());
        b.append_link(&mut header, name, target).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_refuses_links_out_of_the_image_and_keeps_those_inside() {
        for (name, target) in [
            ("etc", "/etc"),
            ("up", ".."),
            ("a/b/up", "../../../x"),
            ("a/sneaky", "b/../../../etc/passwd"),
        ] {
            let bytes = tar_with_link(name, target);
            let tmp = tempfile::tempdir().unwrap();
            let err = unpack(&bytes, &digest_of(&bytes), &tmp.path().join("d")).unwrap_err();
            assert!(
                matches!(err, ImageError::EscapingLink { .. }),
                "{name} -> {target}: {err}"
            );
        }
        for (name, target) in [
            ("bin/sh", "busybox"),
            ("a/b/lib", "../../lib"),
            ("x", "./y"),
        ] {
            let bytes = tar_with_link(name, target);
            let tmp = tempfile::tempdir().unwrap();
            unpack(&bytes, &digest_of(&bytes), &tmp.path().join("d"))
                .unwrap_or_else(|e| panic!("{name} -> {target}: {e}"));
        }
    }

    #[test]
    #[cfg(unix)]
    fn pack_refuses_links_out_of_the_app_directory() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "app.sh", "echo\n");
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("passwd")).unwrap();
        let err = pack_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("passwd") && err.contains("outside"), "{err}");
    }

    #[test]
    fn missing_dir_is_a_clear_error() {
        let err = pack_dir(Path::new("/definitely/not/here")).unwrap_err();
        assert_eq!(err.to_string(), "/definitely/not/here: not a directory");
    }
}
