//! Host ports for machine services on the shared host network.
//!
//! A port is found by binding `127.0.0.1:0` and reading what the kernel picked. The listener
//! is closed before the machine binds the port, so the allocator also remembers what it handed
//! out (ports of supervised machines plus the most recent allocations) and never hands out one
//! of those twice, even if the kernel offers it again.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::RuntimeError;

/// How many recent allocations stay reserved, for machines that are allocated but not launched.
const RECENT: usize = 4096;
/// Attempts at finding a port the allocator has not handed out yet before giving up.
const ATTEMPTS: usize = 64;

#[derive(Default)]
pub(crate) struct PortAllocator {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    recent: VecDeque<u16>,
    recent_set: HashSet<u16>,
    /// Host ports of machines under supervision, per machine.
    in_use: BTreeMap<String, Vec<u16>>,
}

impl PortAllocator {
    /// A distinct free host port for each of `internal` (already deduplicated).
    pub(crate) fn allocate(&self, internal: &[u16]) -> Result<BTreeMap<u16, u16>, RuntimeError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for &port in internal {
            let host = state.fresh_port()?;
            state.remember(host);
            out.insert(port, host);
        }
        Ok(out)
    }

    /// Marks `ports` as used by `machine_id` until [`PortAllocator::release`].
    pub(crate) fn hold(&self, machine_id: &str, ports: impl IntoIterator<Item = u16>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .in_use
            .insert(machine_id.to_string(), ports.into_iter().collect());
    }

    pub(crate) fn release(&self, machine_id: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_use.remove(machine_id);
    }
}

impl State {
    fn taken(&self, port: u16) -> bool {
        self.recent_set.contains(&port) || self.in_use.values().any(|ports| ports.contains(&port))
    }

    fn fresh_port(&self) -> Result<u16, RuntimeError> {
        let mut last_err = None;
        for _ in 0..ATTEMPTS {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                Ok(addr) if !self.taken(addr.port()) => return Ok(addr.port()),
                Ok(_) => continue,
                Err(e) => last_err = Some(e),
            }
        }
        Err(RuntimeError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source: last_err.unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "no free host port the runtime has not already handed out",
                )
            }),
        })
    }

    fn remember(&mut self, port: u16) {
        if self.recent.len() == RECENT {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
        self.recent.push_back(port);
        self.recent_set.insert(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let alloc = PortAllocator::default();
        let a = alloc.allocate(&[8080, 9090]).unwrap();
        let b = alloc.allocate(&[8080]).unwrap();
        assert_eq!(a.len(), 2);
        let all: HashSet<u16> = a.values().chain(b.values()).copied().collect();
        assert_eq!(
            all.len(),
            3,
            "every allocation gets its own host port: {a:?} {b:?}"
        );
        for port in all {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("allocated port is free");
        }
    }
}
