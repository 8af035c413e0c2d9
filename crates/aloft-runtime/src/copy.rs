//! Copying files into and out of a running machine (`aloft machine cp`) as tar streams,
//! from the host side: no program runs in the machine (an image `FROM scratch` has no `tar`).
//!
//! Where: a container's root filesystem as the agent mounted it (so what the container mounts
//! over it — `/proc`, `/dev`, `/sys`, `/etc/hosts` — is not seen), a host process machine's
//! working directory (an absolute path is taken relative to it: `/data/x` is `<cwd>/data/x`).
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)` against that root, so neither `..`
//! nor a symlink (absolute or relative) ever leads out of it: they resolve as they would for
//! the machine. `..` in a path or a tar entry is refused outright, as are entries that are
//! neither files, directories nor symlinks. Below the named path nothing is followed: links
//! are copied as links, directories walked through descriptors opened with `O_NOFOLLOW`.
//!
//! Bounds: a copy carries at most `limit` bytes of file contents (the caller's, 1 GiB for the
//! agent); reading measures first and refuses before anything is sent, writing stops at the
//! limit. Written files, directories and links belong to the machine's user (a container's
//! USER; a host process machine runs as the agent, so as the agent's).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Where a machine's files are and whose new files are.
#[derive(Clone, Debug)]
pub struct CopyRoot {
    pub dir: PathBuf,
    /// uid and gid of what is written (`None`: the agent's own).
    pub owner: Option<(u32, u32)>,
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The path or a tar entry is not acceptable (the message says why).
    #[error("{0}")]
    Refused(String),
    #[error("{0} does not exist in the machine")]
    NotFound(String),
    #[error("the copy is larger than the {limit} bytes a copy may carry")]
    TooLarge { limit: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> CopyError {
    let what = what.into();
    move |e| CopyError::Io {
        what,
        source: e.into(),
    }
}

/// The machine path `path` as a path relative to the root, checked (no `..`, no NUL).
pub fn relative(path: &str) -> Result<PathBuf, CopyError> {
    if path.is_empty() || path.contains('\0') {
        return Err(CopyError::Refused(format!(
            "{path:?} is not a path in the machine"
        )));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CopyError::Refused(format!(
                    "{path:?} has a `..`: name the path in the machine without one"
                )))
            }
        }
    }
    Ok(rel)
}

fn open_root(root: &CopyRoot) -> Result<OwnedFd, CopyError> {
    rustix::fs::open(
        &root.dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(format!("opening {}", root.dir.display())))
}

/// Opens `rel` (relative to the root; empty: the root itself) the way the machine would see it.
fn open_in(root: &OwnedFd, rel: &Path, flags: OFlags, shown: &str) -> Result<OwnedFd, CopyError> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    // openat2 refuses flags O_PATH ignores (EINVAL).
    let extra = if flags.contains(OFlags::PATH) {
        OFlags::CLOEXEC
    } else {
        OFlags::CLOEXEC | OFlags::NOCTTY
    };
    rustix::fs::openat2(
        root,
        rel,
        flags | extra,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => CopyError::NotFound(shown.to_string()),
        e => io(format!("opening {shown}"))(e),
    })
}

fn base_name(rel: &Path, shown: &str) -> Result<PathBuf, CopyError> {
    rel.file_name().map(PathBuf::from).ok_or_else(|| {
        CopyError::Refused(format!(
            "{shown:?} names the machine's root: name a file or directory in it"
        ))
    })
}

/// One thing of a walk: its path in the tar, and what it is.
enum Item<'a> {
    Dir {
        path: &'a Path,
        mode: u32,
    },
    File {
        path: &'a Path,
        mode: u32,
        file: std::fs::File,
        size: u64,
    },
    Link {
        path: &'a Path,
        target: PathBuf,
    },
}

/// Walks `path` (followed when it is a link, like the machine would) and what is below it.
fn walk(
    root: &CopyRoot,
    path: &str,
    visit: &mut dyn FnMut(Item<'_>) -> Result<(), CopyError>,
) -> Result<(), CopyError> {
    let rel = relative(path)?;
    let name = base_name(&rel, path)?;
    let root_fd = open_root(root)?;
    let at = open_in(&root_fd, &rel, OFlags::PATH, path)?;
    let st = rustix::fs::fstat(&at).map_err(io(format!("reading {path}")))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let dir = open_in(&root_fd, &rel, OFlags::RDONLY | OFlags::DIRECTORY, path)?;
            visit(Item::Dir {
                path: &name,
                mode: st.st_mode & 0o7777,
            })?;
            walk_dir(&dir, &name, visit)
        }
        FileType::RegularFile => {
            let file = open_in(&root_fd, &rel, OFlags::RDONLY, path)?;
            visit(Item::File {
                path: &name,
                mode: st.st_mode & 0o7777,
                size: st.st_size as u64,
                file: file.into(),
            })
        }
        other => Err(CopyError::Refused(format!(
            "{path} is a {other:?}: only files and directories are copied"
        ))),
    }
}

fn walk_dir(
    dir: &OwnedFd,
    at: &Path,
    visit: &mut dyn FnMut(Item<'_>) -> Result<(), CopyError>,
) -> Result<(), CopyError> {
    let shown = at.display().to_string();
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir).map_err(io(format!("listing {shown}")))? {
        let entry = entry.map_err(io(format!("listing {shown}")))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    for name in names {
        let path = at.join(&name);
        let shown = path.display().to_string();
        let st = rustix::fs::statat(dir, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io(format!("reading {shown}")))?;
        let mode = st.st_mode & 0o7777;
        let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = rustix::fs::openat(
                    dir,
                    name.as_os_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | nofollow,
                    Mode::empty(),
                )
                .map_err(io(format!("opening {shown}")))?;
                visit(Item::Dir { path: &path, mode })?;
                walk_dir(&sub, &path, visit)?;
            }
            FileType::RegularFile => {
                let file = rustix::fs::openat(
                    dir,
                    name.as_os_str(),
                    OFlags::RDONLY | nofollow,
                    Mode::empty(),
                )
                .map_err(io(format!("opening {shown}")))?;
                visit(Item::File {
                    path: &path,
                    mode,
                    size: st.st_size as u64,
                    file: file.into(),
                })?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name.as_os_str(), Vec::new())
                    .map_err(io(format!("reading the link {shown}")))?;
                visit(Item::Link {
                    path: &path,
                    target: PathBuf::from(OsStr::from_bytes(target.as_bytes())),
                })?;
            }
            // Sockets, pipes and devices have no contents to copy.
            _ => {}
        }
    }
    Ok(())
}

/// Bytes of file contents under `path` (what [`read_tar`] would carry).
pub fn size_of(root: &CopyRoot, path: &str) -> Result<u64, CopyError> {
    let mut total = 0u64;
    walk(root, path, &mut |item| {
        if let Item::File { size, .. } = item {
            total += size;
        }
        Ok(())
    })?;
    Ok(total)
}

/// Writes a tar of `path` to `out`: its last component at the top, what is below it under
/// that. At most `limit` bytes of contents (files that grow meanwhile are cut there: their
/// header was written with the size measured).
pub fn read_tar(
    root: &CopyRoot,
    path: &str,
    out: impl Write,
    limit: u64,
) -> Result<u64, CopyError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut total = 0u64;
    let err = |p: &Path| {
        let p = p.display().to_string();
        move |e: std::io::Error| CopyError::Io {
            what: format!("sending {p}"),
            source: e,
        }
    };
    walk(root, path, &mut |item| match item {
        Item::Dir { path, mode } => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty())
                .map_err(err(path))
        }
        Item::File {
            path,
            mode,
            file,
            size,
        } => {
            total += size;
            if total > limit {
                return Err(CopyError::TooLarge { limit });
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_size(size);
            // Exactly `size` bytes: zeros after a file that shrank, the rest of one that grew
            // left out.
            let body = file.take(size).chain(std::io::repeat(0)).take(size);
            tar.append_data(&mut h, path, body).map_err(err(path))
        }
        Item::Link { path, target } => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, path, &target).map_err(err(path))
        }
    })?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| CopyError::Io {
            what: "finishing the tar".into(),
            source: e,
        })?;
    Ok(total)
}

/// Unpacks the tar `input` at `path` in the machine: into it when it is a directory; else as
/// `path` itself (the tar's one top-level entry renamed, in `path`'s parent, which must
/// exist). Returns the bytes of contents written.
pub fn write_tar(
    root: &CopyRoot,
    path: &str,
    input: impl Read,
    limit: u64,
) -> Result<u64, CopyError> {
    let rel = relative(path)?;
    let root_fd = open_root(root)?;
    let is_dir = match open_in(&root_fd, &rel, OFlags::PATH, path) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd).map_err(io(format!("reading {path}")))?;
            FileType::from_raw_mode(st.st_mode) == FileType::Directory
        }
        Err(CopyError::NotFound(_)) => false,
        Err(e) => return Err(e),
    };
    // Into a directory: entries keep their names. As a new name: the top entry takes it.
    let (base, rename) = if is_dir {
        (rel.clone(), None)
    } else {
        let name = base_name(&rel, path)?;
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        (parent, Some(name))
    };
    let mut archive = tar::Archive::new(input);
    let mut total = 0u64;
    let mut top: Option<PathBuf> = None;
    let entries = archive.entries().map_err(|e| CopyError::Io {
        what: "reading the tar".into(),
        source: e,
    })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| CopyError::Io {
            what: "reading the tar".into(),
            source: e,
        })?;
        let raw = entry
            .path()
            .map_err(|e| CopyError::Refused(format!("a tar entry has no usable name: {e}")))?
            .into_owned();
        let shown = raw.display().to_string();
        let mut entry_rel = relative(&shown).map_err(|_| {
            CopyError::Refused(format!(
                "tar entry {shown:?} has a `..`: nothing is written outside the destination"
            ))
        })?;
        let Some(first) = entry_rel
            .components()
            .next()
            .map(|c| PathBuf::from(c.as_os_str()))
        else {
            continue;
        };
        if let Some(new_name) = &rename {
            match &top {
                None => top = Some(first.clone()),
                Some(t) if *t != first => {
                    return Err(CopyError::Refused(format!(
                        "{path} is not a directory in the machine, so the copy must be one \
                         file or directory; the tar has {} and {}",
                        t.display(),
                        first.display()
                    )))
                }
                Some(_) => {}
            }
            entry_rel = new_name.join(entry_rel.strip_prefix(&first).unwrap_or(Path::new("")));
        }
        let full = base.join(&entry_rel);
        let name = full.file_name().map(PathBuf::from).unwrap_or_default();
        let parent_rel = full.parent().map(Path::to_path_buf).unwrap_or_default();
        let shown_full = format!("/{}", full.display());
        let parent = open_in(
            &root_fd,
            &parent_rel,
            OFlags::PATH | OFlags::DIRECTORY,
            &format!("/{}", parent_rel.display()),
        )?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&parent, &name, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io(format!("making {shown_full}"))(e)),
                }
                own(root, &parent, &name, &shown_full)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_link(&parent, &name);
                let file = rustix::fs::openat(
                    &parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::TRUNC
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC
                        | OFlags::NOCTTY,
                    Mode::from_raw_mode(mode),
                )
                .map_err(io(format!("writing {shown_full}")))?;
                let mut out = std::fs::File::from(file);
                let size = entry.header().size().unwrap_or(0);
                if total + size > limit {
                    return Err(CopyError::TooLarge { limit });
                }
                total += std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(|e| {
                    CopyError::Io {
                        what: format!("writing {shown_full}"),
                        source: e,
                    }
                })?;
                rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
                    .map_err(io(format!("setting the mode of {shown_full}")))?;
                if let Some((uid, gid)) = root.owner {
                    rustix::fs::fchown(
                        &out,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .map_err(io(format!("owning {shown_full}")))?;
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| {
                        CopyError::Refused(format!("tar entry {shown:?} is a link to nothing"))
                    })?;
                remove_link(&parent, &name);
                rustix::fs::symlinkat(&target, &parent, &name)
                    .map_err(io(format!("making the link {shown_full}")))?;
                own(root, &parent, &name, &shown_full)?;
            }
            other => {
                return Err(CopyError::Refused(format!(
                    "tar entry {shown:?} is a {other:?}: only files, directories and symlinks \
                     are copied"
                )))
            }
        }
    }
    Ok(total)
}

/// Removes `name` in `parent` when it is a symlink (it is replaced, never followed).
fn remove_link(parent: &impl AsFd, name: &Path) {
    if rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
    {
        let _ = rustix::fs::unlinkat(parent, name, AtFlags::empty());
    }
}

/// Gives `name` in `parent` to the machine's user (links themselves, not what they name).
fn own(root: &CopyRoot, parent: &OwnedFd, name: &Path, shown: &str) -> Result<(), CopyError> {
    if let Some((uid, gid)) = root.owner {
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io(format!("owning {shown}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> (tempfile::TempDir, CopyRoot) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("root");
        std::fs::create_dir_all(dir.join("etc/conf.d")).unwrap();
        std::fs::write(dir.join("etc/app.conf"), "port = 1\n").unwrap();
        std::fs::write(dir.join("etc/conf.d/x"), "x").unwrap();
        std::os::unix::fs::symlink("app.conf", dir.join("etc/link")).unwrap();
        (tmp, CopyRoot { dir, owner: None })
    }

    #[test]
    fn a_directory_round_trips_with_its_links() {
        let (tmp, root) = machine();
        let mut tar = Vec::new();
        let sent = read_tar(&root, "/etc", &mut tar, 1 << 20).unwrap();
        assert_eq!(sent, 10);
        assert_eq!(size_of(&root, "etc").unwrap(), 10);
        // Into an existing directory: under its name; to a new name: renamed.
        std::fs::create_dir(root.dir.join("copy")).unwrap();
        write_tar(&root, "/copy", &tar[..], 1 << 20).unwrap();
        write_tar(&root, "/renamed", &tar[..], 1 << 20).unwrap();
        for base in ["copy/etc", "renamed"] {
            let b = root.dir.join(base);
            assert_eq!(
                std::fs::read_to_string(b.join("app.conf")).unwrap(),
                "port = 1\n"
            );
            assert_eq!(std::fs::read_to_string(b.join("conf.d/x")).unwrap(), "x");
            assert_eq!(
                std::fs::read_link(b.join("link")).unwrap(),
                Path::new("app.conf")
            );
        }
        drop(tmp);
    }

    #[test]
    fn dotdot_and_links_never_lead_out_of_the_root() {
        let (tmp, root) = machine();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host").unwrap();
        std::fs::write(root.dir.join("secret"), "machine").unwrap();
        assert!(matches!(
            size_of(&root, "/etc/../../outside/secret"),
            Err(CopyError::Refused(_))
        ));
        // A link to the host's directory resolves inside the machine.
        std::os::unix::fs::symlink(&outside, root.dir.join("esc")).unwrap();
        std::os::unix::fs::symlink("../../..", root.dir.join("up")).unwrap();
        assert!(matches!(
            size_of(&root, "/esc/secret"),
            Err(CopyError::NotFound(_))
        ));
        let mut tar = Vec::new();
        read_tar(&root, "/up/secret", &mut tar, 1 << 20).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let mut text = String::new();
        e.read_to_string(&mut text).unwrap();
        assert_eq!(text, "machine");
        // Writing through a link to the host writes in the machine; `..` entries are refused.
        write_tar(&root, "/esc/planted", &tar[..], 1 << 20).unwrap_err();
        assert!(!outside.join("planted").exists());
        let mut evil = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let name = b"../outside/evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        evil.append(&h, &b"x"[..]).unwrap();
        let evil = evil.into_inner().unwrap();
        assert!(matches!(
            write_tar(&root, "/", &evil[..], 1 << 20),
            Err(CopyError::Refused(_))
        ));
        assert!(!outside.join("evil").exists());
    }

    #[test]
    fn copies_are_bounded() {
        let (_tmp, root) = machine();
        assert!(matches!(
            read_tar(&root, "/etc", std::io::sink(), 5),
            Err(CopyError::TooLarge { limit: 5 })
        ));
        let mut tar = Vec::new();
        read_tar(&root, "/etc", &mut tar, 1 << 20).unwrap();
        assert!(matches!(
            write_tar(&root, "/big", &tar[..], 5),
            Err(CopyError::TooLarge { limit: 5 })
        ));
    }
}
