//! Machine lifecycle: create, update, start, stop, restart, signal, destroy, cordon, metadata,
//! wait, and the reads (get, list, events, versions).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::schedule::{Schedule, SCHEDULES};
use aloft_api::{Machine, MachineConfig, MachineState, RESTART_POLICIES};
use aloft_runtime::{LaunchSpec, RuntimeError};
use aloft_store::{DesiredState, MachineFilter, MachineRecord, VersionRecord};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::actions::{
    CreateMachine, DeleteMachine, ListMachines, Nonce, StopHow, UpdateMachine, WaitMachine,
};
use super::{event, now_rfc3339, unimplemented, Controller, Reserve, FLYD, USER};
use super::{DomainError, DomainResult};
use crate::{ids, images};

/// Events attached to a machine in `GET …/machines/{id}`.
pub const EVENTS_ON_GET: usize = 10;
/// Events attached to each machine in a list (the store caches list entries with them).
pub const EVENTS_ON_LIST: usize = aloft_store::LIST_EVENTS;
/// Time before SIGKILL when destroying with force.
const KILL_TIMEOUT: Duration = Duration::from_secs(1);

/// States in which a machine has (or is about to have) a process.
pub(super) fn is_running(state: MachineState) -> bool {
    matches!(
        state,
        MachineState::Starting
            | MachineState::Started
            | MachineState::Restarting
            | MachineState::Replacing
    )
}

/// Refuses configs the agent cannot run from `image` (what `config.image` resolved to, see
/// [`Controller::resolve_image`]); messages name the field.
pub fn validate_config(config: &MachineConfig, image: &images::ResolvedImage) -> DomainResult<()> {
    if config.guest.is_some() && config.size.is_some() {
        return Err(DomainError::invalid_config(
            "config.guest and config.size are mutually exclusive; set one",
        ));
    }
    if let Some(size) = &config.size {
        if aloft_api::VmPreset::by_name(size).is_none() {
            return Err(DomainError::invalid_config(format!(
                "config.size {size:?} is not a known VM size"
            )));
        }
    }
    if let Some(guest) = &config.guest {
        guest
            .validate()
            .map_err(|e| DomainError::invalid_config(format!("config.guest: {e}")))?;
    }
    if let Some(r) = &config.restart {
        if !r.policy.is_empty() && !RESTART_POLICIES.contains(&r.policy.as_str()) {
            return Err(DomainError::invalid_config(format!(
                "config.restart.policy {:?} is not one of {}",
                r.policy,
                RESTART_POLICIES.join(", ")
            )));
        }
    }
    if let Some(sig) = config
        .stop_config
        .as_ref()
        .and_then(|s| s.signal.as_deref())
    {
        if aloft_api::signal_number(sig).is_none() {
            return Err(DomainError::invalid_config(format!(
                "config.stop_config.signal {sig:?} is not a known signal"
            )));
        }
    }
    // An empty schedule is none, as in Fly's API (Go's empty string).
    if let Some(schedule) = config.schedule.as_deref().filter(|s| !s.is_empty()) {
        if Schedule::parse(schedule).is_none() {
            return Err(DomainError::invalid_config(format!(
                "config.schedule {schedule:?} is not one of {}; leave it out for a machine that \
                 runs until stopped",
                SCHEDULES.join(", ")
            )));
        }
    }
    refuse_unsupported(config)?;
    unimplemented::refuse_fly_only_fields(config)?;
    super::volumes::check_mounts(config, image.container.is_some())?;
    check_statics(config, image)?;
    for (i, s) in config.services.iter().enumerate() {
        if s.internal_port == 0 {
            return Err(DomainError::invalid_config(format!(
                "config.services[{i}].internal_port must be 1-65535"
            )));
        }
        if s.protocol != "tcp" && s.protocol != "udp" {
            return Err(DomainError::invalid_config(format!(
                "config.services[{i}].protocol {:?} must be \"tcp\" or \"udp\"",
                s.protocol
            )));
        }
    }
    let has_command = config.init.exec.as_ref().is_some_and(|v| !v.is_empty())
        || config
            .init
            .entrypoint
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        || config.init.cmd.as_ref().is_some_and(|v| !v.is_empty())
        || !image.entrypoint.is_empty()
        || !image.cmd.is_empty();
    if !has_command {
        let fix = match &image.container {
            Some(_) => "give the image an ENTRYPOINT or CMD in its Dockerfile".to_string(),
            None => format!(
                "give image {:?} a default command in {}",
                config.image,
                images::IMAGE_META
            ),
        };
        return Err(DomainError::invalid_config(format!(
            "nothing to run: set config.init.exec or config.init.cmd, or {fix}"
        )));
    }
    Ok(())
}

/// Refuses config fields this agent cannot honour yet, naming each: accepting and dropping them
/// would leave a machine that silently differs from what was asked.
fn refuse_unsupported(config: &MachineConfig) -> DomainResult<()> {
    if let Some(f) = config.files.first() {
        return Err(DomainError::invalid_config(format!(
            "config.files: placing files into machines is not supported by this agent yet, so \
             {:?} cannot be written; ship the file in the image (COPY in the Dockerfile), or \
             pass its content in config.env",
            f.guest_path
        )));
    }
    Ok(())
}

/// `[[statics]]` are served by the proxy from a container machine's image: refused (naming the
/// entry) from a Tigris bucket, which this agent cannot reach, and on the process runtime, where
/// a machine has no image of its own.
fn check_statics(config: &MachineConfig, image: &images::ResolvedImage) -> DomainResult<()> {
    for (i, s) in config.statics.iter().enumerate() {
        if let Some(bucket) = &s.tigris_bucket {
            return Err(DomainError::invalid_config(format!(
                "config.statics[{i}] (url_prefix {:?}): serving statics from the Tigris bucket \
                 {bucket:?} is not supported by this agent; serve them from the image \
                 (guest_path) instead",
                s.url_prefix
            )));
        }
        if !s.guest_path.starts_with('/') || s.url_prefix.is_empty() {
            return Err(DomainError::invalid_config(format!(
                "config.statics[{i}]: guest_path must be an absolute path in the image and \
                 url_prefix a URL path (got {:?} and {:?})",
                s.guest_path, s.url_prefix
            )));
        }
        if image.container.is_none() {
            return Err(DomainError::invalid_config(format!(
                "config.statics[{i}] (url_prefix {:?}): statics are served from the machine's \
                 image, and image {:?} runs as a host process with no image of its own; give the \
                 app a Dockerfile (or [build] image), or remove the [[statics]] section",
                s.url_prefix, config.image
            )));
        }
    }
    Ok(())
}

/// The stop signal and timeout of a machine, overridden by a request.
fn stop_params(config: &MachineConfig, how: StopHow) -> (i32, Duration) {
    let sc = config.stop_config.as_ref();
    let signal = how.signal.unwrap_or_else(|| {
        sc.and_then(|s| s.signal.as_deref())
            .and_then(aloft_api::signal_number)
            .unwrap_or(2)
    });
    let timeout = how.timeout.unwrap_or_else(|| {
        sc.and_then(|s| s.timeout)
            .map(|t| t.as_duration())
            .unwrap_or(Duration::from_secs(aloft_api::DEFAULT_STOP_TIMEOUT_SECS))
    });
    (signal, timeout)
}

impl Controller {
    /// [`validate_config`], then the image must be one `app` may run: an uploaded image only by
    /// an app it was uploaded to (another app's digest is refused as if it did not exist).
    pub(crate) async fn validate_for_app(
        &self,
        app: &str,
        config: &MachineConfig,
    ) -> DomainResult<images::ResolvedImage> {
        let image = self.resolve_image(app, &config.image).await?;
        validate_config(config, &image)?;
        Ok(image)
    }

    /// What `image` names for `app`: an OCI image pushed to the app (the machine runs as a
    /// container of it), else a directory image (a directory on the host, or an app directory
    /// uploaded to the app), which runs as a host process. Another app's upload is refused as
    /// if it did not exist.
    pub(crate) async fn resolve_image(
        &self,
        app: &str,
        image: &str,
    ) -> DomainResult<images::ResolvedImage> {
        if let Some(prepared) = self.prepared_image(app, image).await? {
            return Ok(images::ResolvedImage::container(image, prepared));
        }
        let resolved =
            images::resolve_in(image, self.images_dir()).map_err(DomainError::invalid_config)?;
        self.check_image_owner(app, image).await?;
        Ok(resolved)
    }

    /// Refuses an uploaded image (`aloft/<app>@sha256:…`) that was not uploaded to `app`.
    pub(crate) async fn check_image_owner(&self, app: &str, image: &str) -> DomainResult<()> {
        let Some(hex) = images::uploaded_digest_hex(image.trim()) else {
            return Ok(());
        };
        let (a, digest) = (app.to_string(), format!("sha256:{hex}"));
        let owned = self
            .db(move |s| s.read(|tx| tx.image(&a, &digest)))
            .await?
            .is_some();
        if owned {
            return Ok(());
        }
        Err(DomainError::invalid_config(format!(
            "image {image:?} has not been uploaded to app {app:?}: deploy the app (aloft deploy \
             uploads its directory), or PUT it to /v1/apps/{app}/images/{hex}"
        )))
    }

    // ---- reads ----

    pub async fn get_machine(&self, app: &str, id: &str) -> DomainResult<Machine> {
        let rec = self.record(app, id).await?;
        let mid = rec.id.clone();
        let events = self
            .db(move |s| s.read(|tx| tx.events(&mid, EVENTS_ON_GET)))
            .await?;
        let mut machine = rec.to_api(events);
        self.attach_checks(&mut machine);
        Ok(machine)
    }

    /// The record, or not found (app first, then machine).
    pub async fn record(&self, app: &str, id: &str) -> DomainResult<MachineRecord> {
        let (a, i) = (app.to_string(), id.to_string());
        let (has_app, rec) = self
            .db(move |s| s.read(|tx| Ok((tx.app(&a)?.is_some(), tx.machine(&a, &i)?))))
            .await?;
        if !has_app {
            return Err(DomainError::app_not_found(app));
        }
        rec.ok_or_else(|| DomainError::machine_not_found(app, id))
    }

    pub async fn list_machines(
        &self,
        app: &str,
        action: ListMachines,
    ) -> DomainResult<Vec<Machine>> {
        let a = app.to_string();
        let listed = self
            .db(move |s| {
                s.read(|tx| {
                    if tx.app(&a)?.is_none() {
                        return Ok(None);
                    }
                    let listed = tx.listed_machines(&a, &action.filter)?;
                    let events = if action.summary {
                        Default::default()
                    } else {
                        let ids = listed.iter().map(|l| l.record.id.as_str());
                        tx.recent_events(ids, EVENTS_ON_LIST)?
                    };
                    Ok(Some((listed, events)))
                })
            })
            .await?;
        let Some((listed, mut events)) = listed else {
            return Err(DomainError::app_not_found(app));
        };
        Ok(listed
            .iter()
            .map(|l| {
                let ev = events.remove(&l.record.id).unwrap_or_default();
                let mut machine = l.record.to_api(ev);
                self.attach_checks(&mut machine);
                machine
            })
            .collect())
    }

    /// `GET …/machines` as JSON: the store's cached entries (record and newest events already
    /// serialised), each with its check results added. Same document as serialising
    /// [`Controller::list_machines`], without building a `Machine` per entry.
    pub async fn list_machines_json(
        &self,
        app: &str,
        filter: MachineFilter,
    ) -> DomainResult<Vec<u8>> {
        let a = app.to_string();
        let listed = self
            .db(move |s| {
                s.read(|tx| match tx.app(&a)? {
                    None => Ok(None),
                    Some(_) => tx.listed_machines(&a, &filter).map(Some),
                })
            })
            .await?
            .ok_or_else(|| DomainError::app_not_found(app))?;
        let size = listed.iter().map(|l| l.json.len() + 1).sum::<usize>();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'[');
        for (i, l) in listed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let checks = self.checks_of(&l.record);
            if checks.is_empty() {
                out.extend_from_slice(&l.json);
                continue;
            }
            // The cached object has no `checks` key and starts with `{"id":…`: put it first.
            out.extend_from_slice(b"{\"checks\":");
            serde_json::to_writer(&mut out, &checks)
                .map_err(|e| DomainError::internal(format!("cannot encode check results: {e}")))?;
            out.push(b',');
            out.extend_from_slice(&l.json[1..]);
        }
        out.push(b']');
        Ok(out)
    }

    pub async fn machine_events(
        &self,
        app: &str,
        id: &str,
        limit: usize,
    ) -> DomainResult<Vec<aloft_api::MachineEvent>> {
        let rec = self.record(app, id).await?;
        self.db(move |s| s.read(|tx| tx.events(&rec.id, limit)))
            .await
    }

    pub async fn machine_versions(&self, app: &str, id: &str) -> DomainResult<Vec<VersionRecord>> {
        let rec = self.record(app, id).await?;
        self.db(move |s| s.read(|tx| tx.versions(&rec.id))).await
    }

    // ---- create / update ----

    pub async fn create_machine(
        self: &Arc<Self>,
        app: &str,
        action: CreateMachine,
    ) -> DomainResult<Machine> {
        let mut req = action.request;
        unimplemented::refuse_fly_only_request_fields(&req)?;
        let image = self.validate_for_app(app, &req.config).await?;
        if !req.skip_launch {
            self.check_memory(&req.config, Reserve::New)?;
        }
        let port_claim = self.claim_ports(app, &req.config.services).await?;
        let region = match req
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            Some(r) => {
                let r = r.to_ascii_lowercase();
                if !self.regions.hosts(&r) {
                    return Err(DomainError::invalid_config(self.regions.refusal(&r)));
                }
                r
            }
            None => self
                .regions
                .default_for(req.config.env.get("PRIMARY_REGION").map(String::as_str)),
        };
        let mount = self.resolve_mounts(app, &region, &mut req.config).await?;
        if let Some(name) = &req.name {
            if let Some(problem) = ids::machine_name_problem(name) {
                return Err(DomainError::invalid_config(problem));
            }
        }
        let lease_ttl = req.lease_ttl.filter(|t| *t > 0);
        if let Some(ttl) = lease_ttl {
            super::leases::check_ttl(ttl)?;
        }
        // A container listens on its own address; only host processes need host ports.
        let host_ports = match image.container {
            Some(_) => BTreeMap::new(),
            None => self
                .sup
                .allocate_ports(&req.config)
                .map_err(runtime_failure)?,
        };
        let now = now_rfc3339();
        let mut rec = MachineRecord {
            id: ids::machine_id(),
            app: app.to_string(),
            name: req.name.clone().unwrap_or_default(),
            region,
            state: MachineState::Created,
            desired: if req.skip_launch {
                DesiredState::Stopped
            } else {
                DesiredState::Started
            },
            instance_id: ids::version(),
            private_ip: String::new(),
            config: req.config.clone(),
            image_ref: Some(image.image_ref()),
            cordoned: req.skip_service_registration,
            host_ports,
            restart_count: 0,
            created_at: now.clone(),
            updated_at: now,
        };
        let launch = event("launch", "created", USER, None);
        let launch_copy = launch.clone();
        let generate_name = req.name.is_none();
        let a = app.to_string();
        let (rec2, lease) = {
            let mut rec = rec.clone();
            self.db(move |s| {
                s.write(|tx| {
                    if tx.app(&a)?.is_none() {
                        return Ok(None);
                    }
                    if let Some(volume) = &mount.volume_id {
                        // In the machine's own transaction: never two machines on one volume.
                        if let Some(holder) = tx.attach_volume(volume, &rec.id)? {
                            return Ok(Some(Err(super::volumes::in_use(volume, &holder))));
                        }
                    }
                    if generate_name {
                        // Retry on the rare clash with a live machine's generated name.
                        rec.name = ids::machine_name();
                        for _ in 0..32 {
                            if !tx.machine_name_in_use(&a, &rec.name)? {
                                break;
                            }
                            rec.name = ids::machine_name();
                        }
                    }
                    tx.insert_machine(&rec)?;
                    tx.add_event(&rec.id, &launch)?;
                    let lease = match lease_ttl {
                        Some(ttl) => {
                            let l = super::leases::new_lease(ttl, "", &rec.instance_id);
                            tx.put_lease(&rec.id, &l)?;
                            Some(l)
                        }
                        None => None,
                    };
                    Ok(Some(Ok((rec.clone(), lease))))
                })
            })
            .await?
            .ok_or_else(|| DomainError::app_not_found(app))??
        };
        drop(port_claim);
        rec = rec2;
        self.publish(&rec);
        let mut machine = rec.to_api(vec![launch_copy]);
        machine.nonce = lease.map(|l| l.nonce);
        if !req.skip_launch {
            let ctl = self.clone();
            let id = rec.id.clone();
            tokio::spawn(async move {
                let _guard = ctl.lock(&id).await;
                if let Ok(Some(rec)) = ctl.machine_by_id(&id).await {
                    if rec.state == MachineState::Created && rec.desired == DesiredState::Started {
                        let _ = ctl.boot(rec, Vec::new()).await;
                    }
                }
            });
        }
        Ok(machine)
    }

    pub async fn update_machine(
        self: &Arc<Self>,
        app: &str,
        id: &str,
        action: UpdateMachine,
    ) -> DomainResult<Machine> {
        let mut req = action.request;
        unimplemented::refuse_fly_only_request_fields(&req)?;
        let image = self.validate_for_app(app, &req.config).await?;
        let port_claim = self.claim_ports(app, &req.config.services).await?;
        let guard = self.lock(id).await;
        let mut rec = self.record(app, id).await?;
        self.check_lease(&rec, &action.nonce).await?;
        if rec.state == MachineState::Destroyed || rec.state == MachineState::Destroying {
            return Err(DomainError::precondition(format!(
                "machine {id} is {}; it cannot be updated",
                rec.state
            )));
        }
        Self::check_mount_update(&rec, &mut req.config)?;
        if let Some(v) = req.current_version.as_deref().filter(|v| !v.is_empty()) {
            if v != rec.instance_id {
                return Err(DomainError::precondition(format!(
                    "machine {id} is at version {}, not {v}: it changed since you read it; fetch it and retry",
                    rec.instance_id
                )));
            }
        }
        if let Some(r) = req
            .region
            .as_deref()
            .filter(|r| !r.is_empty() && *r != rec.region)
        {
            return Err(DomainError::invalid_config(format!(
                "the region of machine {id} cannot change ({} → {r}); create a new machine instead",
                rec.region
            )));
        }
        if let Some(n) = req
            .name
            .as_deref()
            .filter(|n| !n.is_empty() && *n != rec.name)
        {
            return Err(DomainError::invalid_config(format!(
                "the name of machine {id} cannot change ({} → {n})",
                rec.name
            )));
        }
        let old_ports: Vec<u16> = rec.host_ports.keys().copied().collect();
        // The ports a create maps (services, checks, metrics): the same set keeps its mapping.
        let new_ports = aloft_runtime::env::internal_ports(&req.config);
        if image.container.is_some() {
            rec.host_ports.clear();
        } else if old_ports != new_ports || rec.host_ports.is_empty() && !new_ports.is_empty() {
            rec.host_ports = self
                .sup
                .allocate_ports(&req.config)
                .map_err(runtime_failure)?;
        }
        let was_running = is_running(rec.state);
        if was_running || !req.skip_launch {
            self.check_memory(&req.config, Reserve::Existing(id))?;
        }
        rec.instance_id = ids::version();
        rec.config = req.config;
        rec.image_ref = Some(image.image_ref());
        rec.restart_count = 0;
        let relaunch = was_running || !req.skip_launch;
        if relaunch {
            rec.desired = DesiredState::Started;
        }
        if was_running {
            rec.state = MachineState::Replacing;
        }
        let ev = event(
            "update",
            "replacing",
            USER,
            Some(json!({"version": rec.instance_id})),
        );
        let r = rec.clone();
        let now = now_rfc3339();
        self.db(move |s| s.write(|tx| tx.add_version(&r.id, &r.instance_id, &r.config, &now)))
            .await?;
        let rec = self.save(rec, vec![ev]).await?;
        drop(port_claim);
        let machine = self.get_machine(app, id).await?;
        drop(guard);
        if relaunch {
            let ctl = self.clone();
            let (id, version) = (rec.id.clone(), rec.instance_id.clone());
            let (signal, timeout) = stop_params(
                &rec.config,
                StopHow {
                    signal: None,
                    timeout: None,
                },
            );
            tokio::spawn(async move {
                if was_running {
                    let _ = ctl.sup.stop(&id, signal, timeout).await;
                }
                let _guard = ctl.lock(&id).await;
                match ctl.machine_by_id(&id).await {
                    // Only if nothing else (stop, destroy, another update) happened meanwhile.
                    Ok(Some(rec))
                        if rec.instance_id == version
                            && rec.desired == DesiredState::Started
                            && matches!(
                                rec.state,
                                MachineState::Replacing
                                    | MachineState::Created
                                    | MachineState::Stopped
                                    | MachineState::Failed
                            ) =>
                    {
                        let _ = ctl.boot(rec, Vec::new()).await;
                    }
                    _ => {}
                }
            });
        }
        Ok(machine)
    }

    // ---- start / stop / restart / signal ----

    /// Starts a created, stopped or failed machine; returns its previous state.
    pub async fn start_machine(
        &self,
        app: &str,
        id: &str,
        nonce: Nonce,
    ) -> DomainResult<MachineState> {
        let _guard = self.lock(id).await;
        let mut rec = self.record(app, id).await?;
        self.check_lease(&rec, &nonce).await?;
        let previous = rec.state;
        match previous {
            MachineState::Created
            | MachineState::Stopped
            | MachineState::Failed
            | MachineState::Suspended => {}
            other => {
                return Err(DomainError::precondition(format!(
                "machine {id} is {other}; only created, stopped or failed machines can be started"
            )))
            }
        }
        self.check_memory(&rec.config, Reserve::Existing(id))?;
        rec.desired = DesiredState::Started;
        rec.restart_count = 0;
        self.boot(rec, Vec::new()).await?;
        Ok(previous)
    }

    /// Launches the current version. The caller holds the machine's lock. On failure the machine
    /// is `failed` with a `launch/failed` event, and the reason is returned: an invalid config when
    /// it cannot run (no such image or binary), insufficient storage when the disk is full, an
    /// internal error for other host failures.
    pub(crate) async fn boot(
        &self,
        mut rec: MachineRecord,
        mut events: Vec<aloft_api::MachineEvent>,
    ) -> DomainResult<()> {
        let machine_id = rec.id.clone();
        let fail = |reason: String| {
            tracing::warn!(machine = %machine_id, %reason, "launch failed");
            reason
        };
        let image = match self.resolve_image(&rec.app, &rec.config.image).await {
            Ok(i) => i,
            Err(reason) => {
                let reason = fail(reason.to_string());
                self.mark_failed(rec, events, &reason).await;
                return Err(DomainError::invalid_config(reason));
            }
        };
        let secrets = match self.secret_env(&rec.app).await {
            Ok(s) => s,
            Err(e) => {
                let reason = fail(e.message().to_string());
                self.mark_failed(rec, events, &reason).await;
                return Err(e);
            }
        };
        self.stamp_secret_names(&mut rec, &secrets).await?;
        rec.state = MachineState::Starting;
        rec = self.save(rec, std::mem::take(&mut events)).await?;
        let mut spec = launch_spec(&rec, &image, self.org_of(&rec.app).await?);
        spec.secrets = secrets;
        spec.volumes = match self.volume_binds(&rec).await {
            Ok(v) => v,
            Err(e) => {
                let reason = fail(e.message().to_string());
                self.mark_failed(rec, Vec::new(), &reason).await;
                return Err(e);
            }
        };
        match self.sup.launch(spec).await {
            Ok(pid) => {
                tracing::debug!(machine = %rec.id, pid, "launched");
                Ok(())
            }
            Err(e) => {
                let answer = launch_failure(&e);
                let reason = fail(e.to_string());
                let (app, id) = (rec.app.clone(), rec.id.clone());
                self.mark_failed(rec, Vec::new(), &reason).await;
                self.on_launch_failure(&app, &id, &e).await;
                Err(answer)
            }
        }
    }

    /// Keeps metadata [`aloft_api::metadata::SECRETS`] of the machine's config equal to the
    /// names of the secrets it starts with (no new version: like a metadata write).
    async fn stamp_secret_names(
        &self,
        rec: &mut MachineRecord,
        secrets: &aloft_runtime::env::SecretEnv,
    ) -> DomainResult<()> {
        use aloft_api::metadata::SECRETS;
        let names = secrets.0.keys().cloned().collect::<Vec<_>>().join(",");
        let now = rec.config.metadata.get(SECRETS).map_or("", String::as_str);
        if now == names {
            return Ok(());
        }
        if names.is_empty() {
            rec.config.metadata.remove(SECRETS);
        } else {
            rec.config.metadata.insert(SECRETS.into(), names);
        }
        let r = rec.clone();
        self.db(move |s| s.write(|tx| tx.set_version_config(&r.id, &r.instance_id, &r.config)))
            .await
    }

    async fn mark_failed(
        &self,
        mut rec: MachineRecord,
        mut events: Vec<aloft_api::MachineEvent>,
        reason: &str,
    ) {
        rec.state = MachineState::Failed;
        rec.desired = DesiredState::Stopped;
        events.push(event(
            "launch",
            "failed",
            FLYD,
            Some(json!({"error": reason})),
        ));
        if let Err(e) = self.save(rec, events).await {
            tracing::error!(error = %e, "cannot record a launch failure");
        }
    }

    pub async fn stop_machine(
        &self,
        app: &str,
        id: &str,
        how: StopHow,
        nonce: Nonce,
    ) -> DomainResult<()> {
        let (signal, timeout) = {
            let _guard = self.lock(id).await;
            let mut rec = self.record(app, id).await?;
            self.check_lease(&rec, &nonce).await?;
            match rec.state {
                s if is_running(s) => {}
                MachineState::Stopped
                | MachineState::Created
                | MachineState::Failed
                | MachineState::Stopping => {
                    if rec.desired != DesiredState::Stopped {
                        rec.desired = DesiredState::Stopped;
                        self.save(rec, Vec::new()).await?;
                    }
                    return Ok(());
                }
                other => {
                    return Err(DomainError::precondition(format!(
                        "machine {id} is {other}; it cannot be stopped"
                    )))
                }
            }
            let params = stop_params(&rec.config, how);
            rec.state = MachineState::Stopping;
            rec.desired = DesiredState::Stopped;
            let ev = event(
                "stop",
                "stopped",
                USER,
                Some(json!({"signal": params.0, "timeout": params.1.as_secs_f64()})),
            );
            self.save(rec, vec![ev]).await?;
            params
        };
        let mut changes = self.subscribe();
        let outcome = self.sup.stop(id, signal, timeout).await;
        if outcome.is_ok() {
            wait_until_not_stopping(&mut changes, id).await;
        }
        let _guard = self.lock(id).await;
        if let Some(mut rec) = self.machine_by_id(id).await? {
            if rec.state == MachineState::Stopping {
                rec.state = MachineState::Stopped;
                self.save(rec, Vec::new()).await?;
            }
        }
        match outcome {
            Ok(()) | Err(RuntimeError::NotRunning(_)) => Ok(()),
            Err(e) => Err(runtime_failure(e)),
        }
    }

    pub async fn restart_machine(
        &self,
        app: &str,
        id: &str,
        how: StopHow,
        nonce: Nonce,
    ) -> DomainResult<()> {
        let (signal, timeout) = {
            let _guard = self.lock(id).await;
            let mut rec = self.record(app, id).await?;
            self.check_lease(&rec, &nonce).await?;
            if !matches!(rec.state, MachineState::Started | MachineState::Starting) {
                return Err(DomainError::precondition(format!(
                    "machine {id} is {}; only a started machine can be restarted (use start)",
                    rec.state
                )));
            }
            let params = stop_params(&rec.config, how);
            rec.state = MachineState::Restarting;
            rec.desired = DesiredState::Started;
            self.save(rec, vec![event("restart", "restarting", USER, None)])
                .await?;
            params
        };
        match self.sup.stop(id, signal, timeout).await {
            Ok(()) | Err(RuntimeError::NotRunning(_)) => {}
            Err(e) => return Err(runtime_failure(e)),
        }
        let _guard = self.lock(id).await;
        match self.machine_by_id(id).await? {
            Some(mut rec) if rec.state == MachineState::Restarting => {
                rec.restart_count = 0;
                self.boot(rec, Vec::new()).await
            }
            _ => Ok(()),
        }
    }

    pub async fn signal_machine(
        &self,
        app: &str,
        id: &str,
        signal: i32,
        nonce: Nonce,
    ) -> DomainResult<()> {
        let _guard = self.lock(id).await;
        let rec = self.record(app, id).await?;
        self.check_lease(&rec, &nonce).await?;
        if !is_running(rec.state) {
            return Err(DomainError::precondition(format!(
                "machine {id} is {}; only a running machine can be signalled",
                rec.state
            )));
        }
        self.sup.signal(id, signal).map_err(|e| match e {
            RuntimeError::NotRunning(_) => {
                DomainError::precondition(format!("machine {id} has no running process"))
            }
            e => runtime_failure(e),
        })
    }

    // ---- destroy ----

    pub async fn destroy_machine(
        &self,
        app: &str,
        id: &str,
        action: DeleteMachine,
    ) -> DomainResult<()> {
        let (was_running, signal, timeout) = {
            let _guard = self.lock(id).await;
            let mut rec = self.record(app, id).await?;
            self.check_lease(&rec, &action.nonce).await?;
            if rec.state == MachineState::Destroyed {
                return Err(DomainError::precondition(format!(
                    "machine {id} is already destroyed"
                )));
            }
            let running = is_running(rec.state) || rec.state == MachineState::Stopping;
            if running && !action.force {
                return Err(DomainError::precondition(format!(
                    "machine {id} is {}; stop it first, or destroy it anyway with force=true (or kill=true)",
                    rec.state
                )));
            }
            let (signal, timeout) = if action.force {
                (9, KILL_TIMEOUT)
            } else {
                stop_params(
                    &rec.config,
                    StopHow {
                        signal: None,
                        timeout: None,
                    },
                )
            };
            rec.state = MachineState::Destroying;
            rec.desired = DesiredState::Destroyed;
            self.save(rec, Vec::new()).await?;
            (running, signal, timeout)
        };
        if was_running {
            match self.sup.stop(id, signal, timeout).await {
                Ok(()) | Err(RuntimeError::NotRunning(_)) => {}
                Err(e) => {
                    tracing::warn!(machine = id, error = %e, "stopping a machine being destroyed")
                }
            }
        }
        self.finish_destroy(id, USER).await
    }

    /// Marks a machine destroyed (its process is gone) and drops its lease and lock.
    pub(crate) async fn finish_destroy(&self, id: &str, source: &str) -> DomainResult<()> {
        let mut config = None;
        {
            let _guard = self.lock(id).await;
            if let Some(mut rec) = self.machine_by_id(id).await? {
                config = Some((rec.app.clone(), rec.config.clone()));
                rec.state = MachineState::Destroyed;
                rec.desired = DesiredState::Destroyed;
                let mid = rec.id.clone();
                self.db(move |s| s.write(|tx| tx.delete_lease(&mid).map(|_| ())))
                    .await?;
                self.save(rec, vec![event("destroy", "destroyed", source, None)])
                    .await?;
            }
        }
        let (sup, mid) = (self.sup.clone(), id.to_string());
        let _ = tokio::task::spawn_blocking(move || sup.release(&mid)).await;
        if let Some((app, config)) = config {
            // Detached in the store with the destroy (`put_machine`); the volume stays.
            self.release_volume(&app, &config).await;
        }
        self.forget_lock(id);
        Ok(())
    }

    // ---- cordon / metadata ----

    pub async fn set_cordoned(
        &self,
        app: &str,
        id: &str,
        cordoned: bool,
        nonce: Nonce,
    ) -> DomainResult<()> {
        let _guard = self.lock(id).await;
        let mut rec = self.record(app, id).await?;
        self.check_lease(&rec, &nonce).await?;
        if rec.state == MachineState::Destroyed {
            return Err(DomainError::precondition(format!(
                "machine {id} is destroyed"
            )));
        }
        if rec.cordoned != cordoned {
            rec.cordoned = cordoned;
            self.save(rec, Vec::new()).await?;
        }
        Ok(())
    }

    /// Moves traffic in one step (a blue-green deploy's switch): `uncordon` machines start
    /// receiving it and `cordon` ones stop, written in one store transaction and published
    /// together, so the proxy's next table (one debounce window) has both halves of the change.
    /// Destroyed or unknown machines are skipped.
    pub async fn switch_cordons(
        &self,
        app: &str,
        uncordon: &[String],
        cordon: &[String],
    ) -> DomainResult<()> {
        let mut ids: Vec<&String> = uncordon.iter().chain(cordon).collect();
        ids.sort();
        ids.dedup();
        // Sorted order: two callers never wait on each other's locks.
        let mut guards = Vec::with_capacity(ids.len());
        for id in &ids {
            guards.push(self.lock(id).await);
        }
        let wanted: Vec<(String, bool)> = uncordon
            .iter()
            .map(|id| (id.clone(), false))
            .chain(cordon.iter().map(|id| (id.clone(), true)))
            .collect();
        let a = app.to_string();
        let current = self
            .db(move |s| {
                s.read(|tx| {
                    let mut out = Vec::with_capacity(wanted.len());
                    for (id, cordoned) in wanted {
                        if let Some(rec) = tx.machine(&a, &id)? {
                            out.push((rec, cordoned));
                        }
                    }
                    Ok(out)
                })
            })
            .await?;
        let now = now_rfc3339();
        let changed: Vec<MachineRecord> = current
            .into_iter()
            .filter(|(rec, cordoned)| {
                rec.state != MachineState::Destroyed && rec.cordoned != *cordoned
            })
            .map(|(mut rec, cordoned)| {
                rec.cordoned = cordoned;
                rec.updated_at = now.clone();
                rec
            })
            .collect();
        let records = changed.clone();
        self.db(move |s| {
            s.write(|tx| {
                for r in &records {
                    tx.put_machine(r)?;
                }
                Ok(())
            })
        })
        .await?;
        for rec in &changed {
            self.publish(rec);
        }
        drop(guards);
        Ok(())
    }

    pub async fn metadata(&self, app: &str, id: &str) -> DomainResult<BTreeMap<String, String>> {
        Ok(self.record(app, id).await?.config.metadata)
    }

    /// Sets (`Some`) or deletes (`None`) a metadata key of the current version, without a new
    /// version.
    pub async fn write_metadata(
        &self,
        app: &str,
        id: &str,
        key: &str,
        value: Option<String>,
        nonce: Nonce,
    ) -> DomainResult<()> {
        let _guard = self.lock(id).await;
        let mut rec = self.record(app, id).await?;
        self.check_lease(&rec, &nonce).await?;
        if rec.state == MachineState::Destroyed {
            return Err(DomainError::precondition(format!(
                "machine {id} is destroyed"
            )));
        }
        let changed = match value {
            Some(v) => {
                rec.config
                    .metadata
                    .insert(key.to_string(), v.clone())
                    .as_ref()
                    != Some(&v)
            }
            None => rec.config.metadata.remove(key).is_some(),
        };
        if !changed {
            return Ok(());
        }
        let r = rec.clone();
        self.db(move |s| s.write(|tx| tx.set_version_config(&r.id, &r.instance_id, &r.config)))
            .await?;
        self.save(rec, Vec::new()).await?;
        Ok(())
    }

    // ---- wait ----

    /// Waits until the machine is in one of the states (see [`WaitMachine`]); `Ok(None)` on timeout.
    pub async fn wait_machine(
        &self,
        app: &str,
        id: &str,
        action: WaitMachine,
    ) -> DomainResult<Option<(MachineState, String)>> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + action.timeout;
        let satisfied = |state: MachineState, version: &str| {
            let stale = action.instance_id.as_deref().is_some_and(|v| v != version);
            if stale {
                // An older version is gone once the machine moved on: it counts as stopped/destroyed.
                action.states.iter().any(|w| {
                    matches!(
                        w,
                        super::actions::WaitFor::State(
                            MachineState::Stopped | MachineState::Destroyed
                        )
                    )
                })
            } else {
                action.states.iter().any(|w| w.matches(state))
            }
        };
        let rec = self.record(app, id).await?;
        if satisfied(rec.state, &rec.instance_id) {
            return Ok(Some((rec.state, rec.instance_id)));
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                change = changes.recv() => match change {
                    Ok(c) if c.machine.id == id => {
                        if satisfied(c.machine.state, &c.machine.instance_id) {
                            return Ok(Some((c.machine.state, c.machine.instance_id.clone())));
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        let rec = self.record(app, id).await?;
                        if satisfied(rec.state, &rec.instance_id) {
                            return Ok(Some((rec.state, rec.instance_id)));
                        }
                    }
                    Err(RecvError::Closed) => return Err(DomainError::internal("the agent is shutting down")),
                }
            }
        }
    }
}

/// What the runtime needs to run the current version of `rec` from `image`.
/// `org` is the app's organization: a container's private address is on its network.
pub(crate) fn launch_spec(
    rec: &MachineRecord,
    image: &images::ResolvedImage,
    org: String,
) -> LaunchSpec {
    LaunchSpec {
        machine_id: rec.id.clone(),
        app: rec.app.clone(),
        org,
        region: rec.region.clone(),
        instance_id: rec.instance_id.clone(),
        image_dir: image.dir.clone(),
        image_ref: image.reference.clone(),
        image_entrypoint: image.entrypoint.clone(),
        image_cmd: image.cmd.clone(),
        config: rec.config.clone(),
        host_ports: rec.host_ports.clone(),
        container: image.container.clone(),
        // Opened by the caller when it starts the machine (`Controller::secret_env`).
        secrets: Default::default(),
        volumes: Vec::new(),
    }
}

/// Why the runtime refused a launch: the config's fault, a full disk, or the host's.
fn launch_failure(e: &RuntimeError) -> DomainError {
    let disk_full = |source: &std::io::Error| source.kind() == std::io::ErrorKind::StorageFull;
    match e {
        RuntimeError::Spawn { source, .. }
        | RuntimeError::Io { source, .. }
        | RuntimeError::Cgroup { source, .. }
            if disk_full(source) =>
        {
            DomainError::insufficient_storage(format!(
                "{e}: the agent's disk is full; free space in the data dir's filesystem and start \
                 the machine again"
            ))
        }
        RuntimeError::Spawn { .. }
        | RuntimeError::NoCommand(_)
        | RuntimeError::NoImageDir { .. } => DomainError::invalid_config(e.to_string()),
        RuntimeError::AlreadyRunning(_) => DomainError::precondition(e.to_string()),
        _ => {
            tracing::error!(error = %e, "runtime failure");
            DomainError::internal(e.to_string())
        }
    }
}

/// A runtime failure the client cannot fix.
fn runtime_failure(e: RuntimeError) -> DomainError {
    tracing::error!(error = %e, "runtime failure");
    DomainError::internal(e.to_string())
}

/// How long `stop` waits for the runtime's exit event to be recorded before it marks the
/// machine stopped itself.
const EXIT_RECORD_WAIT: Duration = Duration::from_secs(5);

/// Waits until machine `id` is published in a state other than `stopping`.
///
/// The supervisor sends its `Exited` event before it wakes `stop`, but the event is recorded by
/// another task. Waiting for it means that once a client sees `stopped`, the `exit` event (exit
/// code, signal, `requested_stop`) is already there: both are written in one transaction.
async fn wait_until_not_stopping(
    changes: &mut tokio::sync::broadcast::Receiver<super::MachineChange>,
    id: &str,
) {
    let recorded = async {
        loop {
            match changes.recv().await {
                Ok(c) if c.machine.id == id && c.machine.state != MachineState::Stopping => return,
                Ok(_) => {}
                // Missed changes: the caller reads the record and settles it itself.
                Err(RecvError::Lagged(_) | RecvError::Closed) => return,
            }
        }
    };
    if tokio::time::timeout(EXIT_RECORD_WAIT, recorded)
        .await
        .is_err()
    {
        tracing::warn!(machine = %id, "its exit was not recorded within {EXIT_RECORD_WAIT:?} of the stop");
    }
}
