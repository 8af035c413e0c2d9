//! `aloft machine cp SRC DST`: a file or directory into or out of a running machine, one side
//! written `MACHINE_ID:/path` (the machine's path: in a container from its root filesystem, on
//! the process runtime from the machine's working directory).
//!
//! As `docker cp`: copying to an existing directory puts the copy inside it under its own
//! name; to any other path, the copy takes that name (its parent must exist). The tar travels
//! through a temporary file on each side, never whole in memory; unpacking here goes through
//! the `tar` crate's `unpack`, which writes nothing outside the destination.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::commands::Context;
use aloft_client::{block_on, Client};

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    Machine { id: String, path: String },
}

fn side(arg: &str) -> Side {
    match arg.split_once(':') {
        Some((id, path)) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Side::Machine {
                id: id.to_string(),
                path: path.to_string(),
            }
        }
        _ => Side::Local(PathBuf::from(arg)),
    }
}

pub fn run(
    src: &str,
    dst: &str,
    app: &str,
    client: &Client,
    ctx: &Context,
) -> anyhow::Result<ExitCode> {
    let printer = ctx.printer;
    // Refused here before any upload (the agent refuses it too, but an answer that comes
    // while a large upload is still being sent can be lost in the reset connection).
    for arg in [src, dst] {
        if let Side::Machine { path, .. } = side(arg) {
            if Path::new(&path)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                bail!("{path:?} has a `..`: name the path in the machine without one");
            }
        }
    }
    match (side(src), side(dst)) {
        (Side::Machine { id, path }, Side::Local(to)) => {
            if path.is_empty() {
                bail!("name the path in machine {id}: {id}:/some/path");
            }
            let n = block_on(copy_out(client, app, &id, &path, &to))?;
            printer.note(format_args!("copied {path} from machine {id} to {} ({n} bytes of tar)", to.display()));
        }
        (Side::Local(from), Side::Machine { id, path }) => {
            if path.is_empty() {
                bail!("name the path in machine {id}: {id}:/some/path");
            }
            let bytes = block_on(copy_in(client, app, &from, &id, &path))?;
            printer.note(format_args!("copied {} to machine {id}:{path} ({bytes} bytes)", from.display()));
        }
        (Side::Local(_), Side::Local(_)) => bail!(
            "one side of `aloft machine cp` is a machine: MACHINE_ID:/path (e.g. `aloft machine cp ./app.conf 148e21:/etc/app.conf`)"
        ),
        (Side::Machine { .. }, Side::Machine { .. }) => {
            bail!("copy between two machines through a local directory: one side of `aloft machine cp` is local")
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn copy_out(
    client: &Client,
    app: &str,
    id: &str,
    path: &str,
    to: &Path,
) -> anyhow::Result<u64> {
    let into_dir = to.is_dir();
    let parent = if into_dir {
        to.to_path_buf()
    } else {
        match to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    if !parent.is_dir() {
        bail!(
            "{} is not a directory here: the copy has nowhere to go",
            parent.display()
        );
    }
    let tar = tempfile::tempfile_in(&parent)
        .with_context(|| format!("making a temporary file in {}", parent.display()))?;
    let mut file = tokio::fs::File::from_std(tar.try_clone()?);
    let n = client
        .copy_out(app, id, path, &mut file)
        .await
        .map_err(|e| hint(e, app, id))
        .with_context(|| format!("could not copy {path} out of machine {id}"))?;
    drop(file);
    let to = to.to_path_buf();
    tokio::task::spawn_blocking(move || unpack(tar, &parent, into_dir, &to)).await??;
    Ok(n)
}

/// Unpacks the tar into `parent` (`into_dir`), or as `to` through a temporary directory.
fn unpack(mut tar: std::fs::File, parent: &Path, into_dir: bool, to: &Path) -> anyhow::Result<()> {
    use std::io::Seek;
    tar.rewind()?;
    if into_dir {
        tar::Archive::new(tar)
            .unpack(parent)
            .with_context(|| format!("unpacking into {}", parent.display()))?;
        return Ok(());
    }
    let scratch = tempfile::tempdir_in(parent)?;
    tar::Archive::new(tar)
        .unpack(scratch.path())
        .with_context(|| format!("unpacking into {}", parent.display()))?;
    let mut tops = std::fs::read_dir(scratch.path())?;
    let top = tops.next().context("the machine sent an empty copy")??;
    std::fs::rename(top.path(), to)
        .with_context(|| format!("moving the copy to {}", to.display()))?;
    Ok(())
}

async fn copy_in(
    client: &Client,
    app: &str,
    from: &Path,
    id: &str,
    path: &str,
) -> anyhow::Result<u64> {
    let meta = std::fs::symlink_metadata(from)
        .with_context(|| format!("cannot copy {}", from.display()))?;
    let name = from
        .canonicalize()?
        .file_name()
        .map(PathBuf::from)
        .context("name a file or directory to copy, not /")?;
    let from = from.to_path_buf();
    let tar = tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
        let file = tempfile::tempfile()?;
        let mut b = tar::Builder::new(file);
        b.follow_symlinks(false);
        if meta.is_dir() {
            b.append_dir_all(&name, &from)?;
        } else {
            b.append_path_with_name(&from, &name)?;
        }
        let mut file = b.into_inner()?;
        use std::io::Seek;
        file.rewind()?;
        Ok(file)
    })
    .await??;
    let answer = client
        .copy_in(app, id, path, tokio::fs::File::from_std(tar))
        .await
        .map_err(|e| hint(e, app, id))
        .with_context(|| format!("could not copy into machine {id}"))?;
    Ok(answer.bytes)
}

/// A 404 of a path in the machine says so; one of the machine itself points at the list.
fn hint(e: anyhow::Error, app: &str, id: &str) -> anyhow::Error {
    let path_missing = aloft_client::status_error(&e)
        .is_some_and(|s| s.message.contains("does not exist in machine"));
    if path_missing {
        e
    } else {
        super::machine::not_found_hint(e, app, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_side_is_an_id_and_a_colon() {
        assert_eq!(
            side("148e21:/etc/x"),
            Side::Machine {
                id: "148e21".into(),
                path: "/etc/x".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Local("./a:b".into()));
        assert_eq!(side("dir/x"), Side::Local("dir/x".into()));
    }
}
