//! The allocation records: which machine holds which address, one small JSON file per machine in
//! the state directory (`<machine_id>.json`), written atomically (temporary file, fsync, rename),
//! so an agent killed at any moment finds every allocation it made and no half-written one.
//!
//! Next to them, `host.state.json` ([`HostState`]) keeps what belongs to the host rather than a
//! machine: the generated IPv6 /48, the organizations' numbers and the service (Flycast)
//! addresses. Its name has a dot before `.json`, which no machine id has, so it is never taken
//! for a machine's record.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::plan::check_machine_id;

const SUFFIX: &str = ".json";
const HOST_STATE: &str = "host.state.json";

/// A machine's addresses. Records written before IPv6 have only `ipv4`: the machine gets its
/// IPv6 address on its next reserve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub ipv4: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Addr>,
    /// The organization the IPv6 address belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

/// The records of one state directory. A machine whose record cannot be read is still listed
/// (without an address), so it can be detached and reaped.
pub struct Records {
    dir: PathBuf,
    machines: BTreeMap<String, Option<Record>>,
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
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok());
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

    /// Whether `dir` holds a machine's record (without reading or creating anything).
    pub fn any_in(dir: &Path) -> bool {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.strip_suffix(SUFFIX)
                    .is_some_and(|id| check_machine_id(id).is_ok())
            })
        })
    }

    pub fn get(&self, machine_id: &str) -> Option<Option<&Record>> {
        self.machines.get(machine_id).map(Option::as_ref)
    }

    pub fn machines(&self) -> impl Iterator<Item = (&String, &Option<Record>)> {
        self.machines.iter()
    }

    /// Records `machine_id`'s addresses, durably, before anything is created for it on the
    /// host.
    pub fn put(&mut self, machine_id: &str, record: Record) -> Result<(), NetError> {
        let path = self.path(machine_id);
        write_atomically(&self.dir, &path, &record, "cannot write the network record")?;
        self.machines.insert(machine_id.to_string(), Some(record));
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

/// Writes `value` as JSON to `path` through a temporary file, fsynced, renamed, directory
/// fsynced.
fn write_atomically<T: Serialize>(
    dir: &Path,
    path: &Path,
    value: &T,
    what: &'static str,
) -> Result<(), NetError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(value).expect("a record serializes"))?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|source| NetError::State {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// A service (Flycast) address and the organization it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub org: String,
    pub ip: Ipv6Addr,
}

/// What the host keeps for every machine: the generated /48, organization numbers, service
/// addresses by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// The network address of the random `fdaa:XXXX:XXXX::/48`, made on first setup.
    #[serde(default)]
    pub prefix48: Option<Ipv6Addr>,
    /// Organization slug → its number on this host (1–65535, never reused).
    #[serde(default)]
    pub orgs: BTreeMap<String, u16>,
    /// Service key → address.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
}

impl HostState {
    /// Reads `host.state.json` in `dir` (an empty state when it does not exist yet).
    pub fn load(dir: &Path) -> Result<HostState, NetError> {
        let path = dir.join(HOST_STATE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NetError::State {
                what: "cannot read the network's host state",
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostState::default()),
            Err(source) => Err(NetError::State {
                what: "cannot read the network's host state",
                path,
                source,
            }),
        }
    }

    /// Writes it to `dir`, durably.
    pub fn save(&self, dir: &Path) -> Result<(), NetError> {
        write_atomically(
            dir,
            &dir.join(HOST_STATE),
            self,
            "cannot write the network's host state",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reload_and_unreadable_ones_are_still_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::load(dir.path()).unwrap();
        let v4 = |ip: &str| Record {
            ipv4: ip.parse().unwrap(),
            ipv6: None,
            org: None,
        };
        records.put("m1", v4("10.0.0.2")).unwrap();
        records.put("m2", v4("10.0.0.3")).unwrap();
        HostState::default().save(dir.path()).unwrap();
        records.remove("m2").unwrap();
        records.remove("never-there").unwrap();
        fs::write(dir.path().join("broken.json"), b"{").unwrap();
        fs::write(dir.path().join("half.tmp"), b"{").unwrap();

        assert!(Records::any_in(dir.path()));
        let again = Records::load(dir.path()).unwrap();
        let all: Vec<_> = again
            .machines()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        assert_eq!(
            all,
            vec![
                ("broken".to_string(), None),
                ("m1".to_string(), Some(v4("10.0.0.2"))),
            ],
            "the host state is not a machine"
        );
    }

    #[test]
    fn ipv4_only_records_of_older_agents_still_read() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("old.json"), br#"{"ipv4":"10.0.0.9"}"#).unwrap();
        let records = Records::load(dir.path()).unwrap();
        let old = records.get("old").unwrap().unwrap();
        assert_eq!(old.ipv4, "10.0.0.9".parse::<Ipv4Addr>().unwrap());
        assert_eq!((old.ipv6, old.org.as_deref()), (None, None));
    }

    #[test]
    fn the_host_state_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HostState::load(dir.path()).unwrap(), HostState::default());
        HostState::default().save(dir.path()).unwrap();
        assert!(
            !Records::any_in(dir.path()),
            "the host state is no machine's record"
        );
        let mut state = HostState {
            prefix48: Some("fdaa:1:2::".parse().unwrap()),
            ..HostState::default()
        };
        state.orgs.insert("personal".into(), 1);
        state.services.insert(
            "app-a".into(),
            Service {
                org: "personal".into(),
                ip: "fdaa:1:2:1:1:f:0:1".parse().unwrap(),
            },
        );
        state.save(dir.path()).unwrap();
        assert_eq!(HostState::load(dir.path()).unwrap(), state);
        fs::write(dir.path().join(HOST_STATE), b"{").unwrap();
        assert!(HostState::load(dir.path()).is_err());
    }
}
