//! The allocation records: which machine holds which address, one small JSON file per machine in
//! the state directory (`<machine_id>.json`), written atomically (temporary file, fsync, rename),
//! so an agent killed at any moment finds every allocation it made and no half-written one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::plan::check_machine_id;

const SUFFIX: &str = ".json";

#[derive(Serialize, Deserialize)]
struct Record {
    ipv4: Ipv4Addr,
}

/// The records of one state directory. A machine whose record cannot be read is still listed
/// (without an address), so it can be detached and reaped.
pub struct Records {
    dir: PathBuf,
    machines: BTreeMap<String, Option<Ipv4Addr>>,
}

impl Records {
    /// Reads every record in `dir` (created if missing).
    pub fn load(dir: &Path) -> Result<Records, NetError> {
        let state = |what, source| NetError::State {
            what,
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir)
            .map_err(|e| state("cannot create the network state directory", e))?;
        let mut machines = BTreeMap::new();
        let entries =
            fs::read_dir(dir).map_err(|e| state("cannot read the network state directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| state("cannot read the network state directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(SUFFIX) else {
                continue; // temporary files of an interrupted write
            };
            if check_machine_id(id).is_err() {
                continue;
            }
            let ip = fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
                .map(|r| r.ipv4);
            if ip.is_none() {
                tracing::warn!(machine = id, path = %entry.path().display(), "unreadable network record: the machine's address will be given anew");
            }
            machines.insert(id.to_string(), ip);
        }
        Ok(Records {
            dir: dir.to_path_buf(),
            machines,
        })
    }

    pub fn get(&self, machine_id: &str) -> Option<Option<Ipv4Addr>> {
        self.machines.get(machine_id).copied()
    }

    pub fn machines(&self) -> impl Iterator<Item = (&String, &Option<Ipv4Addr>)> {
        self.machines.iter()
    }

    /// Records `machine_id` at `ip`, durably, before anything is created for it on the host.
    pub fn put(&mut self, machine_id: &str, ip: Ipv4Addr) -> Result<(), NetError> {
        let path = self.path(machine_id);
        let tmp = self.dir.join(format!("{machine_id}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(
                &serde_json::to_vec(&Record { ipv4: ip }).expect("a record serializes"),
            )?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| NetError::State {
            what: "cannot write the network record",
            path: path.clone(),
            source,
        })?;
        self.machines.insert(machine_id.to_string(), Some(ip));
        Ok(())
    }

    /// Forgets `machine_id` (no error if it was not recorded).
    pub fn remove(&mut self, machine_id: &str) -> Result<(), NetError> {
        let path = self.path(machine_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(NetError::State {
                    what: "cannot remove the network record",
                    path,
                    source,
                })
            }
        }
        self.machines.remove(machine_id);
        Ok(())
    }

    fn path(&self, machine_id: &str) -> PathBuf {
        self.dir.join(format!("{machine_id}{SUFFIX}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reload_and_unreadable_ones_are_still_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::load(dir.path()).unwrap();
        records.put("m1", "10.0.0.2".parse().unwrap()).unwrap();
        records.put("m2", "10.0.0.3".parse().unwrap()).unwrap();
        records.remove("m2").unwrap();
        records.remove("never-there").unwrap();
        fs::write(dir.path().join("broken.json"), b"{").unwrap();
        fs::write(dir.path().join("half.tmp"), b"{").unwrap();

        let again = Records::load(dir.path()).unwrap();
        let all: Vec<_> = again.machines().map(|(id, ip)| (id.clone(), *ip)).collect();
        assert_eq!(
            all,
            vec![
                ("broken".to_string(), None),
                ("m1".to_string(), Some("10.0.0.2".parse().unwrap())),
            ]
        );
    }
}
