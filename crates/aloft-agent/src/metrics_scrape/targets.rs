//! Which machines are scraped, and where: every started machine whose config has `metrics`
//! (`[metrics]` of fly.toml, flattened per group), at the address the proxy reaches it by
//! (`routing.rs`): a container machine at its IPv4 address on the bridge and the configured
//! port, a host process at the host port the runtime mapped that port to (its
//! `ALOFT_PORT_<port>`). A pure function of the machines the agent keeps in memory.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use aloft_api::{Machine, MachineState};

use crate::machine_map::AppMachines;

/// The labels every sample of a machine gets (Fly's managed Prometheus adds `app`, `instance`,
/// `region`; Aloft names the machine `machine` and adds its `process_group`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetLabels {
    pub app: String,
    pub process_group: String,
    pub machine: String,
    pub region: String,
}

impl TargetLabels {
    /// `(name, value)` in the order they are written.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("app", &self.app),
            ("process_group", &self.process_group),
            ("machine", &self.machine),
            ("region", &self.region),
        ]
    }
}

/// One machine's metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub labels: TargetLabels,
    /// Where to connect, or why the machine cannot be reached (shown as a failed scrape).
    pub endpoint: Result<SocketAddr, String>,
    /// The request path, with its leading `/`.
    pub path: String,
    pub https: bool,
}

/// The targets of every started machine with `metrics`, by machine id. `ipv4` gives a container
/// machine's address on the bridge (`Controller::machine_ipv4`).
pub fn targets(
    all: &AppMachines,
    ipv4: impl Fn(&str) -> Option<Ipv4Addr>,
) -> BTreeMap<String, Target> {
    all.iter()
        .flat_map(|(app, machines)| machines.values().map(move |m| (app, m)))
        .filter_map(|(app, m)| target(app, m, &ipv4).map(|t| (m.id.clone(), t)))
        .collect()
}

fn target(app: &str, m: &Machine, ipv4: &impl Fn(&str) -> Option<Ipv4Addr>) -> Option<Target> {
    if m.state != MachineState::Started {
        return None;
    }
    let metrics = m.config.metrics.as_ref().filter(|c| c.port != 0)?;
    let port = metrics.port;
    let endpoint = match (ipv4(&m.id), m.host_ports.get(&port)) {
        (Some(ip), _) => Ok(SocketAddr::new(IpAddr::V4(ip), port)),
        (None, Some(&host)) => Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), host)),
        (None, None) => Err(format!(
            "machine {} has no address for its metrics port {port} yet (a host process gets a host port for it when it is created or updated)",
            m.id
        )),
    };
    let path = match metrics.path.trim() {
        "" => "/metrics".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    Some(Target {
        labels: TargetLabels {
            app: app.to_string(),
            process_group: m.process_group().to_string(),
            machine: m.id.clone(),
            region: m.region.clone(),
        },
        endpoint,
        path,
        https: metrics.https,
    })
}

#[cfg(test)]
mod tests {
    use aloft_api::{MachineConfig, MachineMetrics};

    use super::*;

    fn machine(id: &str, state: MachineState, metrics: Option<(u16, &str)>) -> Machine {
        let mut config = MachineConfig::default();
        config
            .metadata
            .insert("fly_process_group".into(), "web".into());
        config.metrics = metrics.map(|(port, path)| MachineMetrics {
            port,
            path: path.into(),
            https: false,
        });
        Machine::new(id, "ams", state, config)
    }

    #[test]
    fn started_machines_with_metrics_at_their_address() {
        let mut host = machine("h1", MachineState::Started, Some((9091, "stats")));
        host.host_ports.insert(9091, 40001);
        let container = machine("c1", MachineState::Started, Some((9091, "/metrics")));
        let unmapped = machine("u1", MachineState::Started, Some((9091, "")));
        let all: AppMachines = BTreeMap::from([(
            "shop".to_string(),
            [
                host,
                container,
                unmapped,
                machine("s1", MachineState::Stopped, Some((9091, "/m"))),
                machine("n1", MachineState::Started, None),
                machine("z1", MachineState::Started, Some((0, "/m"))),
            ]
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect(),
        )]);
        let got = targets(&all, |id| {
            (id == "c1").then(|| Ipv4Addr::new(10, 209, 0, 7))
        });
        assert_eq!(got.keys().collect::<Vec<_>>(), ["c1", "h1", "u1"]);
        assert_eq!(got["h1"].endpoint, Ok("127.0.0.1:40001".parse().unwrap()));
        assert_eq!(got["h1"].path, "/stats");
        assert_eq!(got["c1"].endpoint, Ok("10.209.0.7:9091".parse().unwrap()));
        assert_eq!(got["u1"].path, "/metrics");
        assert!(got["u1"].endpoint.as_ref().unwrap_err().contains("9091"));
        assert_eq!(
            got["c1"].labels,
            TargetLabels {
                app: "shop".into(),
                process_group: "web".into(),
                machine: "c1".into(),
                region: "ams".into(),
            }
        );
    }
}
