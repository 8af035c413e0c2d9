//! Deploys carried out by the agent: persisted releases, each run by its own task with the
//! convergent engine of [`aloft_deploy`] over the agent's controller ([`target::AgentTarget`]).
//!
//! * A release is created (`POST /v1/apps/{app}/releases`) from a spec the CLI flattened out of
//!   fly.toml. The agent plans it again against the machines it has *now* ([`plan_deploy_restoring`]),
//!   refuses with `confirmation_required` when machines would be destroyed that the client did
//!   not confirm, then commits the release (status `pending`, its frozen plan and the remembered
//!   group counts) before answering 201, and starts its runner.
//! * The runner records every step in the release's event log (store first, then a notice to
//!   followers), so `GET …/events?follow=true` streams progress and can resume from a `seq`.
//! * It goes on when the client disconnects. After an agent restart (even kill -9),
//!   [`Deployer::resume`] runs every `pending`/`running` release again; the engine is
//!   convergent, so it finishes with exactly the planned machines.
//! * One release runs per app: a new one supersedes the running one, which stops starting
//!   machine operations, stops waiting, and ends `superseded`.

pub mod actions;
pub mod guest;
pub mod images;
pub mod oci;
pub mod rollback;
pub mod scale;
pub mod secrets;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_api::images::image_ref;
use aloft_api::routes::STATUS_CONFIRMATION_REQUIRED;
use aloft_deploy::messages::{ConfirmationRequired, CreateReleaseRequest, ReleaseEventRecord};
use aloft_deploy::plan::{plan_deploy_restoring, DeployPlan};
use aloft_deploy::stored::StoredRelease;
use aloft_deploy::{run_release, DeployEvent, Release, ReleaseStatus};
use aloft_store::{MachineFilter, ReleaseRow, StoreError};
use tokio::sync::{broadcast, watch};

use crate::controller::actions::ListMachines;
use crate::controller::Controller;
use crate::controller::{DomainError, DomainResult};

/// Identifies one release.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReleaseKey {
    pub app: String,
    pub version: u64,
}

/// Why a release ended `superseded` (its final event's error).
pub(crate) const SUPERSEDED: &str = "a newer release took over";

/// How long a superseded release gets to wind down (finish its in-flight machine operations).
const SUPERSEDE_GRACE: Duration = Duration::from_secs(30);
/// Most events one read of a release's log returns.
pub const EVENTS_PAGE: usize = 1000;

struct Run {
    version: u64,
    cancel: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// What creating a release gave.
pub enum Created {
    /// The release is recorded and running.
    Release(Box<Release>),
    /// `dry_run`: the plan as it would be frozen.
    Plan(DeployPlan),
}

/// Why a release was not created.
pub enum CreateError {
    /// Refused or failed like any other action.
    Refused(DomainError),
    /// Machines would be destroyed that the request did not confirm.
    Confirm(ConfirmationRequired),
}

impl From<DomainError> for CreateError {
    fn from(e: DomainError) -> Self {
        CreateError::Refused(e)
    }
}

/// Where a release comes from: a deploy (the default), or a rollback that restores an earlier
/// release's per-group counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origin {
    pub restore: Option<BTreeMap<String, u32>>,
    pub rollback_of: Option<u64>,
    /// The name of the token that asked (`Release::created_by`).
    pub created_by: Option<String>,
}

/// See the module docs.
pub struct Deployer {
    pub(crate) ctl: Arc<Controller>,
    images_dir: PathBuf,
    /// Upload slots ([`images::MAX_UPLOADS`]).
    uploads: Arc<tokio::sync::Semaphore>,
    notices: broadcast::Sender<ReleaseKey>,
    runs: Mutex<HashMap<String, Run>>,
    /// Serialises release creation per app.
    create_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn corrupt(what: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
}

/// A stored release row as the release it holds (the body is a [`StoredRelease`], the persisted
/// format, not the wire JSON).
fn decode(row: &ReleaseRow) -> Result<Release, StoreError> {
    serde_json::from_str::<StoredRelease>(&row.body)
        .map(Release::from)
        .map_err(corrupt(format!(
            "release v{} of app {}",
            row.version, row.app
        )))
}

/// The row that stores `r`.
fn encode(r: &Release) -> ReleaseRow {
    let stored = StoredRelease::from(r);
    ReleaseRow {
        app: r.app.clone(),
        version: r.version,
        id: r.id.clone(),
        status: stored.status.as_str().to_string(),
        body: serde_json::to_string(&stored).expect("a release serialises"),
        created_at: r.created_at.clone(),
        updated_at: r.updated_at.clone(),
    }
}

/// RFC 3339 UTC with milliseconds.
/// A new pending release of `app` with `spec`, created now under a fresh id, with no version
/// yet ([`Deployer::insert_release`] gives it one) and nothing else set.
fn pending_release(app: &str, spec: aloft_deploy::ReleaseSpec) -> Release {
    let now = now_ms_rfc3339();
    Release {
        id: ulid::Ulid::new().to_string(),
        version: 0,
        app: app.to_string(),
        status: ReleaseStatus::Pending,
        spec,
        plan: Default::default(),
        desired_counts: Default::default(),
        image_digest: None,
        created_at: now.clone(),
        updated_at: now,
        error: None,
        scale: None,
        group_counts: BTreeMap::new(),
        rollback_of: None,
        created_by: None,
        phase: None,
    }
}

fn now_ms_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_millisecond(now.millisecond()).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether `name` can be a process group name (letters, digits, `-`, `_`; 1–63 chars).
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Deployer {
    /// A deployer over `ctl`, with uploaded images under `<data_dir>/images`.
    pub fn new(ctl: Arc<Controller>, data_dir: &Path) -> Arc<Deployer> {
        let images_dir = data_dir.join("images");
        images::clean_temporaries(&images_dir);
        let (notices, _) = broadcast::channel(4096);
        Arc::new(Deployer {
            ctl,
            images_dir,
            uploads: Arc::new(tokio::sync::Semaphore::new(images::MAX_UPLOADS)),
            notices,
            runs: Mutex::new(HashMap::new()),
            create_locks: Mutex::new(HashMap::new()),
        })
    }

    /// Where uploaded images are unpacked.
    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    /// A notice (app, version) after every event recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReleaseKey> {
        self.notices.subscribe()
    }

    /// Runs again every release left `pending` or `running` by a previous agent (the newest of
    /// each app; older unfinished ones are marked superseded). Returns how many were resumed.
    pub async fn resume(self: &Arc<Self>) -> DomainResult<usize> {
        let rows = self
            .ctl
            .db(|s| s.read(|tx| tx.unfinished_releases()))
            .await?;
        let mut newest: BTreeMap<String, Release> = BTreeMap::new();
        for row in rows {
            let release = decode(&row).map_err(DomainError::from)?;
            if let Some(older) = newest.insert(row.app.clone(), release) {
                self.record(
                    &ReleaseKey {
                        app: older.app.clone(),
                        version: older.version,
                    },
                    DeployEvent::Finished {
                        status: ReleaseStatus::Superseded,
                        error: Some(SUPERSEDED.into()),
                    },
                )
                .await?;
            }
        }
        let n = newest.len();
        for (_, release) in newest {
            tracing::info!(app = %release.app, version = release.version, "resuming release");
            self.spawn_run(release, true);
        }
        Ok(n)
    }

    fn spawn_run(self: &Arc<Self>, release: Release, resumed: bool) {
        let (cancel, rx) = watch::channel(false);
        let key = ReleaseKey {
            app: release.app.clone(),
            version: release.version,
        };
        let me = self.clone();
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let k = key.clone();
        let handle = tokio::spawn(async move {
            let target = target::AgentTarget {
                deployer: me.clone(),
                key: k.clone(),
                cancel: rx,
            };
            match run_release(&target, &release, resumed).await {
                Ok(()) => tracing::info!(app = %k.app, version = k.version, "release complete"),
                // What it was doing when it stopped, not a failure: its status says superseded.
                Err(e) if target.cancelled() => {
                    tracing::info!(app = %k.app, version = k.version, stopped = %e, "release superseded")
                }
                Err(e) => {
                    tracing::warn!(app = %k.app, version = k.version, error = %e, "release failed")
                }
            }
            if let Err(e) = me.collect_images().await {
                tracing::warn!(error = %e, "image garbage collection after a release failed");
            }
            let mut runs = me.runs.lock().unwrap_or_else(|p| p.into_inner());
            if runs.get(&k.app).is_some_and(|r| r.version == k.version) {
                runs.remove(&k.app);
            }
        });
        runs.insert(
            key.app.clone(),
            Run {
                version: key.version,
                cancel,
                handle,
            },
        );
    }

    /// Stops the app's running release, if any, and waits for it to wind down.
    async fn supersede(&self, app: &str) {
        let run = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
        let Some(run) = run else { return };
        let _ = run.cancel.send(true);
        let abort = run.handle.abort_handle();
        if tokio::time::timeout(SUPERSEDE_GRACE, run.handle)
            .await
            .is_err()
        {
            abort.abort();
            let key = ReleaseKey {
                app: app.to_string(),
                version: run.version,
            };
            let finished = DeployEvent::Finished {
                status: ReleaseStatus::Superseded,
                error: Some(SUPERSEDED.into()),
            };
            if let Err(e) = self.record(&key, finished).await {
                tracing::warn!(app, version = run.version, error = %e, "cannot mark a superseded release");
            }
        }
    }

    fn create_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.create_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    /// Creates (and starts) a release, or with `dry_run` only plans it. See the module docs.
    pub async fn create_release(
        self: &Arc<Self>,
        app: &str,
        req: CreateReleaseRequest,
        dry_run: bool,
        created_by: Option<String>,
    ) -> Result<Created, CreateError> {
        let origin = Origin {
            created_by,
            ..Origin::default()
        };
        self.create_release_from(app, req, dry_run, origin).await
    }

    /// [`Deployer::create_release`] of a deploy or of a rollback (`origin`).
    pub(crate) async fn create_release_from(
        self: &Arc<Self>,
        app: &str,
        mut req: CreateReleaseRequest,
        dry_run: bool,
        origin: Origin,
    ) -> Result<Created, CreateError> {
        self.ctl.get_app(app).await?;
        let _guard = self.create_lock(app).lock_owned().await;
        // A dry run may name an image the client uploads only once the plan is confirmed: the
        // plan does not depend on the image, so its configs are checked at the real request.
        let mut image_pending = false;
        if let Some(digest) = req.image_digest.clone() {
            let hex = aloft_deploy::image::digest_hex(&digest)
                .map_err(|e| DomainError::invalid_request(e.to_string()))?;
            let d = crate::controller::oci_digest(&format!("sha256:{hex}"))?;
            let oci = self.ctl.oci_image_owned(app, &d).await?;
            if !oci && self.image(app, hex).await.is_err() {
                if !dry_run {
                    return Err(DomainError::not_found(format!(
                        "image {digest} has not been uploaded to app {app:?}: push it (aloft deploy), or PUT it to /v1/apps/{app}/images/{hex} (an app directory) or /v1/apps/{app}/manifests/sha256:{hex} (an OCI image) first"
                    ))
                    .into());
                }
                image_pending = true;
            }
            req.spec.image = image_ref(app, &format!("sha256:{hex}"));
        }
        self.check_spec(app, &req, !image_pending).await?;
        self.check_ports(app, &req.spec).await?;
        let restore = origin.restore.as_ref();
        let plan = self.plan(app, &req, restore).await?;
        if dry_run {
            return Ok(Created::Plan(plan));
        }
        check_confirmed(&plan, &req)?;
        self.supersede(app).await;
        // Plan again: the superseded release may have changed machines meanwhile.
        let plan = self.plan(app, &req, restore).await?;
        check_confirmed(&plan, &req)?;
        let counts = self.counts(app).await?;
        let release = Release {
            plan: plan.frozen,
            desired_counts: counts,
            image_digest: req.image_digest,
            group_counts: plan.counts,
            rollback_of: origin.rollback_of,
            created_by: origin.created_by,
            ..pending_release(app, req.spec)
        };
        let filtered = req.process_groups.as_ref().is_some_and(|g| !g.is_empty());
        let restored = origin.restore;
        let release = self
            .insert_release(release, move |tx, r| {
                // A rollback brings back the counts the app remembers too.
                for (group, n) in restored.iter().flatten() {
                    tx.set_group_count(&r.app, group, *n)?;
                }
                if !filtered {
                    // Counts of groups the config no longer has are forgotten with them.
                    for group in tx.group_counts(&r.app)?.keys() {
                        if !r.spec.groups.contains_key(group) {
                            tx.delete_group_count(&r.app, group)?;
                        }
                    }
                }
                Ok(())
            })
            .await?;
        tracing::info!(app, version = release.version, "release created");
        self.spawn_run(release.clone(), false);
        Ok(Created::Release(Box::new(release)))
    }

    /// Stores `release` under the app's next version of its kind (a scale operation's when it
    /// has `scale` work, else a deploy's) and runs `also` in the same transaction; returns the
    /// release with its version set. The version is only known inside the transaction.
    async fn insert_release(
        &self,
        mut release: Release,
        also: impl Fn(&aloft_store::Tx<'_>, &Release) -> Result<(), StoreError> + Send + 'static,
    ) -> DomainResult<Release> {
        let r = release.clone();
        release.version = self
            .ctl
            .db(move |s| {
                s.write(|tx| {
                    let mut r = r.clone();
                    r.version = match r.scale {
                        Some(_) => tx.next_scale_version(&r.app)?,
                        None => tx.next_release_version(&r.app)?,
                    };
                    tx.insert_release(&encode(&r))?;
                    also(tx, &r)?;
                    Ok(r.version)
                })
            })
            .await?;
        Ok(release)
    }

    /// Refuses a spec the agent cannot carry out; messages name the group and field. The
    /// groups' machine configs (which need the image) are checked when `configs` is set.
    async fn check_spec(
        &self,
        app: &str,
        req: &CreateReleaseRequest,
        configs: bool,
    ) -> DomainResult<()> {
        let spec = &req.spec;
        if spec.groups.is_empty() {
            return Err(DomainError::invalid_config(
                "spec.groups is empty: the config defines no process group",
            ));
        }
        if spec.image.trim().is_empty() {
            return Err(DomainError::invalid_config(
                "spec.image is required (or upload the app directory and pass image_digest)",
            ));
        }
        if !spec.groups.contains_key(&spec.default_group) {
            return Err(DomainError::invalid_config(format!(
                "spec.default_group {:?} is not one of the spec's groups",
                spec.default_group
            )));
        }
        if let Some(r) = &spec.primary_region {
            if !self.ctl.regions().hosts(r) {
                return Err(DomainError::invalid_config(format!(
                    "primary region: {}",
                    self.ctl.regions().refusal(r)
                )));
            }
        }
        if let Some(group) = spec.groups.keys().find(|g| !valid_group_name(g)) {
            return Err(DomainError::invalid_config(format!(
                "process group name {group:?} must be 1-63 letters, digits, '-' or '_'"
            )));
        }
        if !configs {
            return Ok(());
        }
        let image = self.ctl.resolve_image(app, &spec.image).await?;
        for (group, cfg) in &spec.groups {
            let mut cfg = cfg.clone();
            cfg.image = spec.image.clone();
            crate::controller::validate_config(&cfg, &image).map_err(|e| {
                DomainError::invalid_config(format!("process group {group:?}: {e}"))
            })?;
        }
        Ok(())
    }

    /// Refuses services the proxy cannot serve (UDP, unknown handlers) and external ports another
    /// app already serves, before anything changes (issue: "port clash → the deploy fails").
    async fn check_ports(
        &self,
        app: &str,
        spec: &aloft_deploy::spec::ReleaseSpec,
    ) -> DomainResult<()> {
        let services: Vec<aloft_api::MachineService> = spec
            .groups
            .values()
            .flat_map(|c| c.services.iter().cloned())
            .collect();
        self.ctl.claim_ports(app, &services).await.map(drop)
    }

    async fn counts(&self, app: &str) -> DomainResult<BTreeMap<String, u32>> {
        let a = app.to_string();
        self.ctl.db(move |s| s.read(|tx| tx.group_counts(&a))).await
    }

    /// The app's machines now, as the planners see them.
    async fn machines_now(&self, app: &str) -> DomainResult<Vec<aloft_api::Machine>> {
        let list = ListMachines {
            filter: MachineFilter::default(),
            summary: true,
        };
        self.ctl.list_machines(app, list).await
    }

    /// Plans `req` against the app's machines now (bringing groups to `restore`'s counts on a
    /// rollback).
    async fn plan(
        &self,
        app: &str,
        req: &CreateReleaseRequest,
        restore: Option<&BTreeMap<String, u32>>,
    ) -> DomainResult<DeployPlan> {
        let machines = self.machines_now(app).await?;
        let counts = self.counts(app).await?;
        plan_deploy_restoring(
            &req.spec,
            &machines,
            &counts,
            req.process_groups.as_deref(),
            restore,
        )
        .map_err(|e| DomainError::invalid_config(e.to_string()))
    }

    /// Releases of an app, newest first.
    pub async fn releases(&self, app: &str) -> DomainResult<Vec<Release>> {
        self.ctl.get_app(app).await?;
        let a = app.to_string();
        let rows = self.ctl.db(move |s| s.read(|tx| tx.releases(&a))).await?;
        rows.iter()
            .map(|r| decode(r).map_err(DomainError::from))
            .collect()
    }

    pub async fn release(&self, app: &str, version: u64) -> DomainResult<Release> {
        self.ctl.get_app(app).await?;
        let a = app.to_string();
        let row = self
            .ctl
            .db(move |s| s.read(|tx| tx.release(&a, version)))
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("release v{version} of app {app:?} not found"))
            })?;
        decode(&row).map_err(DomainError::from)
    }

    /// Events of a release with `seq > after`, oldest first (at most [`EVENTS_PAGE`]).
    pub async fn events(
        &self,
        app: &str,
        version: u64,
        after: u64,
    ) -> DomainResult<Vec<ReleaseEventRecord>> {
        let a = app.to_string();
        let rows = self
            .ctl
            .db(move |s| s.read(|tx| tx.release_events(&a, version, after, EVENTS_PAGE)))
            .await?;
        rows.into_iter()
            .map(|r| {
                let event = serde_json::from_str(&r.event)
                    .map_err(corrupt(format!("event {} of release v{version}", r.seq)))?;
                Ok(ReleaseEventRecord {
                    seq: r.seq,
                    at: r.at,
                    event,
                })
            })
            .collect::<Result<_, StoreError>>()
            .map_err(DomainError::from)
    }

    /// Appends an event to a release's log (updating its status on `Started` and `Finished`),
    /// committed before followers are told. A finished release takes no more events (a precondition error).
    pub(crate) async fn record(&self, key: &ReleaseKey, event: DeployEvent) -> DomainResult<()> {
        let at = now_ms_rfc3339();
        let json = serde_json::to_string(&event).expect("an event serialises");
        let k = key.clone();
        let accepted = self
            .ctl
            .db(move |s| {
                s.write(|tx| {
                    let Some(row) = tx.release(&k.app, k.version)? else {
                        return Ok(false);
                    };
                    let mut release = decode(&row)?;
                    if release.status.is_terminal() {
                        return Ok(false);
                    }
                    let new_status = match &event {
                        DeployEvent::Started { .. } => Some((ReleaseStatus::Running, None)),
                        DeployEvent::Finished { status, error } => Some((*status, error.clone())),
                        _ => None,
                    };
                    let new_phase = event
                        .phase()
                        .filter(|p| release.phase.as_deref() != Some(*p));
                    if let Some(phase) = new_phase {
                        release.phase = Some(phase.to_string());
                    }
                    let changed = new_status.is_some() || new_phase.is_some();
                    if let Some((status, error)) = new_status {
                        release.status = status;
                        release.error = error;
                    }
                    if changed {
                        release.updated_at = at.clone();
                        tx.put_release(&encode(&release))?;
                    }
                    tx.add_release_event(&k.app, k.version, &at, &json)?;
                    Ok(true)
                })
            })
            .await?;
        if !accepted {
            return Err(DomainError::precondition(format!(
                "release v{} of app {:?} is finished; it takes no more events",
                key.version, key.app
            )));
        }
        let _ = self.notices.send(key.clone());
        Ok(())
    }

    /// Remembered desired counts per group.
    pub async fn group_counts(&self, app: &str) -> DomainResult<BTreeMap<String, u32>> {
        self.ctl.get_app(app).await?;
        self.counts(app).await
    }

    pub async fn set_group_count(
        &self,
        app: &str,
        group: &str,
        count: u32,
    ) -> DomainResult<BTreeMap<String, u32>> {
        if !valid_group_name(group) {
            return Err(DomainError::invalid_config(format!(
                "process group name {group:?} must be 1-63 letters, digits, '-' or '_'"
            )));
        }
        let max = self.ctl.limits().max_group_count;
        if count > max {
            return Err(DomainError::invalid_config(format!(
                "count {count} for process group {group:?} is more than this agent allows ({max} \
                 machines per group); scale to {max} or fewer, or raise aloft agent --max-group-count"
            )));
        }
        self.ctl.get_app(app).await?;
        let (a, g) = (app.to_string(), group.to_string());
        self.ctl
            .db(move |s| {
                s.write(|tx| {
                    tx.set_group_count(&a, &g, count)?;
                    tx.group_counts(&a)
                })
            })
            .await
    }
}

/// A destroy of `plan` that `req` did not confirm is a [`CreateError::Confirm`].
fn check_confirmed(plan: &DeployPlan, req: &CreateReleaseRequest) -> Result<(), CreateError> {
    let unconfirmed: Vec<&str> = plan
        .frozen
        .destroy
        .iter()
        .map(|d| d.id.as_str())
        .filter(|id| !req.confirmed_destroy.iter().any(|c| c == id))
        .collect();
    if unconfirmed.is_empty() {
        return Ok(());
    }
    Err(CreateError::Confirm(ConfirmationRequired {
        error: format!(
            "this deploy destroys {} machine(s) of process groups no longer in the config \
             ({}); confirm them by listing every one in confirmed_destroy",
            plan.frozen.destroy.len(),
            unconfirmed.join(", ")
        ),
        status: STATUS_CONFIRMATION_REQUIRED.into(),
        destroy: plan.frozen.destroy.clone(),
    }))
}
