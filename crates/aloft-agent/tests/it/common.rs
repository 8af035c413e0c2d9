//! Helpers shared by the in-process agent harnesses.

use std::path::Path;

use aloft_agent::{AgentConfig, NetConfig};

/// An agent config on `data_dir`: API on 127.0.0.1 with an OS-assigned port, and the container
/// network of that data dir (`aloft_testkit::containers::network_for`: its own bridge and
/// subnet, which the kit's reaping removes), never the host's default `aloft0`.
pub fn agent_config(data_dir: &Path) -> AgentConfig {
    let mut config = AgentConfig::new(data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (bridge, subnet) = aloft_testkit::containers::network_for(data_dir);
    config.network = NetConfig {
        bridge,
        subnet: subnet.parse().unwrap(),
        subnet6: None,
    };
    config
}
