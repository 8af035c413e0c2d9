//! The agent daemon: the Machines API (axum) over a durable store and the process runtime.
//!
//! Layout (firecracker's parse-then-act split): [`api`] parses HTTP requests into typed actions
//! and shapes answers; [`controller`] owns every machine state transition, writing each to
//! the store with its events and publishing it; [`supervisor`] is the controller's view of the
//! runtime. [`Agent::start`] wires them together for `aloft agent` and for embedding (`aloft up`).
//!
//! Start-up order: data dir + token, store (migrated), API tokens ([`tokens`]: key, the
//! data-dir token as the first org token), runtime, runtime event consumer,
//! reconciliation of machines left by a previous agent (see [`controller`]'s `reconcile`),
//! then the proxy with its ACME issuance task ([`acme`]: no CA is contacted before the first
//! issuance), the scraping of machines' metrics ([`metrics_scrape`]), then the API listens and
//! `<data-dir>/agent.addr` is written.
//! Shutdown stops serving but leaves machines running: the next start reaps their processes and
//! relaunches the machines that should be started.

pub mod acme;
pub mod api;
pub mod api_tls;
pub mod controller;
pub mod data_dir;
pub mod deploy;
pub mod dns;
pub mod ids;
pub mod images;
pub mod machine_map;
pub mod metrics_scrape;
pub mod regions;
pub mod routing;
pub mod schedules;
pub mod secrets_key;
pub mod settings;
pub mod supervisor;
pub mod tokens;
pub mod volumes_autoextend;
pub mod volumes_backup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aloft_runtime::{Runtime, RuntimeConfig, RuntimeEvent};
use aloft_store::{Durability, Store};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use aloft_proxy::ProxyConfig;
/// The per-container shim's entry point (`aloft shim <dir>`; see `aloft_runtime::container::shim`).
pub use aloft_runtime::container::shim::main as shim_main;
pub use aloft_runtime::net::{Ipv4Net, Ipv6Net, NetConfig};
pub use aloft_runtime::LogLimits;
pub use api_tls::ApiCertificate;
pub use controller::{Controller, MachineChange};
pub use settings::{AcmeSettings, AgentConfig, PublicAddresses, DEFAULT_LISTEN};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} is in use by another agent{holder}; stop that agent, or give this one another --data-dir")]
    DataDirInUse { path: PathBuf, holder: String },
    #[error(transparent)]
    Store(#[from] aloft_store::StoreError),
    #[error("cannot start the process runtime: {0}")]
    Runtime(#[from] aloft_runtime::RuntimeError),
    #[error("{0}")]
    Regions(String),
    #[error("refusing to serve the API over plain HTTP on {addr}, which other hosts can reach: the token would cross the network in clear text. Add --tls (a self-signed certificate clients pin on first use, or --tls-cert/--tls-key), listen on 127.0.0.1, or pass --insecure-listen if the network is trusted")]
    InsecureListen { addr: SocketAddr },
    #[error(transparent)]
    Tls(#[from] api_tls::TlsError),
    #[error("cannot listen on {addr}: {source} (is another agent running? pick another address with --listen)")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the proxy: {0}")]
    Proxy(String),
    #[error("reconciling machines at start-up failed: {0}")]
    Reconcile(String),
    #[error("loading the API tokens failed: {0}")]
    Tokens(String),
    #[error("opening the OCI image store failed: {0}")]
    ImageStore(String),
    #[error("{0}")]
    SecretsKey(#[from] secrets_key::KeyError),
    #[error("cannot read the ACME CA roots {}: {source} (--acme-ca-roots: a PEM file of the private CA's root certificates)", path.display())]
    AcmeCaRoots {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The agent entry point.
pub struct Agent;

/// Background tasks of a running agent, aborted when its handle is dropped: nothing they do
/// (extending or snapshotting volumes) may go on after the agent that owns them is gone.
struct Background(Vec<tokio::task::AbortHandle>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A running agent.
pub struct AgentHandle {
    pub addr: SocketAddr,
    /// The fingerprint of the API's TLS certificate, when it serves TLS.
    pub tls_fingerprint: Option<String>,
    pub token: String,
    pub data_dir: PathBuf,
    pub controller: Arc<Controller>,
    /// The proxy, unless the agent runs without one ([`AgentConfig::proxy`] = `None`).
    pub routing: Option<Arc<routing::Routing>>,
    /// The ACME issuance task, when the agent runs the proxy (see [`acme`]).
    pub acme: Option<Arc<acme::Acme>>,
    /// The scraping of machines' metrics endpoints.
    pub metrics: Arc<metrics_scrape::Scraper>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    /// Starts scheduled machines until the handle is dropped (see [`schedules`]).
    _scheduler: schedules::SchedulerTask,
    /// Volume auto-extension and daily snapshots, until the handle is dropped (see
    /// [`volumes_autoextend`], [`volumes_backup`]).
    _volume_tasks: Background,
    /// Held (flock) for the handle's lifetime: one agent per data dir.
    _lock: std::fs::File,
}

impl AgentHandle {
    /// `http://<addr>`, or `https://<addr>` when the API serves TLS.
    pub fn url(&self) -> String {
        match self.tls_fingerprint {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// Every machine change (see [`Controller::subscribe`]).
    pub fn subscribe(&self) -> broadcast::Receiver<MachineChange> {
        self.controller.subscribe()
    }

    /// Stops serving (in-flight requests finish). Machines keep running; see the crate docs.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.server).await;
    }

    /// Resolves when the server stops on its own (it only does on shutdown).
    pub async fn wait(mut self) {
        let _ = (&mut self.server).await;
    }
}

/// A dropped handle is an agent gone: its runtime stops supervising (no exit handled, nothing
/// restarted), as if it had crashed, even while tasks of its controller still run. Machines
/// keep running for the next agent to adopt or reap. Without this, a test's in-process agent
/// could relaunch a machine its harness had just reaped.
impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.controller.abandon_supervision();
    }
}

impl Agent {
    /// Starts an agent with the real process runtime under `<data-dir>/runtime`.
    pub async fn start(config: AgentConfig) -> Result<AgentHandle, AgentError> {
        check_listen(&config)?;
        data_dir::prepare(&config.data_dir)?;
        let lock = data_dir::lock(&config.data_dir).await?;
        let dns = dns::Dns::new();
        let (runtime, events) = Runtime::new(RuntimeConfig {
            data_dir: config.data_dir.join("runtime"),
            logs: config.logs,
            containers: Some(aloft_runtime::ContainerConfig::detect(
                Some(Arc::new(
                    aloft_runtime::container::netns::LazyNetwork::new(
                        config.network.clone(),
                        &config.data_dir.join("runtime").join("net"),
                    )
                    .with_ready_hook(dns_on_network_ready(&dns)),
                )),
                config.oci_runtime.as_deref(),
            )),
        })?;
        Agent::start_locked(config, lock, Arc::new(runtime), events, dns).await
    }

    /// Starts an agent over any [`supervisor::Supervisor`] (tests use a fake).
    pub async fn start_with(
        config: AgentConfig,
        sup: Arc<dyn supervisor::Supervisor>,
        events: mpsc::UnboundedReceiver<RuntimeEvent>,
    ) -> Result<AgentHandle, AgentError> {
        check_listen(&config)?;
        data_dir::prepare(&config.data_dir)?;
        let lock = data_dir::lock(&config.data_dir).await?;
        Agent::start_locked(config, lock, sup, events, dns::Dns::new()).await
    }

    async fn start_locked(
        config: AgentConfig,
        lock: std::fs::File,
        sup: Arc<dyn supervisor::Supervisor>,
        events: mpsc::UnboundedReceiver<RuntimeEvent>,
        dns: Arc<dns::Dns>,
    ) -> Result<AgentHandle, AgentError> {
        let regions = regions::Regions::new(&config.regions).map_err(AgentError::Regions)?;
        let ca_roots_pem =
            match &config.acme.ca_roots {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                    AgentError::AcmeCaRoots {
                        path: path.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        let dir_err = |source| AgentError::DataDir {
            path: config.data_dir.clone(),
            source,
        };
        let token = settings::load_or_create_token(&config.data_dir).map_err(dir_err)?;
        let tls = match &config.tls {
            Some(certificate) => Some(api_tls::load(certificate, &config.data_dir, config.listen)?),
            None => None,
        };
        let db_path = config.data_dir.join(settings::DB_FILE);
        let store =
            tokio::task::spawn_blocking(move || Store::open(&db_path, Durability::from_env()))
                .await
                .map_err(|e| AgentError::Reconcile(e.to_string()))??;
        let request_region = regions.default_for(None);
        let ctl = Arc::new(Controller::new(
            Arc::new(store),
            sup,
            regions,
            config.limits.clone(),
        ));
        let tokens = tokens::Tokens::start(ctl.clone(), &config.data_dir, &token)
            .await
            .map_err(|e| AgentError::Tokens(e.to_string()))?;
        ctl.set_images_dir(config.data_dir.join("images"));
        ctl.set_secrets_keyring(Arc::new(secrets_key::Keyring::new(
            secrets_key::KeySource::new(config.secrets_key.clone(), &config.data_dir),
        )?));
        ctl.set_public_addresses(config.public_addresses.clone());
        let oci_dir = config.data_dir.join("oci");
        let oci = tokio::task::spawn_blocking(move || aloft_oci::ContentStore::open(&oci_dir))
            .await
            .map_err(|e| AgentError::ImageStore(e.to_string()))?
            .map_err(|e| AgentError::ImageStore(e.to_string()))?;
        ctl.set_oci_store(oci);
        let volumes_dir = config.data_dir.join("volumes");
        ctl.set_volume_host(
            tokio::task::spawn_blocking(move || {
                aloft_runtime::volumes::VolumeHost::new(volumes_dir)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        );
        tokio::spawn(ctl.clone().run_runtime_events(events));
        let volume_tasks = Background(vec![
            tokio::spawn(volumes_autoextend::run(
                ctl.clone(),
                config.volume_extend_interval,
            ))
            .abort_handle(),
            tokio::spawn(volumes_backup::run(
                ctl.clone(),
                config.volume_snapshot_interval,
            ))
            .abort_handle(),
        ]);
        let report = ctl
            .reconcile()
            .await
            .map_err(|e| AgentError::Reconcile(e.to_string()))?;
        if !report.reaped.is_empty() || !report.relaunched.is_empty() || !report.failed.is_empty() {
            tracing::info!(
                reaped = report.reaped.len(),
                relaunched = report.relaunched.len(),
                failed = report.failed.len(),
                "reconciled machines left by the previous agent"
            );
        }
        ctl.reconcile_volumes()
            .await
            .map_err(|e| AgentError::Reconcile(format!("volumes: {e}")))?;
        ctl.restore_service_addresses()
            .await
            .map_err(|e| AgentError::Reconcile(format!("restoring Flycast addresses: {e}")))?;
        let deployer = deploy::Deployer::new(ctl.clone(), &config.data_dir);
        deployer
            .resume()
            .await
            .map_err(|e| AgentError::Reconcile(format!("resuming releases: {e}")))?;
        let scheduler = schedules::start(ctl.clone(), config.schedule_unit);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| AgentError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| AgentError::Listen {
            addr: config.listen,
            source,
        })?;
        let routing = match config.proxy.clone() {
            Some(mut proxy) => Some(Arc::new({
                // `[[statics]]` are read from container machines' mounted root filesystems.
                proxy.machine_roots.get_or_insert_with(|| {
                    aloft_runtime::container::containers_dir(&config.data_dir.join("runtime"))
                });
                routing::Routing::start(ctl.clone(), proxy)
                    .await
                    .map_err(AgentError::Proxy)?
            })),
            None => None,
        };
        // Issuance runs in the background: no CA is contacted before the agent serves.
        let acme = routing.as_ref().map(|routing| {
            acme::Acme::start(
                ctl.clone(),
                routing,
                config.acme.clone(),
                ca_roots_pem,
                config.data_dir.join("acme"),
            )
        });
        dns.follow(ctl.clone());
        let metrics = metrics_scrape::Scraper::start(ctl.clone(), config.metrics.clone()).await;
        let state = api::AppState {
            metrics: metrics.clone(),
            routing: routing.clone(),
            acme: acme.clone(),
            dns,
            ctl: ctl.clone(),
            deploy: deployer,
            tokens,
            region: Arc::new(request_region),
        };
        let app = api::router(state);
        let (tx, rx) = oneshot::channel::<()>();
        let limits = config.limits.clone();
        let tls_fingerprint = tls.as_ref().map(|tls| tls.fingerprint.clone());
        let acceptor = tls.map(|tls| tls.acceptor);
        let server = tokio::spawn(async move {
            api::serve::serve(listener, acceptor, app, &limits, rx).await;
        });
        settings::write_addr_file(&config.data_dir, addr, tls_fingerprint.as_deref())
            .map_err(dir_err)?;
        match &tls_fingerprint {
            Some(fingerprint) => {
                tracing::info!(%addr, %fingerprint, data_dir = %config.data_dir.display(), "agent listening (TLS)")
            }
            None => tracing::info!(%addr, data_dir = %config.data_dir.display(), "agent listening"),
        }
        Ok(AgentHandle {
            addr,
            tls_fingerprint,
            token,
            data_dir: config.data_dir,
            controller: ctl,
            routing,
            acme,
            metrics,
            shutdown: Some(tx),
            server,
            _scheduler: scheduler,
            _volume_tasks: volume_tasks,
            _lock: lock,
        })
    }
}

/// Refuses plain HTTP off loopback unless `--insecure-listen` allows it (then warns).
fn check_listen(config: &AgentConfig) -> Result<(), AgentError> {
    if config.plain_http_off_loopback() {
        if !config.insecure_listen {
            return Err(AgentError::InsecureListen {
                addr: config.listen,
            });
        }
        tracing::warn!(addr = %config.listen, "serving the API over plain HTTP off loopback (--insecure-listen): the token and secrets cross the network in clear text");
    }
    Ok(())
}

/// Starts the DNS server on the gateways of the machine network once it exists.
fn dns_on_network_ready(dns: &Arc<dns::Dns>) -> aloft_runtime::container::netns::ReadyHook {
    let (dns, runtime) = (dns.clone(), tokio::runtime::Handle::current());
    Box::new(move |net| dns.network_ready(&[net.gateway6().into(), net.gateway().into()], &runtime))
}
