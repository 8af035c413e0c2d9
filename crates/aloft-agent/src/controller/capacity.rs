//! What a machine may ask of this host: its memory must fit in the host's RAM, and the memory of
//! all started machines together in RAM × [`Limits::memory_overcommit`]. The reservations of
//! running machines are kept in memory, updated with every published change, so a check costs
//! no store read.

use std::collections::HashMap;
use std::sync::Mutex;

use aloft_api::{MachineConfig, MachineState};

use super::Controller;
use super::{DomainError, DomainResult};
use crate::settings::Limits;

/// Memory reserved by running machines, by machine id, in MiB.
#[derive(Default)]
pub(super) struct Reservations(Mutex<HashMap<String, u64>>);

impl Reservations {
    /// Records the state a machine was published in.
    pub(super) fn update(&self, id: &str, state: MachineState, config: &MachineConfig) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if super::machines::is_running(state) {
            map.insert(id.to_string(), memory_mb(config));
        } else {
            map.remove(id);
        }
    }

    /// MiB reserved by running machines other than `except`.
    fn total_except(&self, except: Option<&str>) -> u64 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .map(|(_, mb)| mb)
            .sum()
    }
}

/// The memory a machine runs with, in MiB.
pub fn memory_mb(config: &MachineConfig) -> u64 {
    u64::from(aloft_runtime::env::effective_guest(config).memory_mb)
}

/// The host's RAM in MiB (`MemTotal`), if it can be read.
pub fn host_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Whether the check is for a new machine or an existing one (Fly answers them differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve<'a> {
    New,
    Existing(&'a str),
}

impl Controller {
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Refuses to run `config` when its memory does not fit this host (see the module docs).
    pub(crate) fn check_memory(
        &self,
        config: &MachineConfig,
        who: Reserve<'_>,
    ) -> DomainResult<()> {
        let Some(host) = self.host_memory_mb else {
            return Ok(());
        };
        let need = memory_mb(config);
        let budget = (host as f64 * self.limits.memory_overcommit) as u64;
        let except = match who {
            Reserve::New => None,
            Reserve::Existing(id) => Some(id),
        };
        let reserved = self.reservations.total_except(except);
        let why = if need > host {
            format!("the machine asks for {need} MiB and this host has {host} MiB of RAM; choose a smaller size or memory")
        } else if reserved + need > budget {
            format!(
                "the machine asks for {need} MiB, started machines already hold {reserved} MiB, and this \
                 host allows {budget} MiB ({host} MiB of RAM × memory overcommit {}); stop machines, \
                 choose less memory, or raise aloft agent --memory-overcommit",
                self.limits.memory_overcommit
            )
        } else {
            return Ok(());
        };
        Err(DomainError::CapacityExceeded {
            message: format!("could not reserve resource for machine: insufficient memory available to fulfill request: {why}"),
            existing: matches!(who, Reserve::Existing(_)),
        })
    }
}
