//! The image's `USER` (`name`, `uid`, `name:group`, `uid:gid`…) as numeric ids, read from the
//! image's own `/etc/passwd` and `/etc/group`, as Docker does. The files are looked up through
//! the image's layers, topmost first, before any container runs.

use std::path::{Path, PathBuf};

/// A resolved user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the groups of `/etc/group` that list the user by name.
    pub additional_gids: Vec<u32>,
}

/// Resolves `user` against the image whose layers are `layers` (bottom → top). An empty `user`
/// is root. A name that the image does not know is an error that says so.
pub fn resolve(user: &str, layers: &[PathBuf]) -> Result<User, String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(User {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let passwd = read_top(layers, "etc/passwd");
    let groups = read_top(layers, "etc/group");
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .find(|f| f[0] == name || (name.parse::<u32>().is_ok() && f[2] == name));
    let (uid, primary_gid, user_name) = match (&entry, name.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("USER {user:?}: /etc/passwd has a bad uid {:?}", f[2]))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("USER {user:?}: /etc/passwd has a bad gid {:?}", f[3]))?,
            Some(f[0].to_string()),
        ),
        (None, Ok(uid)) => (uid, uid, None),
        (None, Err(_)) => {
            return Err(format!(
                "USER {name:?} does not exist in the image (no such name in its /etc/passwd): \
                 create the user in the Dockerfile (e.g. a RUN that adds it) or use a numeric uid"
            ))
        }
    };
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("USER {user:?}: group {g:?} does not exist in the image's /etc/group")
                })?,
        },
    };
    let additional_gids = match &user_name {
        Some(n) => group_entries
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => Vec::new(),
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The content of `rel` in the topmost layer that has it; empty when none does (or a layer
/// above deleted it with a whiteout).
fn read_top(layers: &[PathBuf], rel: &str) -> String {
    let path = Path::new(rel);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    for layer in layers.iter().rev() {
        let candidate = layer.join(path);
        if let Ok(meta) = std::fs::symlink_metadata(&candidate) {
            if meta.is_file() {
                return std::fs::read_to_string(candidate).unwrap_or_default();
            }
            return String::new();
        }
        let whiteout = layer
            .join(path.parent().unwrap_or(Path::new("")))
            .join(format!(".wh.{name}"));
        if whiteout.exists() {
            return String::new();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, passwd: &str, group: &str) -> PathBuf {
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), passwd).unwrap();
        std::fs::write(dir.join("etc/group"), group).unwrap();
        dir.to_path_buf()
    }

    #[test]
    fn names_ids_and_groups() {
        let t = tempfile::tempdir().unwrap();
        let base = layer(
            &t.path().join("0"),
            "root:x:0:0::/:/bin/sh\n",
            "root:x:0:\n",
        );
        let top = layer(
            &t.path().join("1"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
            "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\n",
        );
        let layers = vec![base, top];
        let u = |s| resolve(s, &layers);
        assert_eq!(u("").unwrap().uid, 0);
        assert_eq!(
            u("app").unwrap(),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![50]
            }
        );
        assert_eq!(u("1000").unwrap().gid, 1001);
        assert_eq!(
            u("4242").unwrap(),
            User {
                uid: 4242,
                gid: 4242,
                additional_gids: vec![]
            }
        );
        assert_eq!(u("app:staff").unwrap().gid, 50);
        assert_eq!(u("app:7").unwrap().gid, 7);
        assert!(u("nobody")
            .unwrap_err()
            .contains("does not exist in the image"));
        assert!(u("app:wheel").unwrap_err().contains("group \"wheel\""));
    }
}
