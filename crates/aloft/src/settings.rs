//! Resolved settings: clap arguments + environment + fly.toml → one struct per command family,
//! in one place (uv's `settings.rs` is the model). Commands get these structs; they neither
//! read the environment nor merge flags over fly.toml themselves.
//!
//! Precedence, everywhere: **a flag, then an environment variable, then fly.toml, then the
//! default.** An empty (or blank) environment variable counts as unset.
//!
//! The environment is read once, by [`Env::from_process`] in `main`, and only for the variables
//! of [`ENV_VARS`]; everything else takes an [`Env`], so each rule is unit-tested with a map
//! instead of the process environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use aloft_config::{AppConfig, Loaded};
use aloft_deploy::{DeployOptions, Strategy};
use anyhow::{anyhow, bail};

use crate::cli::{
    AcmeChallenge, AgentArgs, AppArgs, BuildArgs, Cli, Command, ConfigCommand, DeployArgs,
    LogsArgs, UpArgs,
};
use crate::contexts::{self, ContextFile};
use crate::printer::Mode;

/// Every environment variable the CLI reads, with what it sets. (The agent's own variables,
/// read inside the library crates, are listed in ARCHITECTURE.md.)
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "ALOFT_API_URL",
        "the agent's API URL (else the local agent's): http://, https:// or \
         ssh://[USER@]HOST[:PORT][/DATA-DIR][?aloft=PATH]",
    ),
    (
        "ALOFT_API_TOKEN",
        "the API token (else the context's, else <data-dir>/token)",
    ),
    (
        "ALOFT_CONTEXT",
        "the context of commands, below -C (else the current one of `aloft context use`)",
    ),
    (
        "ALOFT_SSH_CONFIG",
        "an ssh config file for ssh:// agent URLs instead of ~/.ssh/config (ssh -F)",
    ),
    ("ALOFT_APP", "the app of app commands, below -a"),
    (
        "ALOFT_DATA_DIR",
        "the local agent's data dir, below --data-dir",
    ),
    ("ALOFT_LOG", "the log filter (tracing directives), over -v"),
    (
        "ALOFT_BUILD_ISOLATION",
        "how buildah runs RUN steps: chroot (default), oci or rootless",
    ),
    (
        "DOCKER_HOST",
        "the local Docker engine prebuilt images are looked up in (unix://…)",
    ),
    ("NO_COLOR", "set and not empty: no colour"),
    ("XDG_STATE_HOME", "the default data dir's parent"),
    (
        "XDG_CONFIG_HOME",
        "the parent of the config dir (contexts, pinned agent certificates)",
    ),
    (
        "HOME",
        "the default data dir's parent without XDG_STATE_HOME",
    ),
    (
        "TERM",
        "ssh console, console: the terminal type the machine's command sees (default xterm)",
    ),
    (
        "ALOFT_SECRETS_KEY",
        "aloft agent: the key sealing app secrets, base64 of 32 bytes (else <data-dir>/secrets.key)",
    ),
];

/// The end of `aloft -h`: the variables that pick the agent (`--help` lists them all).
pub const ENV_HELP_SHORT: &str = "Environment: ALOFT_API_URL and ALOFT_API_TOKEN (the agent), \
     ALOFT_CONTEXT, ALOFT_APP, … (all of them: --help)";

/// The end of `aloft --help`: every variable of [`ENV_VARS`] and what it sets.
pub fn env_help() -> String {
    let width = ENV_VARS.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::from("Environment (a flag wins over its variable; empty = unset):\n");
    for (name, what) in ENV_VARS {
        out.push_str(&format!("  {name:<width$}  {what}\n"));
    }
    out
}

/// A snapshot of the variables of [`ENV_VARS`].
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, OsString>,
}

impl Env {
    /// Reads the variables of [`ENV_VARS`] from the process environment: the only place the
    /// CLI reads it.
    pub fn from_process() -> Env {
        Env {
            vars: ENV_VARS
                .iter()
                .filter_map(|(k, _)| Some((k.to_string(), std::env::var_os(k)?)))
                .collect(),
        }
    }

    /// An environment of the given pairs (tests).
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect(),
        }
    }

    /// The variable as text; `None` when unset, blank or not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)?
            .to_str()
            .filter(|v| !v.trim().is_empty())
    }

    /// The variable as a path; `None` when unset or empty.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.vars
            .get(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

/// The printer's mode: `--json`; colour only when stdout is a terminal and `NO_COLOR` is unset
/// (no-color.org: set and not empty turns colour off). JSON is never coloured.
pub fn output_mode(json: bool, env: &Env, stdout_is_terminal: bool) -> Mode {
    Mode {
        json,
        colour: !json && stdout_is_terminal && env.path("NO_COLOR").is_none(),
    }
}

/// The tracing filter: `ALOFT_LOG` over the level of `-v`. The second value is the filter of
/// `-v` alone, used when `ALOFT_LOG` does not parse.
pub fn log_filter(verbose: u8, env: &Env) -> (Option<String>, &'static str) {
    let default = match verbose {
        0 => "warn",
        1 => "info,aloft=debug",
        _ => "debug",
    };
    (env.get("ALOFT_LOG").map(str::to_string), default)
}

/// Commands whose results have a JSON form (the global `--json`).
pub fn has_json_output(cli: &Cli) -> bool {
    use crate::cli::{AppsCommand, MachineCommand, PlatformCommand, ScaleCommand};
    match &cli.command {
        Command::Config(c) => matches!(c, ConfigCommand::Show { .. }),
        Command::Platform(PlatformCommand::VmSizes | PlatformCommand::Regions) => true,
        Command::Apps(c) => matches!(
            c,
            AppsCommand::Create { .. } | AppsCommand::List | AppsCommand::Events { .. }
        ),
        Command::Tokens(_) => true,
        Command::Releases(r) => r.command.is_none(),
        Command::Status(_) | Command::Images(_) | Command::Certs(_) => true,
        Command::Volumes(_) => true,
        Command::Ips(_) | Command::Dig(_) => true,
        Command::Secrets(c) => matches!(c, crate::cli::SecretsCommand::List(_)),
        Command::Scale(c) => matches!(c, ScaleCommand::Show(_)),
        Command::Machine(c) => matches!(
            c,
            MachineCommand::List(_)
                | MachineCommand::Status { .. }
                | MachineCommand::Exec { .. }
                | MachineCommand::Ps { .. }
        ),
        Command::Context(c) => matches!(c, crate::cli::ContextCommand::List),
        Command::Agent(_) | Command::Deploy(_) | Command::Up(_) | Command::Logs(_) => false,
        Command::Ssh(_) | Command::Console(_) => false,
    }
}

/// The local agent's data dir: `--data-dir`, then `ALOFT_DATA_DIR`, then
/// `$XDG_STATE_HOME/aloft`, then `$HOME/.local/state/aloft`, then `./.aloft-state`.
pub fn data_dir(flag: Option<&Path>, env: &Env) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| env.path("ALOFT_DATA_DIR"))
        .unwrap_or_else(|| {
            aloft_client::local::data_dir_from(
                env.path("XDG_STATE_HOME").as_deref().map(Path::as_os_str),
                env.path("HOME").as_deref().map(Path::as_os_str),
            )
        })
}

/// How to reach the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// `ALOFT_API_URL`, then the context's URL, then `http://` + `<data-dir>/agent.addr`, then
    /// the default address.
    pub url: String,
    /// `ALOFT_API_TOKEN`, then the context's token, then (local agent) `<data-dir>/token`.
    pub token: Option<String>,
    /// Whether `url` came from `ALOFT_API_URL` (`aloft up` says so when nothing answers there).
    pub url_from_env: bool,
    /// The data dir whose files were read (see [`data_dir`]).
    pub data_dir: PathBuf,
    /// The context in use, when one other than the local agent is.
    pub context: Option<String>,
    /// The context's pinned certificate fingerprint, if it names one.
    pub fingerprint: Option<String>,
    /// The user's config dir (contexts, pinned certificates), if there is a home.
    pub config_dir: Option<PathBuf>,
    /// `ALOFT_SSH_CONFIG`.
    pub ssh_config: Option<PathBuf>,
}

impl ApiSettings {
    /// The local agent (`aloft up`, which never uses contexts): `data_dir_flag` is `--data-dir`
    /// where the command has one; `ALOFT_API_URL`/`ALOFT_API_TOKEN` still win.
    pub fn resolve(env: &Env, data_dir_flag: Option<&Path>) -> ApiSettings {
        let data_dir = data_dir(data_dir_flag, env);
        let files = aloft_client::local::local_agent(&data_dir);
        let env_url = env.get("ALOFT_API_URL").map(str::to_string);
        // The local agent's token is not sent to an ssh:// agent (its own comes from the server).
        let local_token = files
            .token
            .filter(|_| !env_url.as_deref().is_some_and(is_ssh_url));
        ApiSettings {
            url_from_env: env_url.is_some(),
            url: env_url.clone().unwrap_or(files.api_url),
            token: env
                .get("ALOFT_API_TOKEN")
                .map(str::to_string)
                .or(local_token),
            // The local agent's own certificate, when it serves TLS (not ALOFT_API_URL's).
            fingerprint: if env_url.is_some() {
                None
            } else {
                files.fingerprint
            },
            data_dir,
            context: None,
            config_dir: user_config_dir(env),
            ssh_config: env.path("ALOFT_SSH_CONFIG"),
        }
    }

    /// The agent of commands other than `aloft up`: `-C NAME`, then `ALOFT_API_URL`, then
    /// `ALOFT_CONTEXT`, then the current context, then the local agent.
    pub fn resolve_with_context(env: &Env, context_flag: Option<&str>) -> anyhow::Result<Self> {
        let local = ApiSettings::resolve(env, None);
        let name = match context_flag {
            Some(name) => name.to_string(),
            None if local.url_from_env => return Ok(local),
            None => match env.get("ALOFT_CONTEXT") {
                Some(name) => name.to_string(),
                None => match &local.config_dir {
                    Some(dir) => ContextFile::load(dir)?.current_name().to_string(),
                    None => return Ok(local),
                },
            },
        };
        if name == contexts::LOCAL {
            return Ok(local);
        }
        let Some(dir) = &local.config_dir else {
            bail!("context `{name}`: there is no config dir to read contexts from (set HOME or XDG_CONFIG_HOME)");
        };
        let file = ContextFile::load(dir)?;
        let ctx = file
            .get(&name)?
            .expect("only the local context is None")
            .clone();
        Ok(ApiSettings {
            url: ctx.url,
            token: env.get("ALOFT_API_TOKEN").map(str::to_string).or(ctx.token),
            url_from_env: false,
            context: Some(name),
            fingerprint: ctx.fingerprint,
            ..local
        })
    }

    /// A client of this API, over the transport of its URL's scheme; `on_pin` is told when an
    /// agent's certificate is pinned on first use.
    pub fn client(
        &self,
        on_pin: Option<aloft_client::OnPin>,
    ) -> anyhow::Result<aloft_client::Client> {
        let options = aloft_client::ConnectOptions {
            token: self.token.clone(),
            pins: self.config_dir.as_ref().map(|d| d.join(PINS_FILE)),
            fingerprint: self.fingerprint.clone(),
            ssh_config: self.ssh_config.clone(),
            on_pin,
        };
        aloft_client::connect(&self.url, options).map_err(|e| match &self.context {
            Some(name) => e.context(format!("context `{name}` ({})", self.url)),
            None => e,
        })
    }
}

/// Whether `url` is an `ssh://` agent URL.
fn is_ssh_url(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("ssh://"))
}

/// The file of pinned agent certificates in the config dir.
pub const PINS_FILE: &str = "known_agents";

/// The user's config dir: `$XDG_CONFIG_HOME/aloft`, else `~/.config/aloft`.
pub fn user_config_dir(env: &Env) -> Option<PathBuf> {
    contexts::config_dir_from(env.path("XDG_CONFIG_HOME"), env.path("HOME"))
}

/// The app of app commands: `-a`, then `ALOFT_APP`, then the `app` of the config file (read
/// only for its name; its errors are left to the commands that use the whole file).
pub fn app_name(args: &AppArgs, env: &Env) -> anyhow::Result<String> {
    if let Some(app) = args.app.as_deref().filter(|a| !a.is_empty()) {
        return Ok(app.to_string());
    }
    if let Some(app) = env.get("ALOFT_APP") {
        return Ok(app.to_string());
    }
    app_of_config_file(&args.config)
}

/// The `app` of the config file at `path`; errors name what to do instead.
pub fn app_of_config_file(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        if let Ok(loaded) = aloft_config::load(path) {
            if !loaded.config.app.is_empty() {
                return Ok(loaded.config.app);
            }
        }
        bail!(
            "{} has no `app` name; pass the app with -a APP",
            path.display()
        );
    }
    bail!(
        "no app given: pass -a APP, or run where {} names the app (or pass -c path/to/fly.toml)",
        path.display()
    )
}

/// The app of a command that has loaded the whole config: `-a`, then `ALOFT_APP`, then its
/// `app`.
fn app_of_loaded(args: &AppArgs, env: &Env, config: &AppConfig) -> anyhow::Result<String> {
    args.app
        .as_deref()
        .filter(|a| !a.is_empty())
        .or_else(|| env.get("ALOFT_APP"))
        .or((!config.app.is_empty()).then_some(config.app.as_str()))
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!(
                "{} has no `app` name; add `app = \"my-app\"` to it or pass -a APP",
                args.config.display()
            )
        })
}

/// `aloft agent`: the agent's config from its flags (data dir: see [`data_dir`]).
pub fn agent_config(args: AgentArgs, env: &Env) -> aloft_agent::AgentConfig {
    let mut config = aloft_agent::AgentConfig::new(data_dir(args.data_dir.as_deref(), env));
    config.listen = args.listen;
    config.proxy = (!args.no_proxy).then(|| proxy_config(&args));
    config.regions = args.regions;
    config.logs = aloft_agent::LogLimits {
        total_bytes: args.log_budget_mb << 20,
        min_free_bytes: args.log_min_free_mb << 20,
        ..config.logs
    };
    config.limits = aloft_agent::settings::Limits {
        max_group_count: args.max_group_count,
        memory_overcommit: args.memory_overcommit,
        max_api_connections: args.max_api_connections,
        api_header_timeout: args.api_header_timeout,
        keep_releases: args.keep_releases,
        ..aloft_agent::settings::Limits::default()
    };
    config.network = aloft_agent::NetConfig {
        bridge: args.bridge,
        subnet: args.subnet,
        subnet6: args.subnet6,
    };
    config.oci_runtime = args.oci_runtime;
    config.public_addresses = aloft_agent::PublicAddresses {
        ipv4: args.public_ipv4,
        ipv6: args.public_ipv6,
    };
    config.acme = aloft_agent::AcmeSettings {
        directory_url: args.acme_directory,
        contact: args.acme_emails,
        ca_roots: args.acme_ca_roots,
        challenge: match args.acme_challenge {
            AcmeChallenge::Http01 => aloft_agent::settings::ChallengeKind::Http01,
            AcmeChallenge::TlsAlpn01 => aloft_agent::settings::ChallengeKind::TlsAlpn01,
        },
    };
    config.secrets_key = secrets_key(env);
    config.tls = match (args.tls_cert, args.tls_key, args.tls_acme) {
        (Some(cert), Some(key), _) => Some(aloft_agent::ApiCertificate::Files { cert, key }),
        (_, _, Some(host)) => Some(aloft_agent::ApiCertificate::Acme { host }),
        _ if args.tls => Some(aloft_agent::ApiCertificate::SelfSigned {
            names: args.tls_sans,
        }),
        _ => None,
    };
    config.insecure_listen = args.insecure_listen;
    if let Some(ms) = args.schedule_unit_ms {
        config.schedule_unit = aloft_api::schedule::PeriodUnit::Scaled {
            hour_ms: i64::from(ms),
        };
    }
    config.metrics = aloft_agent::metrics_scrape::ScrapeSettings {
        interval: args.metrics_interval,
        timeout: args.metrics_timeout,
        ..config.metrics
    };
    config.volume_extend_interval = args.volume_extend_interval;
    config.volume_snapshot_interval = args.volume_snapshot_interval;
    config
}

/// `ALOFT_SECRETS_KEY`, for an agent started here (`aloft agent`, or embedded by `aloft up`).
pub fn secrets_key(env: &Env) -> Option<aloft_agent::secrets_key::KeyText> {
    env.get("ALOFT_SECRETS_KEY")
        .map(|k| aloft_agent::secrets_key::KeyText(k.to_string()))
}

/// The proxy settings of `aloft agent`'s flags, over the proxy's defaults.
fn proxy_config(args: &AgentArgs) -> aloft_agent::ProxyConfig {
    aloft_agent::ProxyConfig {
        bind_ip: args.proxy_bind,
        port_map: args.port_map.iter().copied().collect(),
        domain: args.domain.clone(),
        idle_window: args.idle_window,
        // A pass every quarter of the idle window (1 s to 60 s): a machine idle for the window
        // is stopped soon after, whatever the window.
        autostop_interval: (args.idle_window / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        ),
        region: args
            .regions
            .first()
            .cloned()
            .unwrap_or_else(|| aloft_agent::ProxyConfig::default().region),
        ..aloft_agent::ProxyConfig::default()
    }
}

/// Deploy flags that fly.toml's `[deploy]` (or its `primary_region`) also sets.
#[derive(Debug, Default, Clone)]
pub struct DeployFlags {
    pub strategy: Option<String>,
    pub max_unavailable: Option<f64>,
    pub wait_timeout: Option<String>,
    pub update_only: bool,
    pub ha: bool,
    pub smoke_checks: bool,
    pub primary_region: Option<String>,
    /// `--skip-release-command`.
    pub skip_release_command: bool,
    /// `--release-command-timeout` (a Go duration, bare seconds or `none`).
    pub release_command_timeout: Option<String>,
    /// `--volume-initial-size` (GB).
    pub volume_initial_size: Option<u32>,
}

/// The deploy options and primary region: each flag, then fly.toml, then the default
/// (rolling, `DeployOptions::default()`'s max unavailable and wait timeout, no region).
pub fn deploy_options(
    flags: &DeployFlags,
    config: &AppConfig,
) -> anyhow::Result<(DeployOptions, Option<String>)> {
    let deploy = config.deploy.clone().unwrap_or_default();
    let strategy = match flags.strategy.as_deref().or(deploy.strategy.as_deref()) {
        None => Strategy::Rolling,
        Some(s) => Strategy::parse(s)?,
    };
    let release_command = match config.release_command_argv() {
        Some(command) if !flags.skip_release_command => {
            let timeout = match &flags.release_command_timeout {
                Some(t) => parse_duration_flag(t, "--release-command-timeout")?,
                None => deploy
                    .release_command_timeout
                    .unwrap_or_else(aloft_deploy::spec::default_release_command_timeout),
            };
            let guest = config
                .release_command_guest()
                .map_err(|e| anyhow!("[deploy.release_command_vm]: {e}"))?;
            Some(Box::new(aloft_deploy::spec::ReleaseCommand {
                command,
                timeout,
                guest,
            }))
        }
        _ => None,
    };
    let mut options = DeployOptions {
        strategy,
        update_only: flags.update_only,
        ha: flags.ha,
        smoke_checks: flags.smoke_checks,
        release_command,
        volume_initial_size: flags.volume_initial_size,
        ..DeployOptions::default()
    };
    if let Some(m) = flags.max_unavailable.or(deploy.max_unavailable) {
        if m.is_nan() || m <= 0.0 {
            bail!("--max-unavailable must be > 0 (a count ≥ 1 or a fraction below 1), got {m}");
        }
        options.max_unavailable = m;
    }
    if let Some(w) = &flags.wait_timeout {
        options.wait_timeout = parse_duration_flag(w, "--wait-timeout")?;
    } else if let Some(w) = deploy.wait_timeout {
        options.wait_timeout = w;
    }
    let primary_region = flags
        .primary_region
        .clone()
        .or(config.primary_region.clone())
        .filter(|r| !r.is_empty());
    if let Some(r) = &primary_region {
        aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
    }
    Ok((options, primary_region))
}

/// `--wait-timeout`, `--release-command-timeout`: a Go duration (`5m`), bare seconds, or `none`
/// (a day).
fn parse_duration_flag(s: &str, flag: &str) -> anyhow::Result<aloft_api::GoDuration> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(aloft_api::GoDuration::from_secs(86_400));
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(aloft_api::GoDuration::from_secs(secs));
    }
    aloft_api::duration::parse_go_duration(s)
        .map(aloft_api::GoDuration)
        .map_err(|e| anyhow!("{flag}: {e}"))
}

/// Everything a deploy needs, resolved from flags, environment and fly.toml.
pub struct DeploySettings {
    pub config_path: PathBuf,
    /// The valid config (checked, its diagnostics printed, before resolving).
    pub loaded: Loaded,
    pub app: String,
    pub options: DeployOptions,
    pub primary_region: Option<String>,
    /// Only these groups; empty = all.
    pub process_groups: Vec<String>,
    pub yes: bool,
    pub detach: bool,
    /// How the app's image is made.
    pub build: BuildSettings,
    /// `--build-only`: make the image and stop (no release).
    pub build_only: bool,
    /// `--push` (with `--build-only`): ship the image to the agent's store.
    pub push: bool,
}

/// How buildah runs a Dockerfile's RUN steps (`buildah build --isolation`).
pub const ISOLATIONS: &[&str] = &["chroot", "oci", "rootless"];

/// How the app's image is made (`crate::build`), resolved from `--image`/`--dockerfile`/
/// `--build-arg`…, the environment and `[build]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildSettings {
    /// The build context: the config file's directory.
    pub context: PathBuf,
    /// `--image`, else `[build] image`: use this image instead of building.
    pub image: Option<String>,
    /// `--dockerfile` (as given), else `[build] dockerfile` (relative to the context), else
    /// `<context>/Dockerfile`.
    pub dockerfile: PathBuf,
    /// The Dockerfile was named (flag or fly.toml): it must exist.
    pub dockerfile_named: bool,
    /// `[build] ignorefile` (relative to the context); else buildah reads `.dockerignore`.
    pub ignorefile: Option<PathBuf>,
    /// `--build-target`, else `[build] build-target`.
    pub target: Option<String>,
    /// `[build.args]` overlaid with `--build-arg` (the flag wins per key).
    pub args: BTreeMap<String, String>,
    pub no_cache: bool,
    /// `--image-label`: the built image's tag.
    pub label: Option<String>,
    /// One of [`ISOLATIONS`]: `ALOFT_BUILD_ISOLATION`, else `chroot`.
    pub isolation: String,
    /// `[build] compression` / `compression_level`: applied when the image is written.
    pub compression: Option<String>,
    pub compression_level: Option<i64>,
    /// Where built images are written as OCI layouts: `<data-dir>/builds`.
    pub out_dir: PathBuf,
    /// `DOCKER_HOST` (prebuilt images are also looked up in the Docker engine it names).
    pub docker_host: Option<String>,
}

impl BuildSettings {
    /// Flag > environment > fly.toml > default, for each setting.
    pub fn resolve(
        args: BuildArgs,
        env: &Env,
        config: &AppConfig,
        config_path: &Path,
        data_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let context = config_dir(config_path);
        let build = config.build.clone().unwrap_or_default();
        let mut build_args = build.args.clone();
        for kv in &args.build_args {
            let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                bail!("--build-arg {kv:?}: expected KEY=VALUE");
            };
            build_args.insert(k.to_string(), v.to_string());
        }
        let (dockerfile, dockerfile_named) = match (&args.dockerfile, &build.dockerfile) {
            (Some(flag), _) => (flag.clone(), true),
            (None, Some(file)) => (context.join(file), true),
            (None, None) => (context.join("Dockerfile"), false),
        };
        let isolation = env.get("ALOFT_BUILD_ISOLATION").unwrap_or("chroot");
        if !ISOLATIONS.contains(&isolation) {
            bail!(
                "ALOFT_BUILD_ISOLATION={isolation:?}: expected one of {}",
                ISOLATIONS.join(", ")
            );
        }
        Ok(BuildSettings {
            image: args.image.or(build.image).filter(|i| !i.is_empty()),
            dockerfile,
            dockerfile_named,
            ignorefile: build.ignorefile.as_ref().map(|f| context.join(f)),
            target: args.build_target.or(build.build_target),
            args: build_args,
            no_cache: args.no_cache,
            label: args.image_label,
            isolation: isolation.to_string(),
            compression: build.compression,
            compression_level: build.compression_level,
            out_dir: data_dir.join("builds"),
            docker_host: env.get("DOCKER_HOST").map(str::to_string),
            context,
        })
    }
}

/// The directory of a config file (`.` for a bare file name): the app directory.
pub fn config_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl DeploySettings {
    /// `aloft deploy`, given its config once loaded and checked.
    pub fn resolve(args: DeployArgs, env: &Env, loaded: Loaded) -> anyhow::Result<Self> {
        if args.remote_only {
            anyhow::bail!(
                "--remote-only: aloft has no remote builder; images are built on this machine \
                 with buildah (drop the flag, or build elsewhere and deploy with --image REF)"
            );
        }
        let app = app_of_loaded(&args.app, env, &loaded.config)?;
        let flags = DeployFlags {
            strategy: args.strategy,
            max_unavailable: args.max_unavailable,
            wait_timeout: args.wait_timeout,
            update_only: args.update_only,
            ha: args.ha,
            smoke_checks: args.smoke_checks,
            primary_region: args.primary_region,
            skip_release_command: args.skip_release_command,
            release_command_timeout: args.release_command_timeout,
            volume_initial_size: args.volume_initial_size,
        };
        let (options, primary_region) = deploy_options(&flags, &loaded.config)?;
        let build = BuildSettings::resolve(
            args.build,
            env,
            &loaded.config,
            &args.app.config,
            data_dir(None, env),
        )?;
        Ok(DeploySettings {
            config_path: args.app.config,
            loaded,
            app,
            options,
            primary_region,
            process_groups: args.process_groups,
            yes: args.yes,
            detach: args.detach,
            build,
            build_only: args.build_only,
            push: args.push,
        })
    }
}

/// `aloft up`: a deploy of every group (one machine per new group, smoke-checked so a group
/// that cannot start fails at once), and where the agent is.
pub struct UpSettings {
    pub deploy: DeploySettings,
    pub api: ApiSettings,
    pub detach: bool,
    /// The embedded agent's container network, when one is started.
    pub network: aloft_agent::NetConfig,
    /// The embedded agent's app domain (`<app>.<domain>`).
    pub domain: String,
    /// The embedded agent's secrets key (`ALOFT_SECRETS_KEY`).
    pub secrets_key: Option<aloft_agent::secrets_key::KeyText>,
}

impl UpSettings {
    /// `aloft up`, given its config once loaded and checked.
    pub fn resolve(args: UpArgs, env: &Env, loaded: Loaded) -> anyhow::Result<Self> {
        let app = app_of_loaded(&args.app, env, &loaded.config)?;
        let flags = DeployFlags {
            ha: false,
            smoke_checks: true,
            ..DeployFlags::default()
        };
        let (options, primary_region) = deploy_options(&flags, &loaded.config)?;
        let api = ApiSettings::resolve(env, args.data_dir.as_deref());
        let build = BuildSettings::resolve(
            args.build,
            env,
            &loaded.config,
            &args.app.config,
            api.data_dir.clone(),
        )?;
        Ok(UpSettings {
            api,
            deploy: DeploySettings {
                config_path: args.app.config,
                loaded,
                app,
                options,
                primary_region,
                process_groups: Vec::new(),
                yes: args.yes,
                detach: false,
                build,
                build_only: false,
                push: false,
            },
            detach: args.detach,
            network: aloft_agent::NetConfig {
                bridge: args.bridge,
                subnet: args.subnet,
                subnet6: None,
            },
            domain: args.domain,
            secrets_key: secrets_key(env),
        })
    }
}

/// `aloft logs`.
pub struct LogsSettings {
    pub app: String,
    pub group: Option<String>,
    pub machine: Option<String>,
    pub region: Option<String>,
    /// Follow new lines (not `--no-tail`).
    pub follow: bool,
}

impl LogsSettings {
    pub fn resolve(args: LogsArgs, env: &Env) -> anyhow::Result<Self> {
        if let Some(r) = &args.region {
            aloft_deploy::scale::check_regions(std::slice::from_ref(r))?;
        }
        Ok(LogsSettings {
            app: app_name(&args.app, env)?,
            group: args.group,
            machine: args.machine,
            region: args.region,
            follow: !args.no_tail,
        })
    }
}

/// The `TERM` a console session passes to the machine: the local one, else
/// [`aloft_api::console::DEFAULT_TERM`].
pub fn terminal_type(env: &Env) -> String {
    env.get("TERM")
        .unwrap_or(aloft_api::console::DEFAULT_TERM)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_args(app: Option<&str>, config: &Path) -> AppArgs {
        AppArgs {
            app: app.map(str::to_string),
            config: config.to_path_buf(),
        }
    }

    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fly.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn blank_variables_count_as_unset() {
        let env = Env::from_pairs(&[("ALOFT_APP", "  "), ("ALOFT_DATA_DIR", "")]);
        assert_eq!(env.get("ALOFT_APP"), None);
        assert_eq!(env.path("ALOFT_DATA_DIR"), None);
        assert_eq!(env.get("NOT_SET"), None);
    }

    #[test]
    fn app_flag_then_env_then_fly_toml() {
        let (_dir, path) = config_file("app = \"from-file\"\n");
        let env = Env::from_pairs(&[("ALOFT_APP", "from-env")]);
        let none = Env::default();
        assert_eq!(
            app_name(&app_args(Some("flag"), &path), &env).unwrap(),
            "flag"
        );
        assert_eq!(app_name(&app_args(None, &path), &env).unwrap(), "from-env");
        assert_eq!(
            app_name(&app_args(None, &path), &none).unwrap(),
            "from-file"
        );
        // An empty -a is no app.
        assert_eq!(
            app_name(&app_args(Some(""), &path), &none).unwrap(),
            "from-file"
        );
    }

    #[test]
    fn no_app_anywhere_says_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("fly.toml");
        let err = app_name(&app_args(None, &missing), &Env::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("no app given: pass -a APP"),
            "{err}"
        );
        let (_dir, nameless) = config_file("primary_region = \"gru\"\n");
        let err = app_name(&app_args(None, &nameless), &Env::default()).unwrap_err();
        assert!(err.to_string().contains("has no `app` name"), "{err}");
    }

    #[test]
    fn data_dir_flag_then_env_then_xdg_then_home() {
        let env = Env::from_pairs(&[
            ("ALOFT_DATA_DIR", "/env"),
            ("XDG_STATE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            data_dir(Some(Path::new("/flag")), &env),
            PathBuf::from("/flag")
        );
        assert_eq!(data_dir(None, &env), PathBuf::from("/env"));
        let env = Env::from_pairs(&[("XDG_STATE_HOME", "/xdg"), ("HOME", "/home/u")]);
        assert_eq!(data_dir(None, &env), PathBuf::from("/xdg/aloft"));
        let env = Env::from_pairs(&[("HOME", "/home/u")]);
        assert_eq!(
            data_dir(None, &env),
            PathBuf::from("/home/u/.local/state/aloft")
        );
    }

    #[test]
    fn api_env_then_the_data_dirs_files_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.addr"), "127.0.0.1:5555\n").unwrap();
        std::fs::write(dir.path().join("token"), "file-token\n").unwrap();
        let d = dir.path().to_str().unwrap();

        let files = ApiSettings::resolve(&Env::from_pairs(&[("ALOFT_DATA_DIR", d)]), None);
        assert_eq!(files.url, "http://127.0.0.1:5555");
        assert_eq!(files.token.as_deref(), Some("file-token"));
        assert!(!files.url_from_env);

        let env = Env::from_pairs(&[
            ("ALOFT_DATA_DIR", d),
            ("ALOFT_API_URL", "http://agent:4280"),
            ("ALOFT_API_TOKEN", "env-token"),
        ]);
        let from_env = ApiSettings::resolve(&env, None);
        assert_eq!(from_env.url, "http://agent:4280");
        assert_eq!(from_env.token.as_deref(), Some("env-token"));
        assert!(from_env.url_from_env);

        let empty = tempfile::tempdir().unwrap();
        let default = ApiSettings::resolve(&Env::default(), Some(empty.path()));
        assert_eq!(default.url, "http://127.0.0.1:4280");
        assert_eq!(default.token, None);
        assert_eq!(default.data_dir, empty.path());
    }

    #[test]
    fn the_local_token_is_not_sent_to_an_ssh_agent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "local-token\n").unwrap();
        let d = dir.path().to_str().unwrap();
        let ssh = |url: &str| {
            let env = Env::from_pairs(&[("ALOFT_DATA_DIR", d), ("ALOFT_API_URL", url)]);
            ApiSettings::resolve(&env, None).token
        };
        assert_eq!(ssh("ssh://root@server"), None);
        assert_eq!(ssh("SSH://root@server"), None);
        assert_eq!(ssh("http://127.0.0.1:4280").as_deref(), Some("local-token"));
        let env = Env::from_pairs(&[
            ("ALOFT_DATA_DIR", d),
            ("ALOFT_API_URL", "ssh://root@server"),
            ("ALOFT_API_TOKEN", "mine"),
        ]);
        assert_eq!(
            ApiSettings::resolve(&env, None).token.as_deref(),
            Some("mine")
        );
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        let none = Env::default();
        assert!(output_mode(false, &none, true).colour);
        assert!(!output_mode(false, &none, false).colour);
        let no_color = Env::from_pairs(&[("NO_COLOR", "1")]);
        assert!(!output_mode(false, &no_color, true).colour);
        // no-color.org: an empty NO_COLOR does not count.
        let empty = Env::from_pairs(&[("NO_COLOR", "")]);
        assert!(output_mode(false, &empty, true).colour);
        assert!(
            !output_mode(true, &none, true).colour,
            "JSON is never coloured"
        );
    }

    #[test]
    fn aloft_log_over_verbosity() {
        assert_eq!(log_filter(0, &Env::default()), (None, "warn"));
        assert_eq!(log_filter(1, &Env::default()).1, "info,aloft=debug");
        let env = Env::from_pairs(&[("ALOFT_LOG", "trace")]);
        assert_eq!(log_filter(2, &env), (Some("trace".into()), "debug"));
    }

    fn config(text: &str) -> AppConfig {
        let (_dir, path) = config_file(text);
        aloft_config::load(&path).unwrap().config
    }

    #[test]
    fn deploy_flags_then_fly_toml_then_defaults() {
        let c = config(
            "app = \"a\"\nprimary_region = \"gru\"\n[deploy]\nstrategy = \"immediate\"\nmax_unavailable = 2\nwait_timeout = \"2m\"\n",
        );
        let (o, region) = deploy_options(&DeployFlags::default(), &c).unwrap();
        assert_eq!(o.strategy, Strategy::Immediate);
        assert_eq!(o.max_unavailable, 2.0);
        assert_eq!(o.wait_timeout.as_duration().as_secs(), 120);
        assert_eq!(region.as_deref(), Some("gru"));

        let flags = DeployFlags {
            strategy: Some("rolling".into()),
            max_unavailable: Some(0.5),
            wait_timeout: Some("30".into()),
            primary_region: Some("ams".into()),
            ..DeployFlags::default()
        };
        let (o, region) = deploy_options(&flags, &c).unwrap();
        assert_eq!(o.strategy, Strategy::Rolling);
        assert_eq!(o.max_unavailable, 0.5);
        assert_eq!(o.wait_timeout.as_duration().as_secs(), 30);
        assert_eq!(region.as_deref(), Some("ams"));

        let (o, region) =
            deploy_options(&DeployFlags::default(), &config("app = \"a\"\n")).unwrap();
        let d = DeployOptions::default();
        assert_eq!(o.strategy, Strategy::Rolling);
        assert_eq!(o.max_unavailable, d.max_unavailable);
        assert_eq!(o.wait_timeout, d.wait_timeout);
        assert_eq!(region, None);
    }

    #[test]
    fn release_command_from_fly_toml_with_flag_overrides() {
        let c = config(
            "app = \"a\"\n[deploy]\nrelease_command = \"bin/migrate --all 'a b'\"\nrelease_command_timeout = \"90s\"\n[deploy.release_command_vm]\nsize = \"shared-cpu-4x\"\n",
        );
        let (o, _) = deploy_options(&DeployFlags::default(), &c).unwrap();
        let rc = o.release_command.unwrap();
        assert_eq!(rc.command, ["bin/migrate", "--all", "a b"]);
        assert_eq!(rc.timeout.as_duration().as_secs(), 90);
        assert_eq!(rc.guest.unwrap().cpus, 4);
        let flags = DeployFlags {
            release_command_timeout: Some("none".into()),
            ..DeployFlags::default()
        };
        let (o, _) = deploy_options(&flags, &c).unwrap();
        assert_eq!(
            o.release_command.unwrap().timeout.as_duration().as_secs(),
            86_400
        );
        let flags = DeployFlags {
            skip_release_command: true,
            ..DeployFlags::default()
        };
        assert_eq!(deploy_options(&flags, &c).unwrap().0.release_command, None);
        let (o, _) = deploy_options(&DeployFlags::default(), &config("app = \"a\"\n")).unwrap();
        assert_eq!(o.release_command, None);
        let flags = DeployFlags {
            release_command_timeout: Some("soon".into()),
            ..DeployFlags::default()
        };
        let err = deploy_options(&flags, &c).unwrap_err().to_string();
        assert!(err.contains("--release-command-timeout"), "{err}");
    }

    #[test]
    fn bad_deploy_flags_are_refused_with_what_to_use() {
        let c = config("app = \"a\"\n");
        let refuse = |flags: DeployFlags| deploy_options(&flags, &c).unwrap_err().to_string();
        assert!(refuse(DeployFlags {
            strategy: Some("sideways".into()),
            ..DeployFlags::default()
        })
        .contains("use one of rolling, immediate, canary, bluegreen"));
        assert!(refuse(DeployFlags {
            max_unavailable: Some(0.0),
            ..DeployFlags::default()
        })
        .contains("must be > 0"));
        assert!(refuse(DeployFlags {
            primary_region: Some("xyz".into()),
            ..DeployFlags::default()
        })
        .contains("unknown region"));
    }

    #[test]
    fn wait_timeout_forms() {
        let secs = |s: &str| {
            parse_duration_flag(s, "--wait-timeout")
                .unwrap()
                .as_duration()
                .as_secs()
        };
        assert_eq!(secs("30"), 30);
        assert_eq!(secs("2m"), 120);
        assert_eq!(secs("none"), 86_400);
        assert!(parse_duration_flag("soon", "--wait-timeout").is_err());
    }

    #[test]
    fn deploy_app_flag_then_env_then_fly_toml() {
        let (_dir, path) = config_file("app = \"from-file\"\n");
        let loaded = || aloft_config::load(&path).unwrap();
        let args = |app: Option<&str>| DeployArgs {
            app: app_args(app, &path),
            yes: false,
            strategy: None,
            max_unavailable: None,
            wait_timeout: None,
            process_groups: vec![],
            update_only: false,
            ha: true,
            smoke_checks: true,
            primary_region: None,
            skip_release_command: false,
            release_command_timeout: None,
            volume_initial_size: None,
            detach: false,
            build_only: false,
            push: false,
            local_only: false,
            remote_only: false,
            build: BuildArgs::default(),
        };
        let env = Env::from_pairs(&[("ALOFT_APP", "from-env")]);
        let app = |a, e: &Env| DeploySettings::resolve(args(a), e, loaded()).unwrap().app;
        assert_eq!(app(Some("flag"), &env), "flag");
        assert_eq!(app(None, &env), "from-env");
        assert_eq!(app(None, &Env::default()), "from-file");
    }

    #[test]
    fn build_flags_over_environment_over_fly_toml() {
        let (dir, path) = config_file(
            "app = \"a\"\n[build]\ndockerfile = \"docker/Dockerfile.prod\"\nignorefile = \"docker/.ignore\"\nbuild-target = \"prod\"\ncompression = \"zstd\"\n[build.args]\nA = \"toml\"\nB = \"toml\"\n",
        );
        let config = aloft_config::load(&path).unwrap().config;
        let data = PathBuf::from("/data");
        let resolve = |args: BuildArgs, env: &Env| {
            BuildSettings::resolve(args, env, &config, &path, data.clone())
        };
        let from_file = resolve(BuildArgs::default(), &Env::default()).unwrap();
        assert_eq!(from_file.context, dir.path());
        assert_eq!(
            from_file.dockerfile,
            dir.path().join("docker/Dockerfile.prod")
        );
        assert!(from_file.dockerfile_named);
        assert_eq!(
            from_file.ignorefile,
            Some(dir.path().join("docker/.ignore"))
        );
        assert_eq!(from_file.target.as_deref(), Some("prod"));
        assert_eq!(from_file.isolation, "chroot");
        assert_eq!(from_file.compression.as_deref(), Some("zstd"));
        assert_eq!(from_file.out_dir, PathBuf::from("/data/builds"));
        assert_eq!(from_file.image, None);

        let flags = BuildArgs {
            build_args: vec!["B=flag".into(), "C=x=y".into()],
            build_target: Some("dev".into()),
            dockerfile: Some(PathBuf::from("other/Dockerfile")),
            image: Some("localhost/img:1".into()),
            ..BuildArgs::default()
        };
        let env = Env::from_pairs(&[("ALOFT_BUILD_ISOLATION", "oci")]);
        let flagged = resolve(flags, &env).unwrap();
        let args: Vec<(&str, &str)> = flagged
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(args, vec![("A", "toml"), ("B", "flag"), ("C", "x=y")]);
        assert_eq!(flagged.target.as_deref(), Some("dev"));
        assert_eq!(flagged.dockerfile, PathBuf::from("other/Dockerfile"));
        assert_eq!(flagged.image.as_deref(), Some("localhost/img:1"));
        assert_eq!(flagged.isolation, "oci");

        let bad_arg = BuildArgs {
            build_args: vec!["NOEQUALS".into()],
            ..BuildArgs::default()
        };
        let err = resolve(bad_arg, &Env::default()).unwrap_err().to_string();
        assert!(
            err.contains("NOEQUALS") && err.contains("KEY=VALUE"),
            "{err}"
        );
        let env = Env::from_pairs(&[("ALOFT_BUILD_ISOLATION", "vm")]);
        let err = resolve(BuildArgs::default(), &env).unwrap_err().to_string();
        assert!(err.contains("chroot, oci, rootless"), "{err}");

        let (dir, path) = config_file("app = \"a\"\n");
        let config = aloft_config::load(&path).unwrap().config;
        let plain =
            BuildSettings::resolve(BuildArgs::default(), &Env::default(), &config, &path, data)
                .unwrap();
        assert_eq!(plain.dockerfile, dir.path().join("Dockerfile"));
        assert!(!plain.dockerfile_named);
    }

    #[test]
    fn agent_data_dir_and_proxy_follow_the_flags() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "aloft",
            "agent",
            "--region",
            "ams",
            "--idle-window",
            "2s",
            "--port-map",
            "80=8080",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not the agent command")
        };
        let config = agent_config(*args, &Env::from_pairs(&[("ALOFT_DATA_DIR", "/env")]));
        assert_eq!(config.data_dir, PathBuf::from("/env"));
        let proxy = config.proxy.unwrap();
        assert_eq!(proxy.region, "ams");
        assert_eq!(proxy.port_map.get(&80), Some(&8080));
        assert_eq!(proxy.autostop_interval, std::time::Duration::from_secs(1));
    }

    #[test]
    fn agent_acme_flags_default_to_lets_encrypt_and_http01() {
        use clap::Parser;
        let agent = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["aloft", "agent"], args].concat())?;
            let Command::Agent(args) = cli.command else {
                panic!("not the agent command")
            };
            Ok::<_, clap::Error>(agent_config(*args, &Env::default()).acme)
        };
        let default = agent(&[]).unwrap();
        assert_eq!(default, aloft_agent::AcmeSettings::default());
        assert_eq!(default.directory_url, aloft_agent::settings::LETS_ENCRYPT);
        let set = agent(&[
            "--acme-directory",
            "https://ca.internal/dir",
            "--acme-email",
            "ops@example.com",
            "--acme-email",
            "me@example.org",
            "--acme-ca-roots",
            "/etc/ca.pem",
            "--acme-challenge",
            "tls-alpn-01",
        ])
        .unwrap();
        assert_eq!(set.directory_url, "https://ca.internal/dir");
        assert_eq!(set.contact, ["ops@example.com", "me@example.org"]);
        assert_eq!(set.ca_roots, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            set.challenge,
            aloft_agent::settings::ChallengeKind::TlsAlpn01
        );
        let err = agent(&["--acme-email", "ops"]).unwrap_err().to_string();
        assert!(err.contains("admin@example.com"), "{err}");
        let err = agent(&["--acme-challenge", "dns-01"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http-01") && err.contains("tls-alpn-01"),
            "{err}"
        );
    }

    #[test]
    fn json_only_where_a_command_has_it() {
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap();
        assert!(has_json_output(&parse(&["aloft", "status", "--json"])));
        assert!(
            parse(&["aloft", "--json", "status"]).json,
            "--json is global"
        );
        assert!(!has_json_output(&parse(&["aloft", "deploy", "--json"])));
    }
}
