//! The agent side of the proxy: keeps the proxy's routing table in step with the machines,
//! feeds health-check results back to the controller, and lets the proxy start and stop
//! machines (autostart/autostop) through the controller — the same path an API call takes.
//!
//! Data flow: controller changes (broadcast) → in-memory map app → machines → debounced
//! `RouteTable::from_machines` (with each app's hostnames: `<app>.<domain>` and the custom ones
//! of the `certificates` table, and its Flycast addresses) → `watch` → proxy. Certificate
//! changes go through [`Routing::reload_certificates`]: stored certificates to the proxy's
//! resolver, hostnames into the next table, which it waits for. The proxy's check reports → controller
//! (`apply_check_report`) → `Machine.checks` and change notifications for deploys waiting on
//! health. The proxy itself never sees the store (ARCHITECTURE.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aloft_api::{Machine, MachineState};
use aloft_proxy::{
    AppRoutes, BoxFuture, ControlError, MachineControl, Proxy, ProxyConfig, ProxyHandle, RouteTable,
};
use tokio::sync::{watch, Notify};

use crate::controller::actions::{StopHow, WaitFor, WaitMachine};
use crate::controller::Controller;
use crate::controller::DomainError;
use crate::machine_map::{self, AppMachines};

/// How long changes are gathered before the table is rebuilt: bursts (a deploy of 200 machines)
/// cost one rebuild per window instead of one per machine.
const REBUILD_DEBOUNCE: Duration = Duration::from_millis(20);

/// The running proxy and the sender of its routing table.
pub struct Routing {
    pub proxy: ProxyHandle,
    table: watch::Sender<RouteTable>,
    ctl: Arc<Controller>,
    names: Arc<Names>,
    /// Hostnames whose stored certificate the proxy serves (to take back removed ones).
    served: Mutex<BTreeSet<String>>,
}

impl Routing {
    /// Starts the proxy over the machines the controller knows, and the tasks that keep it fed.
    pub async fn start(ctl: Arc<Controller>, config: ProxyConfig) -> Result<Routing, String> {
        let machines = machine_map::load_all(&ctl)
            .await
            .map_err(|e| e.to_string())?;
        let names = Arc::new(Names {
            domain: config.domain.clone(),
            custom: RwLock::default(),
            changed: Notify::new(),
            requested: AtomicU64::new(0),
            applied: watch::Sender::new(0),
        });
        let (table_tx, table_rx) = watch::channel(build_table(&ctl, &machines, &names));
        let control = Arc::new(AgentControl { ctl: ctl.clone() });
        let proxy = Proxy::spawn(config, table_rx, control).map_err(|e| e.to_string())?;
        tokio::spawn(follow_machines(
            ctl.clone(),
            machines,
            names.clone(),
            table_tx.clone(),
        ));
        ctl.set_checks_run();
        tokio::spawn(report_checks(ctl.clone(), proxy.checks()));
        let routing = Routing {
            proxy,
            table: table_tx,
            ctl,
            names,
            served: Mutex::default(),
        };
        routing.reload_certificates().await?;
        Ok(routing)
    }

    /// Brings the proxy in step with the stored certificates: every app answers at its
    /// hostnames (the table is rebuilt) and each stored certificate is served for its hostname
    /// from the next TLS handshake on; removed ones are taken back. Call after any change of
    /// the `certificates` table (`aloft certs add/remove`, an ACME issuance or renewal).
    pub async fn reload_certificates(&self) -> Result<(), String> {
        let certs = self
            .ctl
            .stored_certificates()
            .await
            .map_err(|e| e.to_string())?;
        let mut custom: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut served = BTreeSet::new();
        for c in certs {
            custom
                .entry(c.app.clone())
                .or_default()
                .push(c.hostname.clone());
            if let (Some(chain), Some(key)) = (&c.chain_pem, &c.key_pem) {
                match self.proxy.set_certificate(&c.hostname, chain, key) {
                    Ok(()) => {
                        served.insert(c.hostname);
                    }
                    Err(e) => {
                        tracing::warn!(hostname = %c.hostname, app = %c.app, "stored certificate not served: {e}")
                    }
                }
            }
        }
        {
            let mut before = self.served.lock().unwrap_or_else(|e| e.into_inner());
            for gone in before.difference(&served) {
                self.proxy.remove_certificate(gone);
            }
            *before = served;
        }
        *self.names.custom.write().unwrap_or_else(|e| e.into_inner()) = custom;
        // Wait for the table with these hostnames, so the next request already sees them.
        let generation = self.names.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut applied = self.names.applied.subscribe();
        self.names.changed.notify_one();
        let wait = applied.wait_for(|g| *g >= generation);
        let rebuilt = matches!(
            tokio::time::timeout(Duration::from_secs(5), wait).await,
            Ok(Ok(_))
        );
        if rebuilt {
            Ok(())
        } else {
            Err("the proxy's routing table was not rebuilt in time".into())
        }
    }

    /// The current routing table (port clash checks before a deploy read it).
    pub fn table(&self) -> RouteTable {
        self.table.borrow().clone()
    }
}

/// The app's primary region: `PRIMARY_REGION` of its machines (flyctl sets it from fly.toml).
fn primary_region(machines: &BTreeMap<String, Machine>) -> String {
    machines
        .values()
        .find_map(|m| m.config.env.get("PRIMARY_REGION").cloned())
        .unwrap_or_default()
}

/// How apps are named on the shared HTTP ports.
struct Names {
    /// `<app>.<domain>` (`ProxyConfig::domain`).
    domain: String,
    /// Custom hostnames by app (the `certificates` table).
    custom: RwLock<BTreeMap<String, Vec<String>>>,
    /// Signalled when `custom` changed: the table is rebuilt.
    changed: Notify,
    /// Generation of `custom` asked for (bumped on every change)…
    requested: AtomicU64,
    /// …and the generation the latest table was built with.
    applied: watch::Sender<u64>,
}

impl Names {
    /// Every hostname `app` answers at: `<app>.<domain>` and its custom hostnames.
    fn hostnames(&self, app: &str) -> Vec<String> {
        let mut names = vec![format!("{app}.{}", self.domain)];
        let custom = self.custom.read().unwrap_or_else(|e| e.into_inner());
        names.extend(custom.get(app).into_iter().flatten().cloned());
        names
    }
}

/// The proxy's table: every app with its hostnames and addresses (`Controller::app_addresses`).
/// A container machine is reached at its IPv4 address on the bridge, not at its `private_ip`
/// (IPv6): an app listening on 0.0.0.0 only is served too, as Fly's proxy reaches machines.
fn build_table(ctl: &Controller, all: &AppMachines, names: &Names) -> RouteTable {
    let apps: Vec<AppRoutes> = all
        .iter()
        .map(|(app, ms)| {
            let addresses = ctl.app_addresses(app);
            let machines = ms
                .values()
                .map(|m| match ctl.machine_ipv4(&m.id) {
                    Some(ip4) => Machine {
                        private_ip: ip4.to_string(),
                        ..m.clone()
                    },
                    None => m.clone(),
                })
                .collect();
            AppRoutes {
                hostnames: names.hostnames(app),
                flycast: addresses.flycast,
                public: addresses.public,
                ..AppRoutes::new(app.clone(), primary_region(ms), machines)
            }
        })
        .collect();
    RouteTable::from_machines(&apps)
}

async fn follow_machines(
    ctl: Arc<Controller>,
    mut all: AppMachines,
    names: Arc<Names>,
    table: watch::Sender<RouteTable>,
) {
    let mut changes = ctl.subscribe();
    let mut ip_changes = ctl.subscribe_ips();
    loop {
        let first = tokio::select! {
            c = changes.recv() => c,
            // Hostnames changed: rebuild with the machines as they are.
            _ = names.changed.notified() => {
                push(&ctl, &table, &all, &names);
                continue;
            }
            // Addresses changed (Flycast, public or not): the same.
            r = ip_changes.changed() => {
                if r.is_err() {
                    return;
                }
                push(&ctl, &table, &all, &names);
                continue;
            }
        };
        if !machine_map::gather(
            &ctl,
            &mut changes,
            &mut all,
            first,
            REBUILD_DEBOUNCE,
            "proxy",
        )
        .await
        {
            return;
        }
        push(&ctl, &table, &all, &names);
    }
}

/// Builds the table and sends it when it differs from the current one; records which
/// hostname generation it was built with.
fn push(ctl: &Controller, table: &watch::Sender<RouteTable>, all: &AppMachines, names: &Names) {
    let generation = names.requested.load(Ordering::Acquire);
    let next = build_table(ctl, all, names);
    table.send_if_modified(|cur| {
        let modified = *cur != next;
        if modified {
            *cur = next;
        }
        modified
    });
    names.applied.send_if_modified(|g| {
        let newer = generation > *g;
        if newer {
            *g = generation;
        }
        newer
    });
}

async fn report_checks(
    ctl: Arc<Controller>,
    mut checks: watch::Receiver<aloft_proxy::CheckReport>,
) {
    loop {
        let report = checks.borrow_and_update().clone();
        ctl.apply_check_report(&report).await;
        if checks.changed().await.is_err() {
            return;
        }
    }
}

/// Autostart/autostop through the controller: leases, events and state rules all apply.
struct AgentControl {
    ctl: Arc<Controller>,
}

impl MachineControl for AgentControl {
    fn start<'a>(
        &'a self,
        app: &'a str,
        machine_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        Box::pin(async move {
            let ctl = &self.ctl;
            match ctl.start_machine(app, machine_id, None).await {
                Ok(_) => {}
                // Already started or starting (another request won the race): fine.
                Err(DomainError::Precondition(_)) => {}
                Err(e) => {
                    return Err(ControlError(format!(
                        "autostart of machine {machine_id}: {e}"
                    )))
                }
            }
            let wait = WaitMachine {
                states: vec![WaitFor::State(MachineState::Started)],
                timeout: Duration::from_secs(60),
                instance_id: None,
            };
            match ctl.wait_machine(app, machine_id, wait).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(ControlError(format!(
                    "machine {machine_id} did not start within 60s"
                ))),
                Err(e) => Err(ControlError(format!("machine {machine_id}: {e}"))),
            }
        })
    }

    fn stop<'a>(
        &'a self,
        app: &'a str,
        machine_id: &'a str,
        _suspend: bool,
    ) -> BoxFuture<'a, Result<(), ControlError>> {
        // Suspend is not supported by the process runtime: a stop is the documented fallback.
        Box::pin(async move {
            let how = StopHow {
                signal: None,
                timeout: None,
            };
            self.ctl
                .stop_machine(app, machine_id, how, None)
                .await
                .map_err(|e| ControlError(format!("autostop of machine {machine_id}: {e}")))
        })
    }
}
