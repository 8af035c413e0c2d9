//! The command line: clap structs only. No environment is read here (no `env =`): the
//! variables are layered over these flags in `settings`. Behaviour lives in `commands`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aloft",
    version,
    about = "Run fly.toml apps with process groups on machines you own"
)]
pub struct Cli {
    /// More log output (-v, -vv); ALOFT_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print JSON instead of text (commands that list or show things).
    #[arg(long, global = true)]
    pub json: bool,
    /// The agent to talk to: a context of `aloft context` (`local` is the local agent)
    /// [env: ALOFT_CONTEXT].
    #[arg(short = 'C', long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate and inspect fly.toml.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Platform information: VM sizes, regions.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Named agents to deploy to (local, or servers over ssh:// and https://), as `docker context`.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Run the agent: the Machines API, state store and process supervisor of this host.
    #[command(args_conflicts_with_subcommands = true)]
    Agent(Box<AgentArgs>),
    /// Create, list and destroy apps.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Deploy the app in the config's directory: one machine config per process group.
    Deploy(DeployArgs),
    /// Laptop mode: use (or start) a local agent, deploy the directory, follow logs until Ctrl-C.
    Up(UpArgs),
    /// The app and its machines (PROCESS, ID, VERSION, REGION, STATE, ROLE, CHECKS, LAST UPDATED,
    /// PRIVATE IP).
    Status(StatusArgs),
    /// The app's releases, newest first (the live one marked); `releases rollback [VERSION]`.
    Releases(ReleasesArgs),
    /// Machine logs of the app (all groups by default); follows new lines unless --no-tail.
    Logs(LogsArgs),
    /// Scale process groups: machine counts, VM sizes, memory.
    #[command(subcommand)]
    Scale(ScaleCommand),
    /// Single machines: list, status, clone, start, stop, destroy, update.
    #[command(subcommand, alias = "machines", alias = "m")]
    Machine(MachineCommand),
    /// OCI images pushed to the agent: list, show (sizes, layers, process defaults).
    #[command(subcommand, alias = "image")]
    Images(ImagesCommand),
    /// The app's IP addresses: list, allocate public or private (Flycast) ones, release.
    #[command(subcommand)]
    Ips(IpsCommand),
    /// Look up a name as the app's machines see it (`.internal`, `.flycast`, the internet).
    Dig(DigArgs),
    /// Custom hostnames of the app and their TLS certificates: add, list, show, remove.
    #[command(subcommand, alias = "cert")]
    Certs(CertsCommand),
    /// API tokens of the agent: create (org, deploy, readonly), list, revoke.
    #[command(subcommand, alias = "token")]
    Tokens(TokensCommand),
    /// App secrets: environment variables of every machine, stored encrypted, never shown
    /// again (set, import, list, unset, deploy).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Volumes: filesystems of a fixed size that keep a machine's data (create, list, show,
    /// extend, destroy, fork, snapshots).
    #[command(subcommand, alias = "volume", alias = "vol")]
    Volumes(VolumesCommand),
    /// A shell (or a command) on a terminal in a running machine: `ssh console`.
    #[command(subcommand)]
    Ssh(SshCommand),
    /// A shell (or a command) in a new one-off machine of the app's current image, destroyed
    /// when the session ends (fly console).
    Console(ConsoleArgs),
}

/// `aloft volumes …` (flyctl's `fly volumes`).
#[derive(Debug, Subcommand)]
pub enum VolumesCommand {
    /// Create volumes: NAME is lowercase letters, digits and _ (at most 30).
    Create {
        name: String,
        /// Size in GB (1-500).
        #[arg(short = 's', long = "size", default_value_t = aloft_api::volumes::DEFAULT_SIZE_GB)]
        size: u32,
        /// The region [default: the agent's first].
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// How many volumes to create.
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u32,
        /// Restore this snapshot (vs_…) into the new volume.
        #[arg(long = "snapshot-id")]
        snapshot_id: Option<String>,
        /// Snapshot retention in days (1-60).
        #[arg(long = "snapshot-retention")]
        snapshot_retention: Option<u32>,
        /// Do not mark the volume as encrypted (Aloft never encrypts the disk image).
        #[arg(long = "no-encryption")]
        no_encryption: bool,
        /// Accepted for flyctl's scripts: `create` asks nothing (flyctl's question about
        /// spreading volumes over hosts has no meaning on one host).
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// The app's volumes (ID, STATE, NAME, SIZE, REGION, ZONE, ENCRYPTED, ATTACHED VM,
    /// CREATED AT).
    #[command(alias = "ls")]
    List(ListArgs),
    /// One volume's details.
    Show {
        id: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Grow a volume (online: its machine keeps running).
    Extend {
        id: String,
        /// The new size in GB (larger than the current one).
        #[arg(short = 's', long = "size")]
        size: u32,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Destroy a volume and its data (refused while a machine has it).
    #[command(alias = "delete", alias = "rm")]
    Destroy {
        id: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// A new volume with a copy of this volume's current data.
    Fork {
        id: String,
        /// The new volume's name [default: the source's].
        #[arg(long)]
        name: Option<String>,
        /// The new volume's region [default: the source's].
        #[arg(short = 'r', long)]
        region: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// A volume's snapshots: list, create.
    #[command(subcommand, alias = "snapshot")]
    Snapshots(SnapshotsCommand),
}

/// `aloft volumes snapshots …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// The snapshots of a volume.
    #[command(alias = "ls")]
    List {
        volume_id: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Take a snapshot of a volume now (a consistent copy of its data).
    Create {
        volume_id: String,
        #[command(flatten)]
        app: AppArgs,
    },
}

/// `aloft console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Take the machine's config from this process group [default: app, else the first].
    #[arg(short = 'g', long = "process-group", value_name = "GROUP")]
    pub process_group: Option<String>,
    /// The command to run [default: `console_command` of the config file, else /bin/sh].
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// The machine's VM size (a preset of `aloft platform vm-sizes`) [default: the group's].
    #[arg(long, value_name = "SIZE")]
    pub vm_size: Option<String>,
    #[command(flatten)]
    pub app: AppArgs,
}

/// `aloft ssh …` (flyctl's `fly ssh`).
#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// An interactive shell (/bin/sh, or --command) on a terminal in a running machine of
    /// the app; exits with the command's exit code.
    Console(SshConsoleArgs),
}

/// `aloft ssh console`.
#[derive(Debug, Args)]
pub struct SshConsoleArgs {
    /// Choose the machine from a list of the started ones.
    #[arg(short = 's', long, conflicts_with = "machine")]
    pub select: bool,
    /// The machine [default: the first started machine of the app, or of -g].
    #[arg(long, value_name = "ID")]
    pub machine: Option<String>,
    /// Pick the machine from this process group.
    #[arg(short = 'g', long = "process-group", value_name = "GROUP")]
    pub process_group: Option<String>,
    /// The command to run instead of a shell, split as a shell would (flyctl's -C: here -C is
    /// the global --context). Without a terminal on stdin it runs as `machine exec` does.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    #[command(flatten)]
    pub app: AppArgs,
}

/// `aloft tokens …` (flyctl's `fly tokens`).
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once: `org` can do everything; `deploy` deploys, scales and
    /// reads one app; `readonly` only reads (one app with -a, else every app).
    Create {
        /// org, deploy or readonly.
        #[arg(value_parser = parse_token_kind)]
        kind: aloft_api::tokens::TokenKind,
        /// The app of a deploy token [env: ALOFT_APP] [default: `app` of the config file], or
        /// of a read-only token (only when given).
        #[arg(short = 'a', long = "app")]
        app: Option<String>,
        /// Path to the app config, read for a deploy token's app when none is given.
        #[arg(short = 'c', long = "config", default_value = "fly.toml")]
        config: PathBuf,
        /// Shown by `tokens list` and in the app's events [default: "<kind> token"].
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// How long the token is valid, a Go duration (`720h`, `30m`) [default: 175200h].
        #[arg(short = 'x', long, value_parser = parse_duration)]
        expiry: Option<std::time::Duration>,
    },
    /// The agent's tokens (ID, NAME, KIND, APP, CREATED, EXPIRES, LAST USED, REVOKED); never
    /// their secrets.
    #[command(alias = "ls")]
    List,
    /// Revoke a token by its id (as `tokens list` shows it): its next use is refused.
    #[command(alias = "rm")]
    Revoke { id: String },
}

fn parse_token_kind(s: &str) -> Result<aloft_api::tokens::TokenKind, String> {
    s.parse()
}

/// `aloft ips …` (flyctl's `fly ips`).
#[derive(Debug, Subcommand)]
pub enum IpsCommand {
    /// The app's addresses (VERSION, IP, TYPE, REGION, CREATED AT).
    List(ListArgs),
    /// The private (6PN) address of each machine of the app.
    Private(ListArgs),
    /// Give the app a public IPv4 address: `--shared`, the host's address (HTTP routed by Host).
    #[command(name = "allocate-v4")]
    AllocateV4 {
        /// The host's public IPv4 address, shared by every app on it.
        #[arg(long)]
        shared: bool,
        /// Only `global`: one agent serves all its regions on every address.
        #[arg(short = 'r', long)]
        region: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Give the app an IPv6 address: `--private` a Flycast address on its organization's
    /// private network (the proxy serves its services there, to the organization only).
    #[command(name = "allocate-v6")]
    AllocateV6 {
        /// A Flycast address, reachable only from the organization's machines.
        #[arg(long)]
        private: bool,
        /// Only `global`: one agent serves all its regions on every address.
        #[arg(short = 'r', long)]
        region: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Take an address from the app.
    Release {
        /// The address, as `aloft ips list` shows it.
        address: String,
        #[command(flatten)]
        app: AppArgs,
    },
}

/// `aloft dig [TYPE] NAME` (flyctl's `fly dig`).
#[derive(Debug, Args, Clone)]
pub struct DigArgs {
    /// `[TYPE] NAME`: the record type (AAAA by default; A, TXT, SRV…) and the name, e.g.
    /// `worker.process.myapp.internal` or `TXT _apps.internal`.
    #[arg(num_args = 1..=2, required = true, value_name = "[TYPE] NAME")]
    pub query: Vec<String>,
    /// Print only the records' data, one per line, like `dig +short`.
    #[arg(long)]
    pub short: bool,
    #[command(flatten)]
    pub app: AppArgs,
}

/// `aloft certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Add a hostname to the app: it answers there on 80/443 (Host, SNI) with a self-signed
    /// certificate, the given PEM files, or one obtained through ACME.
    Add {
        hostname: String,
        /// Certificate chain, PEM (leaf first); needs --key.
        #[arg(long, requires = "key", conflicts_with = "acme")]
        cert: Option<PathBuf>,
        /// The certificate's private key, PEM.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Obtain the certificate from an ACME CA (HTTP-01 or TLS-ALPN-01; the hostname must
        /// point at this agent).
        #[arg(long)]
        acme: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// The app's hostnames and their certificates.
    List(ListArgs),
    /// One hostname: source, status, validity.
    Show {
        hostname: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Remove a hostname from the app (it no longer answers there).
    Remove {
        hostname: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        app: AppArgs,
    },
}

/// `aloft images …` / `aloft image …`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// The app's images, newest first, with their sizes (shared layers counted once in the total).
    List(ListArgs),
    /// One image: `aloft/<app>@sha256:<hex>`, or `sha256:<hex>` (or its hex) of the app.
    Show {
        /// The image reference or digest.
        reference: String,
        #[command(flatten)]
        app: AppArgs,
    },
}

/// `aloft context …`.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Add a context: a name for an agent URL (`ssh://USER@HOST[:PORT][/DATA-DIR]`,
    /// `https://HOST:PORT` or `http://HOST:PORT`). Over ssh:// the server needs `aloft` in the
    /// PATH of a non-interactive login, else name it: `ssh://HOST/DATA-DIR?aloft=/opt/aloft`;
    /// DATA-DIR defaults to the login user's, as `aloft agent` there picks it.
    Add {
        name: String,
        url: String,
        /// Read the API token to keep with the context from stdin (over ssh:// the token is
        /// read on the server when this is left out).
        #[arg(long)]
        token_stdin: bool,
        /// Require this certificate fingerprint (`sha256:…`, printed by `aloft agent --tls`)
        /// instead of pinning the first one seen.
        #[arg(long)]
        fingerprint: Option<String>,
        /// A note shown by `context list`.
        #[arg(long)]
        description: Option<String>,
        /// Make it the current context too.
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Make NAME the context of commands without `-C` (`local`: the local agent).
    Use { name: String },
    /// List the contexts; `*` marks the current one.
    #[command(alias = "ls")]
    List,
    /// Print the name of the current context.
    Show,
    /// Remove contexts (the current one only with --force; `local` then becomes current).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
    },
}

/// `aloft agent`.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Where state, the API token and machine logs live [env: ALOFT_DATA_DIR] [default: $XDG_STATE_HOME/aloft or ~/.local/state/aloft].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the API; port 0 picks a free port (written to <data-dir>/agent.addr).
    #[arg(long, default_value = "127.0.0.1:4280")]
    pub listen: std::net::SocketAddr,
    /// A region this agent hosts (repeatable) [default: every Fly region code].
    #[arg(long = "region", value_name = "CODE")]
    pub regions: Vec<String>,
    /// Listen on LOCAL instead of a service's external port EXT (repeatable), e.g. `80=8080`
    /// when the agent may not bind ports below 1024; LOCAL 0 picks a free port.
    #[arg(long = "port-map", value_name = "EXT=LOCAL", value_parser = parse_port_map)]
    pub port_map: Vec<(u16, u16)>,
    /// Address the proxy's service ports bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub proxy_bind: std::net::IpAddr,
    /// Apps answer at `<app>.<DOMAIN>` on the shared HTTP ports (80/443, routed by Host and
    /// TLS SNI), besides their custom hostnames (`aloft certs add`).
    #[arg(long, default_value = "localhost", value_parser = parse_domain)]
    pub domain: String,
    /// How long a machine of a service with `auto_stop_machines` must be idle before it is stopped.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub idle_window: std::time::Duration,
    /// Run without the proxy (service ports are not served).
    #[arg(long)]
    pub no_proxy: bool,
    /// Most machines one process group may be scaled to.
    #[arg(long, default_value_t = aloft_agent::settings::Limits::default().max_group_count)]
    pub max_group_count: u32,
    /// Memory all started machines may be given together, as a multiple of the host's RAM
    /// (guest memory is a limit, not a reservation); one machine never gets more than the RAM.
    #[arg(long, default_value_t = aloft_agent::settings::Limits::default().memory_overcommit, value_parser = parse_overcommit)]
    pub memory_overcommit: f64,
    /// API connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = aloft_agent::settings::Limits::default().max_api_connections, value_parser = parse_connections)]
    pub max_api_connections: usize,
    /// Free space (MiB) kept on the disk of the data dir: below it machines' log lines are not
    /// written (followers still see them), so output never fills the state database's disk.
    #[arg(long, default_value_t = aloft_agent::LogLimits::default().min_free_bytes >> 20)]
    pub log_min_free_mb: u64,
    /// Disk (MiB) all machine logs may take together; past it the oldest log files go first.
    #[arg(long, default_value_t = aloft_agent::LogLimits::default().total_bytes >> 20)]
    pub log_budget_mb: u64,
    /// Deploys per app whose images are kept (for `aloft releases rollback`); older ones are
    /// garbage-collected unless a machine still runs them.
    #[arg(long, default_value_t = aloft_agent::settings::Limits::default().keep_releases, value_parser = clap::value_parser!(usize))]
    pub keep_releases: usize,
    /// Time an API client has to send a request head (and between requests on one connection).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub api_header_timeout: std::time::Duration,
    /// How often each started machine with `[metrics]` in fly.toml is scraped; its samples are
    /// served on GET /v1/metrics with app, process_group, machine and region labels.
    #[arg(long, default_value = "15s", value_parser = parse_positive_duration)]
    pub metrics_interval: std::time::Duration,
    /// Time one scrape of a machine's metrics endpoint may take; a slower one counts as failed.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub metrics_timeout: std::time::Duration,
    /// How often attached volumes are checked for automatic extension ([[mounts]]
    /// auto_extend_size_*).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub volume_extend_interval: std::time::Duration,
    /// How often volumes are checked for their daily snapshot (auto_backup_enabled) and for
    /// snapshots older than their retention, which are deleted.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub volume_snapshot_interval: std::time::Duration,
    /// Bridge that container machines' network namespaces join (made on the first container
    /// start; one agent per bridge).
    #[arg(long, default_value = "aloft0")]
    pub bridge: String,
    /// Subnet of container machines' private addresses (the bridge takes the first address).
    #[arg(long, default_value = "10.209.0.0/16")]
    pub subnet: aloft_agent::Ipv4Net,
    /// This host's /64 of private IPv6 (6PN) addresses, e.g. `fdaa:1:2:1::/64` [default: subnet
    /// 1 of a random `fdaa:…/48` made once and kept in the data dir].
    #[arg(long)]
    pub subnet6: Option<aloft_agent::Ipv6Net>,
    /// OCI runtime of container machines, a path or a name in PATH, with runc's command line
    /// (`crun` starts containers faster; it refuses hosts with a hybrid cgroup layout)
    /// [default: runc].
    #[arg(long)]
    pub oci_runtime: Option<PathBuf>,
    /// This host's public IPv4 address, which `aloft ips allocate-v4 --shared` gives apps
    /// [default: the address of the default route's interface].
    #[arg(long, value_name = "ADDRESS")]
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    /// This host's public IPv6 address, which `aloft ips allocate-v6` gives apps [default: the
    /// address of the default IPv6 route's interface, when it is a global one].
    #[arg(long, value_name = "ADDRESS")]
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// Directory URL of the ACME CA that issues the certificates of hostnames added with `aloft
    /// certs add HOST --acme`; for trials Let's Encrypt's staging directory,
    /// https://acme-staging-v02.api.letsencrypt.org/directory. The account is kept in
    /// <data-dir>/acme.
    #[arg(long, value_name = "URL", default_value = aloft_agent::settings::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Contact email of the ACME account, for the CA's expiry and policy notices (repeatable).
    #[arg(long = "acme-email", value_name = "EMAIL", value_parser = parse_email)]
    pub acme_emails: Vec<String>,
    /// PEM file of root certificates to trust, besides the public ones, for the ACME CA's HTTPS
    /// (a private or test CA).
    #[arg(long, value_name = "PEMFILE")]
    pub acme_ca_roots: Option<PathBuf>,
    /// How the CA checks that a hostname points at this agent: `http-01` fetches a token from
    /// port 80, `tls-alpn-01` connects to port 443.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = AcmeChallenge::Http01)]
    pub acme_challenge: AcmeChallenge,
    /// Serve the API over TLS. Without --tls-cert/--tls-key the certificate is self-signed,
    /// made once and kept in <data-dir>/api-tls; clients pin its fingerprint (printed at start,
    /// and in <data-dir>/agent.fingerprint) on first use.
    #[arg(long)]
    pub tls: bool,
    /// PEM certificate chain (leaf first) of the API's TLS; implies --tls, needs --tls-key.
    #[arg(long, value_name = "PEMFILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEMFILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Another name (DNS name or IP address) of the self-signed API certificate (repeatable),
    /// besides localhost, 127.0.0.1, ::1, the --listen address and the hostname; read when the
    /// certificate is made (remove <data-dir>/api-tls to remake it).
    #[arg(long = "tls-san", value_name = "NAME", requires = "tls")]
    pub tls_sans: Vec<String>,
    /// A hostname whose certificate the ACME CA would issue for the API (not available yet:
    /// refused at start; use --tls-cert/--tls-key).
    #[arg(long, value_name = "HOST", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_acme: Option<String>,
    /// Allow the API over plain HTTP on an address other hosts can reach (without --tls): the
    /// token and secrets then cross the network in clear text. Without it such a --listen is
    /// refused.
    #[arg(long)]
    pub insecure_listen: bool,
    /// Tests only: schedule periods as if an hour lasted this many milliseconds (a day 24
    /// of them, a month 720), so scheduled machines run within a test's time.
    #[arg(long, hide = true, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..))]
    pub schedule_unit_ms: Option<u32>,
    /// Helpers of remote clients (hidden), which run without starting an agent.
    #[command(subcommand)]
    pub helper: Option<AgentHelper>,
}

/// `aloft agent <helper>`: what an `ssh://` client runs on the server.
#[derive(Debug, Subcommand, Clone)]
pub enum AgentHelper {
    /// Print, as one JSON line, how to reach the agent of a data dir: its API address (from
    /// agent.addr), whether it answers, and its token when this user may read it.
    #[command(hide = true)]
    ConnectInfo {
        /// The agent's data dir [env: ALOFT_DATA_DIR] [default: as `aloft agent`].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Then wait until stdin closes (an ssh:// client holds its connection this way).
        #[arg(long)]
        wait_stdin: bool,
    },
}

/// `aloft agent --acme-challenge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcmeChallenge {
    #[value(name = "http-01")]
    Http01,
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

fn parse_email(s: &str) -> Result<String, String> {
    let s = s.trim();
    match s.split_once('@') {
        Some((user, domain))
            if !user.is_empty() && domain.contains('.') && !s.contains(char::is_whitespace) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "{s:?} is not an email address; give one such as admin@example.com"
        )),
    }
}

fn parse_domain(s: &str) -> Result<String, String> {
    aloft_api::hostname::normalize(s).map_err(|e| format!("{s:?} is not a domain: {e}"))
}

fn parse_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive whole number")),
    }
}

fn parse_overcommit(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number (1 = no overcommit)"
        )),
    }
}

fn parse_port_map(s: &str) -> Result<(u16, u16), String> {
    let (ext, local) = s
        .split_once('=')
        .ok_or_else(|| format!("expected EXT=LOCAL (e.g. 80=8080), got {s:?}"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port number (0-65535)"))
    };
    Ok((port(ext)?, port(local)?))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    aloft_api::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0 (e.g. 15s, 500ms)".into()),
        d => Ok(d),
    }
}

/// `-c/--config`, shared by every command that reads fly.toml.
#[derive(Debug, Args, Clone)]
pub struct ConfigPath {
    /// Path to the app config (fly.toml, fly.json or fly.yaml).
    #[arg(short = 'c', long = "config", default_value = "fly.toml")]
    pub path: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check fly.toml; exit 0 when valid, 1 when not. Diagnostics go to stderr.
    Validate {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Show process groups, the default group and each group's machine config.
    Show {
        #[command(flatten)]
        config: ConfigPath,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlatformCommand {
    /// The VM size presets.
    VmSizes,
    /// The regions the agent hosts (machines can be placed there).
    Regions,
}

/// `-a APP` (else the `app` of fly.toml) and `-c fly.toml`, shared by app commands.
#[derive(Debug, Args, Clone)]
pub struct AppArgs {
    /// The app [env: ALOFT_APP] [default: `app` of the config file].
    #[arg(short = 'a', long = "app")]
    pub app: Option<String>,
    /// Path to the app config (fly.toml, fly.json or fly.yaml).
    #[arg(short = 'c', long = "config", default_value = "fly.toml")]
    pub config: PathBuf,
}

/// `aloft releases [rollback]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub app: AppArgs,
    #[command(subcommand)]
    pub command: Option<ReleasesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// Deploy an earlier release again, as a new release: its image, every group's config and
    /// machine counts (default: the newest complete release before the live one).
    Rollback {
        /// The release to roll back to (`3` or `v3`).
        #[arg(value_parser = parse_release_version)]
        version: Option<u64>,
        #[command(flatten)]
        app: AppArgs,
        /// Destroy surplus machines without asking.
        #[arg(short, long)]
        yes: bool,
        /// Return once the rollback has started.
        #[arg(long)]
        detach: bool,
    },
}

fn parse_release_version(s: &str) -> Result<u64, String> {
    s.strip_prefix('v')
        .unwrap_or(s)
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("`{s}` is not a release version (write 3 or v3)"))
}

/// An app selector (of commands that list; `--json` is global).
#[derive(Debug, Args, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub app: AppArgs,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app.
    Create {
        /// App name [default: `app` of the config file].
        name: Option<String>,
        /// Organisation slug.
        #[arg(short = 'o', long, default_value = "personal")]
        org: String,
        /// Path to the app config, read for the name when none is given.
        #[arg(short = 'c', long = "config", default_value = "fly.toml")]
        config: PathBuf,
    },
    /// List apps.
    #[command(alias = "ls")]
    List,
    /// Who changed the app: every API request that was not a read, with its token's name,
    /// newest first (AT, ACTOR, MESSAGE).
    Events {
        #[command(flatten)]
        app: AppArgs,
        /// How many events [default: 100].
        #[arg(short = 'n', long)]
        limit: Option<u64>,
    },
    /// Destroy an app and all its machines.
    #[command(alias = "rm", alias = "delete")]
    Destroy {
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
}

/// `aloft deploy`.
#[derive(Debug, Args, Clone)]
pub struct DeployArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Answer yes to prompts (destroying machines of removed groups).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// rolling, immediate, canary or bluegreen [default: fly.toml, else rolling].
    #[arg(long)]
    pub strategy: Option<String>,
    /// Machines of a group updated at once: a count (≥ 1) or a fraction (0, 1) [default: 0.33].
    #[arg(long)]
    pub max_unavailable: Option<f64>,
    /// Per-machine wait for start and health checks, e.g. 5m, 30s [default: fly.toml, else 5m].
    #[arg(long)]
    pub wait_timeout: Option<String>,
    /// Only deploy these groups (comma-separated); the others are not touched.
    #[arg(long, value_delimiter = ',')]
    pub process_groups: Vec<String>,
    /// Do not create machines for groups that have none.
    #[arg(long)]
    pub update_only: bool,
    /// New groups with services get 2 machines (not 1); new groups without services or mounts
    /// get 1 machine and a stopped standby watching it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ha: bool,
    /// Watch each new or updated machine for a few seconds and fail the release when it
    /// crash-loops.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub smoke_checks: bool,
    /// Region of new machines [default: primary_region].
    #[arg(long)]
    pub primary_region: Option<String>,
    /// Do not run [deploy] release_command.
    #[arg(long)]
    pub skip_release_command: bool,
    /// How long the release command may run, e.g. 5m, 90 (seconds) or none [default: fly.toml,
    /// else 5m].
    #[arg(long)]
    pub release_command_timeout: Option<String>,
    /// Size in GB of the volumes created for [[mounts]] that give no initial_size [default: 1].
    #[arg(long, value_name = "GB", value_parser = clap::value_parser!(u32).range(1..=500))]
    pub volume_initial_size: Option<u32>,
    /// Start the release and return without following it.
    #[arg(long)]
    pub detach: bool,
    /// Build the image (or fetch the --image) and stop: no release. Prints the OCI layout.
    #[arg(long)]
    pub build_only: bool,
    /// With --build-only: push the image to the agent's image store (it can then be deployed
    /// with --image aloft/<app>@sha256:…) instead of keeping the OCI layout.
    #[arg(long, requires = "build_only")]
    pub push: bool,
    /// Build on this machine (what aloft always does; accepted for flyctl's sake).
    #[arg(long)]
    pub local_only: bool,
    /// Build on a remote builder: aloft has none, so this is refused with a message.
    #[arg(long, conflicts_with = "local_only")]
    pub remote_only: bool,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// How the app's image is made (`deploy` and `up`); over `[build]` of fly.toml.
#[derive(Debug, Args, Clone, Default)]
pub struct BuildArgs {
    /// A prebuilt container image (local buildah/podman store, local Docker engine, or a
    /// registry) instead of building; `dir:///path` and `aloft/<app>@sha256:…` name an image
    /// the agent already has [default: [build] image].
    #[arg(long)]
    pub image: Option<String>,
    /// The Dockerfile to build [default: [build] dockerfile beside fly.toml, else Dockerfile].
    #[arg(long)]
    pub dockerfile: Option<PathBuf>,
    /// A build argument, KEY=VALUE (repeatable); wins over [build.args].
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The stage of a multi-stage Dockerfile to build [default: [build] build-target, else the last].
    #[arg(long)]
    pub build_target: Option<String>,
    /// Build every step again instead of reusing the layer cache of earlier builds.
    #[arg(long)]
    pub no_cache: bool,
    /// The tag of the built image [default: deployment-<time>].
    #[arg(long)]
    pub image_label: Option<String>,
}

/// `aloft up`.
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Data dir of the local agent (the embedded one, when one is started) [env: ALOFT_DATA_DIR] [default: the user's state dir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Answer yes to prompts.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Deploy and print the URLs, then exit instead of following logs.
    #[arg(long)]
    pub detach: bool,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Bridge of the embedded agent's container machines (see `aloft agent --bridge`).
    #[arg(long, default_value = "aloft0")]
    pub bridge: String,
    /// Subnet of the embedded agent's container machines (see `aloft agent --subnet`).
    #[arg(long, default_value = "10.209.0.0/16")]
    pub subnet: aloft_agent::Ipv4Net,
    /// The embedded agent's app domain: apps answer at `<app>.<DOMAIN>` (see `aloft agent --domain`).
    #[arg(long, default_value = "localhost", value_parser = parse_domain)]
    pub domain: String,
}

/// `aloft status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub app: AppArgs,
}

/// `aloft logs`.
#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// Only this process group.
    #[arg(short = 'g', long = "process-group", alias = "group")]
    pub group: Option<String>,
    /// Only this machine.
    #[arg(long, alias = "instance", short = 'i')]
    pub machine: Option<String>,
    /// Only machines in this region.
    #[arg(short = 'r', long)]
    pub region: Option<String>,
    /// Print the recent lines and exit instead of following.
    #[arg(short = 'n', long)]
    pub no_tail: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Set machine counts: `count 3 [-g web]`, `count web=8 cron=2`, `count web=+2`.
    Count(ScaleCountArgs),
    /// Change the VM size of a group's machines: `vm performance-2x -g web`.
    Vm {
        /// A size from `aloft platform vm-sizes`.
        size: String,
        /// Memory in MB (or with a unit: 4gb) on top of the size.
        #[arg(long = "vm-memory")]
        memory: Option<String>,
        #[arg(short = 'g', long = "process-group", alias = "group")]
        group: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Change the memory of a group's machines: `memory 4096 -g web`.
    Memory {
        /// MB, or with a unit (512mb, 4gb).
        memory: String,
        #[arg(short = 'g', long = "process-group", alias = "group")]
        group: Option<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Per-group counts, sizes and regions.
    Show(ListArgs),
}

/// `aloft scale count`.
#[derive(Debug, Args, Clone)]
pub struct ScaleCountArgs {
    /// `N`, `+N`, `-N` (with -g) or `GROUP=N`… .
    #[arg(required = true, allow_negative_numbers = true)]
    pub counts: Vec<String>,
    /// The group of a single count (needed when the app has several groups).
    #[arg(short = 'g', long = "process-group", alias = "group")]
    pub group: Option<String>,
    /// Regions to spread the machines over, in order (comma-separated).
    #[arg(short = 'r', long = "region", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// At most this many machines of a group per region.
    #[arg(long)]
    pub max_per_region: Option<u32>,
    /// New machines of groups with [[mounts]] get new volumes instead of the unattached ones.
    #[arg(long)]
    pub with_new_volumes: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub app: AppArgs,
}

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// List the app's machines.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Details and recent events of a machine.
    Status {
        id: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// A new machine like ID (same group, release, guest, config).
    Clone {
        id: String,
        /// Region of the clone [default: the --attach-volume volume's, else the source's].
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// Mount this unattached volume (`vol_id[:/path]`; the path defaults to the source's
        /// mount) instead of a new empty one.
        #[arg(long, value_name = "VOL_ID[:/PATH]")]
        attach_volume: Option<String>,
        /// Do not wait for the clone to start.
        #[arg(long)]
        detach: bool,
        /// Make the clone a standby of these machines (comma-separated ids; `source` = ID):
        /// created stopped, started only if a watched machine's host fails. Without it, a
        /// clone of a standby is a standby of the same machines.
        #[arg(long, value_delimiter = ',')]
        standby_for: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Create a machine of IMAGE running COMMAND and start it (flyctl's `fly machine run`);
    /// with --schedule it starts again every period, counted from its creation.
    Run {
        /// What the agent runs: an image of the app (`aloft/<app>@sha256:…`, as `aloft images
        /// list` shows) or a directory on the agent's host (`dir:///path` or `/path`).
        image: String,
        /// The command and its arguments [default: the image's].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// Start it again every hour, day, week or month after its creation; each run ends
        /// when the command exits, and a run still going when the next period comes is not
        /// started twice.
        #[arg(long, value_parser = ["hourly", "daily", "weekly", "monthly"])]
        schedule: Option<String>,
        /// NAME=VALUE environment variables (repeatable).
        #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// KEY=VALUE metadata (repeatable).
        #[arg(short = 'm', long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// The machine's name [default: generated].
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Its region [default: the agent's].
        #[arg(short = 'r', long)]
        region: Option<String>,
        /// When its command exits: no, always or on-fail [default: on-fail with --schedule,
        /// no with --rm, else always].
        #[arg(long, value_parser = ["no", "always", "on-fail", "on-failure"])]
        restart: Option<String>,
        /// Destroy the machine when its command exits.
        #[arg(long, conflicts_with = "schedule")]
        rm: bool,
        /// Return once the machine is created instead of waiting for it to start.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Start stopped machines.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Stop machines.
    Stop {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Signal to send (default: the machine's kill_signal, else SIGINT).
        #[arg(short = 's', long)]
        signal: Option<String>,
        /// Seconds before SIGKILL.
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Destroy machines; started ones need --force.
    #[command(alias = "rm", alias = "remove")]
    Destroy {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Kill started machines.
        #[arg(short = 'f', long)]
        force: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Change a machine: `--metadata fly_process_group=app` moves it to another group.
    Update {
        id: String,
        /// KEY=VALUE, merged into the metadata (repeatable).
        #[arg(long = "metadata", short = 'm', required = true)]
        metadata: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Run a command in a running machine: prints its output, exits with its exit code.
    Exec {
        id: String,
        /// The command and its arguments (after `--`); one argument is split as a shell would.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// Seconds before the command is killed [default: 30, at most 600].
        #[arg(long)]
        timeout: Option<u64>,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Copy a file or directory into or out of a running machine: one side is
    /// MACHINE_ID:/path (a process machine's paths are in its working directory).
    Cp {
        /// What to copy: a local path or MACHINE_ID:/path.
        src: String,
        /// Where to: a local path or MACHINE_ID:/path (into it when it is a directory).
        dst: String,
        #[command(flatten)]
        app: AppArgs,
    },
    /// The processes of a running machine and the sockets they listen on.
    Ps {
        id: String,
        /// pid, cpu, rss, stime, rtime or command.
        #[arg(long, default_value = "pid")]
        sort_by: String,
        /// asc or desc.
        #[arg(long, default_value = "asc")]
        order: String,
        #[command(flatten)]
        app: AppArgs,
    },
}

/// How a secrets change reaches the machines (`--stage`, `--detach`).
#[derive(Debug, Args, Clone)]
pub struct SecretsRollout {
    /// Store the secrets only: started machines keep running with what they have and get the
    /// new values at their next start (or `aloft secrets deploy`).
    #[arg(long)]
    pub stage: bool,
    /// Return once the machines' restart has started instead of following it.
    #[arg(long, conflicts_with = "stage")]
    pub detach: bool,
}

/// `aloft secrets …` (flyctl's `fly secrets`).
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Set secrets (`NAME=VALUE`; `NAME=-` reads the value from stdin), then restart the app's
    /// started machines one at a time (each waited on until healthy) unless --stage.
    Set {
        /// `NAME=VALUE` pairs. Names are environment variable names; FLY_*, ALOFT_*, PORT and
        /// PRIMARY_REGION are the platform's.
        #[arg(required = true, value_name = "NAME=VALUE")]
        pairs: Vec<String>,
        #[command(flatten)]
        rollout: SecretsRollout,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Set secrets read from stdin in dotenv form: `NAME=VALUE` lines, `export ` prefixes,
    /// `#` comments, '…' and "…" quoting (multi-line allowed), flyctl's """…""" blocks; no
    /// `$VAR` expansion.
    Import {
        #[command(flatten)]
        rollout: SecretsRollout,
        #[command(flatten)]
        app: AppArgs,
    },
    /// The app's secrets: NAME, DIGEST (a keyed digest of the value), STATUS (Deployed or
    /// Staged), CREATED AT. Values are never shown.
    #[command(alias = "ls")]
    List(ListArgs),
    /// Remove secrets, then restart the app's started machines unless --stage.
    Unset {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        rollout: SecretsRollout,
        #[command(flatten)]
        app: AppArgs,
    },
    /// Restart the app's started machines onto the staged secrets.
    Deploy {
        /// Return once the machines' restart has started instead of following it.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        app: AppArgs,
    },
}
