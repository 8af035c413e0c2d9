//! The container side of [`crate::net`]: a [`Netns`] over a [`Network`] set up on first use, so
//! an agent that never runs a container never touches the host's network.
//!
//! A machine keeps its namespace and address from its first start until it is destroyed
//! ([`Netns::detach`], called through `Runtime::release`): a restart or a stop/start costs no
//! network work, and the address the proxy routes to stays the same.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::Netns;
use crate::net::{Attachment, NetConfig, Network};

/// Called once, right after the network is set up and before the container that needed it
/// starts (the agent starts its DNS server on the gateways there).
pub type ReadyHook = Box<dyn Fn(&Network) + Send + Sync>;

/// A [`Network`] created on the first attach.
pub struct LazyNetwork {
    config: NetConfig,
    state_dir: PathBuf,
    network: OnceLock<Result<Network, String>>,
    on_ready: Option<ReadyHook>,
}

impl LazyNetwork {
    /// `state_dir` keeps the address records (the agent passes `<data-dir>/runtime/net`).
    pub fn new(config: NetConfig, state_dir: &Path) -> LazyNetwork {
        LazyNetwork {
            config,
            state_dir: state_dir.to_path_buf(),
            network: OnceLock::new(),
            on_ready: None,
        }
    }

    /// Runs `hook` once the network is set up (see [`ReadyHook`]).
    pub fn with_ready_hook(mut self, hook: ReadyHook) -> LazyNetwork {
        self.on_ready = Some(hook);
        self
    }

    fn network(&self) -> Result<&Network, String> {
        self.network
            .get_or_init(|| {
                let network =
                    Network::setup(self.config.clone(), &self.state_dir).map_err(|e| e.to_string());
                if let (Ok(net), Some(hook)) = (&network, &self.on_ready) {
                    hook(net);
                }
                network
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Whether a previous agent left records (then the network must be set up to clean them).
    fn has_records(&self) -> bool {
        crate::net::machines_recorded(&self.state_dir)
    }
}

impl Netns for LazyNetwork {
    fn prepare(&self, machine_id: &str, org: &str) -> Result<(Attachment, bool), String> {
        let net = self.network()?;
        if let Some(a) = net.attachment(machine_id) {
            let wired = Path::new("/sys/class/net").join(&a.host_veth).exists();
            let same_org = net.org_prefix(org).is_ok_and(|p| p == a.org_prefix);
            if a.netns_path.exists() && wired && same_org {
                return Ok((a, false));
            }
        }
        let a = net.reserve(machine_id, org).map_err(|e| e.to_string())?;
        Ok((a, true))
    }

    fn connect(&self, machine_id: &str, org: &str) -> Result<(), String> {
        self.network()?
            .connect(machine_id, org)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn address(&self, machine_id: &str) -> Option<std::net::Ipv4Addr> {
        let net = self.network.get()?.as_ref().ok()?;
        net.ip(machine_id)
    }

    fn attachment(&self, machine_id: &str) -> Option<Attachment> {
        self.network.get()?.as_ref().ok()?.attachment(machine_id)
    }

    fn detach(&self, machine_id: &str) {
        if self.network.get().is_none() && !self.has_records() {
            return;
        }
        if let Ok(net) = self.network() {
            if let Err(e) = net.detach(machine_id) {
                tracing::warn!(machine_id, "cannot remove its network namespace: {e}");
            }
        }
    }

    fn service_address(&self, org: &str, key: &str) -> Result<std::net::Ipv6Addr, String> {
        self.network()?
            .reserve_service_address(org, key)
            .map_err(|e| e.to_string())
    }

    fn release_service_address(&self, key: &str) {
        if self.network.get().is_none() && !self.has_records() {
            return;
        }
        if let Ok(net) = self.network() {
            if let Err(e) = net.release_service_address(key) {
                tracing::warn!(key, "cannot remove a service address: {e}");
            }
        }
    }

    fn keep_only(&self, keep: &[String]) {
        if self.network.get().is_none() && !self.has_records() {
            return;
        }
        match self.network().map(|net| net.reap_unknown(keep)) {
            Ok(Ok(gone)) if !gone.is_empty() => {
                tracing::info!(machines = ?gone, "removed network namespaces of machines that are gone")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cannot remove leftover network namespaces: {e}"),
            Err(e) => tracing::warn!("cannot set up the machine network: {e}"),
        }
    }
}
