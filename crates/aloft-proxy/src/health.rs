//! Health checks (machines-api §4.5, flyctl-behaviour §1.5–§1.6).
//!
//! For every started machine in the routing table, one task per check: wait for the grace period
//! (counted from the machine's latest start), then probe every `interval` with `timeout`.
//! `tcp` passes when a connection opens; `http` when the answer is 2xx (redirects are not
//! followed). Service checks gate routing: a machine with a critical service check leaves
//! rotation and returns once it passes. Top-level checks are only reported. Checks never restart
//! or stop a machine. A check that has not run yet is reported as `warning` and does not take a
//! machine out of rotation (a refused connection is retried on another machine anyway).
//!
//! Results are published per machine as `aloft_api::CheckStatus` through a watch channel that
//! the agent copies into `Machine.checks`.
//!
//! Health also remembers which machines recently refused a connection (a cooldown of
//! `REFUSED_COOLDOWN`): selection uses such a machine only when nothing else is left, so a
//! crashed machine costs one failed attempt, not one per request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aloft_api::{CheckStatus, MachineState};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::counted::CountedMap;
use crate::table::{check_timing, MachineEntry, NamedCheck, RouteTable};
use crate::tasks::AbortOnDrop;

/// A machine that refused a connection is avoided this long (used only when nothing else is
/// left).
const REFUSED_COOLDOWN: Duration = Duration::from_secs(2);

/// Check results of every machine, by machine id.
pub type CheckReport = BTreeMap<String, Vec<CheckStatus>>;

#[derive(Clone, Debug)]
struct Result_ {
    status: CheckStatus,
    service: bool,
}

/// Shared health, read by selection on every pick: check results and refusal cooldowns.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    /// machine id → check name → latest result.
    results: RwLock<HashMap<String, BTreeMap<String, Result_>>>,
    /// Machines with a critical service check, updated under the write lock: while none is,
    /// requests skip the lock.
    critical: AtomicUsize,
    /// machine id → when it last refused a connection.
    refused: CountedMap<Instant>,
}

fn count_critical(r: &HashMap<String, BTreeMap<String, Result_>>) -> usize {
    r.values()
        .filter(|checks| {
            checks
                .values()
                .any(|c| c.service && c.status.status == "critical")
        })
        .count()
}

impl HealthState {
    /// Whether any service check of the machine is critical.
    pub fn failing(&self, machine_id: &str) -> bool {
        if self.critical.load(Ordering::Acquire) == 0 {
            return false;
        }
        let r = self.results.read().unwrap_or_else(|e| e.into_inner());
        r.get(machine_id).is_some_and(|checks| {
            checks
                .values()
                .any(|c| c.service && c.status.status == "critical")
        })
    }

    /// Notes that a machine refused or reset a connection.
    pub fn mark_refused(&self, machine_id: &str) {
        self.refused
            .lock()
            .insert(machine_id.to_string(), Instant::now());
    }

    /// Whether the machine refused a connection within the cooldown.
    pub fn recently_refused(&self, machine_id: &str) -> bool {
        if !self.refused.maybe_any() {
            return false;
        }
        let mut r = self.refused.lock();
        match r.get(machine_id) {
            Some(at) if at.elapsed() < REFUSED_COOLDOWN => true,
            Some(_) => {
                r.remove(machine_id);
                false
            }
            None => false,
        }
    }

    /// False when no machine is certainly in its refusal cooldown (a cheap test before
    /// [`HealthState::recently_refused`] per machine).
    pub fn any_refused(&self) -> bool {
        self.refused.maybe_any()
    }

    fn set(
        &self,
        machine_id: &str,
        name: &str,
        service: bool,
        status: &str,
        output: String,
    ) -> bool {
        let mut r = self.results.write().unwrap_or_else(|e| e.into_inner());
        let checks = r.entry(machine_id.to_string()).or_default();
        let changed = checks
            .get(name)
            .is_none_or(|c| c.status.status != status || c.status.output != output);
        checks.insert(
            name.to_string(),
            Result_ {
                status: CheckStatus {
                    name: name.to_string(),
                    status: status.into(),
                    output,
                    updated_at: now_rfc3339(),
                },
                service,
            },
        );
        self.critical.store(count_critical(&r), Ordering::Release);
        changed
    }

    fn retain(&self, keep: &HashSet<(String, String)>) -> bool {
        let mut r = self.results.write().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for (m, checks) in r.iter_mut() {
            let before = checks.len();
            checks.retain(|name, _| keep.contains(&(m.clone(), name.clone())));
            changed |= before != checks.len();
        }
        r.retain(|_, c| !c.is_empty());
        self.critical.store(count_critical(&r), Ordering::Release);
        changed
    }

    fn report(&self) -> CheckReport {
        let r = self.results.read().unwrap_or_else(|e| e.into_inner());
        r.iter()
            .map(|(m, c)| (m.clone(), c.values().map(|v| v.status.clone()).collect()))
            .collect()
    }
}

/// Runs the check tasks following the routing table until dropped.
pub(crate) async fn supervise(
    mut table: watch::Receiver<RouteTable>,
    state: Arc<HealthState>,
    report: watch::Sender<CheckReport>,
) {
    // Dropping the map (when this task is aborted) aborts every check task.
    let mut jobs: HashMap<String, (AbortOnDrop, String)> = HashMap::new();
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    loop {
        let snapshot = table.borrow_and_update().clone();
        let mut keep = HashSet::new();
        let mut wanted: HashMap<String, (String, Arc<MachineEntry>, NamedCheck, bool)> =
            HashMap::new();
        for m in snapshot
            .machines
            .values()
            .filter(|m| m.state == MachineState::Started)
        {
            let all = m
                .service_checks
                .iter()
                .map(|c| (c, true))
                .chain(m.machine_checks.iter().map(|c| (c, false)));
            for (c, service) in all {
                let key = format!("{}/{}", m.machine_id, c.name);
                // The fingerprint restarts a check when the machine restarts, updates or moves port.
                let fingerprint = format!(
                    "{}|{:?}|{:?}|{:?}",
                    m.instance_id,
                    m.started_at_ms,
                    c,
                    c.port.and_then(|p| m.upstream(p))
                );
                keep.insert((m.machine_id.clone(), c.name.clone()));
                wanted.insert(key, (fingerprint, m.clone(), c.clone(), service));
            }
        }
        // Dropped entries abort their task.
        jobs.retain(|key, (_, fp)| wanted.get(key).is_some_and(|(f, ..)| f == fp));
        for (key, (fp, machine, check, service)) in wanted {
            if jobs.contains_key(&key) {
                continue;
            }
            let (st, tx) = (state.clone(), changed_tx.clone());
            let handle = tokio::spawn(run_check(machine, check, service, st, tx));
            jobs.insert(key, (AbortOnDrop(handle), fp));
        }
        if state.retain(&keep) {
            report.send_replace(state.report());
        }
        tokio::select! {
            r = table.changed() => if r.is_err() { break },
            Some(()) = changed_rx.recv() => {
                while changed_rx.try_recv().is_ok() {}
                report.send_replace(state.report());
            }
        }
    }
    drop(jobs);
}

async fn run_check(
    machine: Arc<MachineEntry>,
    check: NamedCheck,
    service: bool,
    state: Arc<HealthState>,
    changed: tokio::sync::mpsc::UnboundedSender<()>,
) {
    let (grace, interval, timeout) = check_timing(&check.check);
    let id = machine.machine_id.as_str();
    if state.set(
        id,
        &check.name,
        service,
        "warning",
        "waiting for the first check".into(),
    ) {
        let _ = changed.send(());
    }
    // Grace counts from the machine's latest start when known, else from now.
    let since_start = machine.started_at_ms.and_then(|ms| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_millis() as i64;
        Some(Duration::from_millis(now.saturating_sub(ms).max(0) as u64))
    });
    tokio::time::sleep(grace.saturating_sub(since_start.unwrap_or(Duration::ZERO))).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (status, output) = match check.port.and_then(|p| machine.upstream(p)) {
            None => (
                "critical",
                format!(
                    "check {} of machine {id}: internal port {} has no host port (is it a service's internal_port?)",
                    check.name,
                    check.port.map(|p| p.to_string()).unwrap_or_else(|| "(none)".into())
                ),
            ),
            Some(addr) => match tokio::time::timeout(timeout, probe(addr, &check)).await {
                Ok(Ok(out)) => ("passing", out),
                Ok(Err(err)) => ("critical", err),
                Err(_) => ("critical", format!("timed out after {timeout:?} probing {addr}")),
            },
        };
        if state.set(id, &check.name, service, status, output) {
            let _ = changed.send(());
        }
    }
}

/// One probe; `Ok(output)` when passing.
async fn probe(addr: SocketAddr, check: &NamedCheck) -> Result<String, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    if check.check.kind.as_deref() != Some("http") {
        return Ok(format!("TCP connect {addr}: Success"));
    }
    let c = &check.check;
    let path = c.path.clone().unwrap_or_else(|| "/".into());
    let method = c
        .method
        .clone()
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    let host = c
        .tls_server_name
        .clone()
        .unwrap_or_else(|| addr.to_string());
    let mut req = http::Request::builder()
        .method(method.as_str())
        .uri(&path)
        .header(http::header::HOST, host);
    req = req.header(http::header::USER_AGENT, "aloft-health-check");
    for h in &c.headers {
        for v in &h.values {
            req = req.header(h.name.as_str(), v.as_str());
        }
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid check request: {e}"))?;
    let resp = if c.protocol.as_deref() == Some("https") {
        let tls = crate::tls::insecure_client();
        let name = rustls::pki_types::ServerName::try_from(
            c.tls_server_name
                .clone()
                .unwrap_or_else(|| "localhost".into()),
        )
        .map_err(|e| format!("tls_server_name: {e}"))?;
        let stream = tls
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(stream), req).await?
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let snippet = String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_string();
    let out = format!("{method} {path} on {addr}: HTTP {status} {snippet}")
        .trim_end()
        .to_string();
    if status.is_success() {
        Ok(out)
    } else {
        Err(out)
    }
}

async fn send<I>(
    io: I,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.send_request(req)
        .await
        .map_err(|e| format!("HTTP request: {e}"))
}

fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}
