//! What a machine's main process is started with: its argv and its environment.
//!
//! Pure functions of a [`LaunchSpec`] (plus the agent's own environment for the few inherited
//! variables), so they are unit tested without spawning anything.

use std::collections::BTreeMap;

use aloft_api::{Guest, MachineConfig};

use crate::LaunchSpec;

/// The variables a machine inherits from the agent, when the agent has them. Everything else
/// of the agent's environment (tokens, `ALOFT_*`, proxies, …) stays out of machines.
/// `PATH` makes `sh`, `sleep`, `python3` resolve the way they do for the agent; `HOME`, `LANG`,
/// `LC_ALL` and `TZ` keep tools that read them (locale, time zone) behaving as on the host.
pub const INHERITED_VARS: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

/// `PATH` used when the agent itself has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The VM size a machine without a `guest` gets, as on Fly.io.
pub const DEFAULT_PRESET: &str = "shared-cpu-1x";

/// App secrets given to a machine as environment variables, name → value. Its `Debug` shows the
/// names only, so a logged [`LaunchSpec`] never carries a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The machine's argv: `init.exec` if set; else (`init.entrypoint` or the image ENTRYPOINT)
/// followed by (`init.cmd` or the image CMD). No shell is involved. `None` when that is empty.
pub fn argv(spec: &LaunchSpec) -> Option<Vec<String>> {
    let init = &spec.config.init;
    let argv: Vec<String> = match &init.exec {
        Some(exec) if !exec.is_empty() => exec.clone(),
        _ => {
            let entry = init.entrypoint.as_ref().unwrap_or(&spec.image_entrypoint);
            let cmd = init.cmd.as_ref().unwrap_or(&spec.image_cmd);
            entry.iter().chain(cmd.iter()).cloned().collect()
        }
    };
    if argv.first().is_none_or(|a| a.is_empty()) {
        None
    } else {
        Some(argv)
    }
}

/// The guest a machine runs with: its own, else that of its `size` preset, else the default
/// preset's.
pub fn effective_guest(config: &MachineConfig) -> Guest {
    if config.guest.is_none() {
        if let Some(p) = config
            .size
            .as_deref()
            .and_then(aloft_api::VmPreset::by_name)
        {
            return p.guest();
        }
    }
    match &config.guest {
        Some(g) if g.cpus > 0 && g.memory_mb > 0 => g.clone(),
        Some(g) => {
            let d = Guest::from_preset(DEFAULT_PRESET).unwrap_or_default();
            Guest {
                cpus: if g.cpus > 0 { g.cpus } else { d.cpus },
                memory_mb: if g.memory_mb > 0 {
                    g.memory_mb
                } else {
                    d.memory_mb
                },
                ..g.clone()
            }
        }
        None => Guest::from_preset(DEFAULT_PRESET).unwrap_or_default(),
    }
}

/// The process group of a machine: its `fly_process_group` metadata (or the legacy key), else
/// a `FLY_PROCESS_GROUP` set in its env, else empty.
pub fn process_group(config: &MachineConfig) -> String {
    match config.process_group() {
        "" => config
            .env
            .get("FLY_PROCESS_GROUP")
            .cloned()
            .unwrap_or_default(),
        g => g.to_string(),
    }
}

/// The service, check and metrics ports inside the machine that need a host port,
/// deduplicated, sorted.
pub fn internal_ports(config: &MachineConfig) -> Vec<u16> {
    let mut ports: Vec<u16> = config.services.iter().map(|s| s.internal_port).collect();
    ports.extend(config.checks.values().filter_map(|c| c.port));
    ports.extend(config.metrics.as_ref().map(|m| m.port));
    ports.retain(|p| *p != 0);
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The `FLY_*` variables every machine gets (flyctl-behaviour §7.2), with `FLY_PRIVATE_IP` =
/// `private_ip`: `FLY_APP_NAME`, `FLY_MACHINE_ID`, `FLY_ALLOC_ID`, `FLY_REGION`,
/// `FLY_VM_MEMORY_MB`, `FLY_MACHINE_VERSION`, `FLY_IMAGE_REF`, `FLY_PRIVATE_IP` and
/// `FLY_PROCESS_GROUP` (when the machine has a group).
pub fn fly_vars(spec: &LaunchSpec, private_ip: &str) -> BTreeMap<String, String> {
    let guest = effective_guest(&spec.config);
    let mut vars = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_string(), v);
    };
    set("FLY_APP_NAME", spec.app.clone());
    set("FLY_MACHINE_ID", spec.machine_id.clone());
    set("FLY_ALLOC_ID", spec.machine_id.clone());
    set("FLY_REGION", spec.region.clone());
    set("FLY_VM_MEMORY_MB", guest.memory_mb.to_string());
    set("FLY_MACHINE_VERSION", spec.instance_id.clone());
    set("FLY_IMAGE_REF", spec.image_ref.clone());
    set("FLY_PRIVATE_IP", private_ip.to_string());
    let group = process_group(&spec.config);
    if !group.is_empty() {
        set("FLY_PROCESS_GROUP", group);
    }
    vars
}

/// The machine's complete environment, in four layers where later ones win:
/// 1. [`INHERITED_VARS`] from `agent_env` (PATH falls back to [`DEFAULT_PATH`]),
/// 2. the config's `env`,
/// 3. the app's secrets ([`LaunchSpec::secrets`]: they win over `[env]`),
/// 4. the platform variables (flyctl-behaviour §7.2) and the host ports: `FLY_APP_NAME`,
///    `FLY_MACHINE_ID`, `FLY_ALLOC_ID`, `FLY_REGION`, `FLY_PROCESS_GROUP` (when the machine has
///    a group), `FLY_VM_MEMORY_MB`, `FLY_MACHINE_VERSION`, `FLY_IMAGE_REF`, `FLY_PRIVATE_IP`,
///    `ALOFT_PORT_<internal>=<host>` per port and `PORT` when the machine has exactly one
///    service port. `PORT` overrides the config's own: on the host network the process must
///    listen on its host port, which is where the proxy sends traffic.
///
/// `PRIMARY_REGION` comes from the config env (flyctl puts it there).
pub fn environment(
    spec: &LaunchSpec,
    agent_env: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = agent_env
        .into_iter()
        .filter(|(k, _)| INHERITED_VARS.contains(&k.as_str()))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    env.extend(spec.config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(spec.secrets.0.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(fly_vars(spec, "127.0.0.1"));
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    for (internal, host) in &spec.host_ports {
        set(&format!("ALOFT_PORT_{internal}"), host.to_string());
    }
    if let Some(host) = single_service_port(&spec.config).and_then(|p| spec.host_ports.get(&p)) {
        set("PORT", host.to_string());
    }
    env
}

/// The internal port of the machine's services when they all use one (what `PORT` is about).
pub fn single_service_port(config: &MachineConfig) -> Option<u16> {
    let mut ports: Vec<u16> = config
        .services
        .iter()
        .map(|s| s.internal_port)
        .filter(|p| *p != 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    match ports[..] {
        [only] => Some(only),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aloft_api::{Init, MachineCheck, MachineService};
    use std::path::PathBuf;

    fn spec(config: MachineConfig) -> LaunchSpec {
        LaunchSpec {
            machine_id: "e2865013a9d086".into(),
            app: "web".into(),
            org: "personal".into(),
            region: "gru".into(),
            instance_id: "01J00000000000000000000000".into(),
            image_dir: PathBuf::from("/tmp"),
            image_ref: "dir:///srv/web".into(),
            image_entrypoint: vec!["/entry".into()],
            image_cmd: vec!["serve".into(), "--fast".into()],
            config,
            host_ports: BTreeMap::new(),
            container: None,
            secrets: SecretEnv::default(),
            volumes: Vec::new(),
        }
    }

    #[test]
    fn argv_prefers_exec_then_entrypoint_and_cmd_overrides() {
        let mut c = MachineConfig::default();
        assert_eq!(
            argv(&spec(c.clone())).unwrap(),
            ["/entry", "serve", "--fast"]
        );
        c.init.cmd = Some(vec!["worker".into()]);
        assert_eq!(argv(&spec(c.clone())).unwrap(), ["/entry", "worker"]);
        c.init.entrypoint = Some(vec![]);
        assert_eq!(argv(&spec(c.clone())).unwrap(), ["worker"]);
        c.init.exec = Some(vec!["/bin/sleep".into(), "1".into()]);
        assert_eq!(argv(&spec(c)).unwrap(), ["/bin/sleep", "1"]);
    }

    #[test]
    fn argv_is_none_when_nothing_to_run() {
        let mut s = spec(MachineConfig::default());
        s.image_entrypoint.clear();
        s.image_cmd.clear();
        assert_eq!(argv(&s), None);
        s.config.init = Init {
            exec: Some(vec![]),
            ..Init::default()
        };
        assert_eq!(argv(&s), None);
    }

    #[test]
    fn environment_layers_inherited_config_platform() {
        let mut c = MachineConfig::default();
        c.env.insert("PRIMARY_REGION".into(), "bog".into());
        c.env.insert("PORT".into(), "8080".into());
        c.env.insert("FLY_REGION".into(), "spoofed".into());
        c.env.insert("LANG".into(), "pt_BR.UTF-8".into());
        c.metadata
            .insert("fly_process_group".into(), "worker".into());
        c.guest = Some(Guest {
            cpus: 2,
            memory_mb: 1024,
            ..Guest::default()
        });
        c.services.push(MachineService {
            internal_port: 8080,
            ..MachineService::default()
        });
        c.services.push(MachineService {
            internal_port: 8080,
            ..MachineService::default()
        });
        c.env.insert("DATABASE_URL".into(), "from-env".into());
        let mut s = spec(c);
        s.host_ports.insert(8080, 40123);
        s.secrets
            .0
            .insert("DATABASE_URL".into(), "from-secret".into());
        s.secrets.0.insert("API_KEY".into(), "k".into());
        assert_eq!(format!("{:?}", s.secrets), r#"{"API_KEY", "DATABASE_URL"}"#);
        let agent = vec![
            ("PATH".to_string(), "/opt/bin:/usr/bin".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("ALOFT_API_TOKEN".to_string(), "secret".to_string()),
        ];
        let env = environment(&s, agent);
        assert_eq!(env["PATH"], "/opt/bin:/usr/bin");
        assert_eq!(env["LANG"], "pt_BR.UTF-8", "config env wins over inherited");
        assert!(
            !env.contains_key("ALOFT_API_TOKEN"),
            "agent secrets never leak"
        );
        assert_eq!(env["FLY_REGION"], "gru", "platform wins over config");
        assert_eq!(
            env["DATABASE_URL"], "from-secret",
            "secrets win over config"
        );
        assert_eq!(env["API_KEY"], "k");
        assert_eq!(env["PRIMARY_REGION"], "bog");
        assert_eq!(env["FLY_PROCESS_GROUP"], "worker");
        assert_eq!(env["FLY_VM_MEMORY_MB"], "1024");
        assert_eq!(env["FLY_MACHINE_ID"], "e2865013a9d086");
        assert_eq!(env["FLY_ALLOC_ID"], "e2865013a9d086");
        assert_eq!(env["FLY_MACHINE_VERSION"], "01J00000000000000000000000");
        assert_eq!(env["FLY_IMAGE_REF"], "dir:///srv/web");
        assert_eq!(env["FLY_PRIVATE_IP"], "127.0.0.1");
        assert_eq!(
            env["PORT"], "40123",
            "one service port: PORT is the host port"
        );
        assert_eq!(env["ALOFT_PORT_8080"], "40123");
    }

    #[test]
    fn no_port_when_several_service_ports_and_default_path() {
        let mut c = MachineConfig::default();
        c.services.push(MachineService {
            internal_port: 8080,
            ..MachineService::default()
        });
        c.services.push(MachineService {
            internal_port: 9090,
            ..MachineService::default()
        });
        let mut s = spec(c);
        s.host_ports.insert(8080, 40001);
        s.host_ports.insert(9090, 40002);
        let env = environment(&s, Vec::new());
        assert!(!env.contains_key("PORT"));
        assert!(!env.contains_key("FLY_PROCESS_GROUP"));
        assert_eq!(env["ALOFT_PORT_9090"], "40002");
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(
            env["FLY_VM_MEMORY_MB"], "256",
            "default guest is shared-cpu-1x"
        );
    }

    #[test]
    fn internal_ports_include_check_ports_once() {
        let mut c = MachineConfig::default();
        c.services.push(MachineService {
            internal_port: 8080,
            ..MachineService::default()
        });
        c.services.push(MachineService {
            internal_port: 0,
            ..MachineService::default()
        });
        c.checks.insert(
            "a".into(),
            MachineCheck {
                port: Some(9000),
                ..MachineCheck::default()
            },
        );
        c.checks.insert(
            "b".into(),
            MachineCheck {
                port: Some(8080),
                ..MachineCheck::default()
            },
        );
        assert_eq!(internal_ports(&c), [8080, 9000]);
        // The metrics port (`[metrics]`) is scraped at its host port too.
        c.metrics = Some(aloft_api::MachineMetrics {
            port: 9091,
            path: "/metrics".into(),
            https: false,
        });
        assert_eq!(internal_ports(&c), [8080, 9000, 9091]);
    }
}
