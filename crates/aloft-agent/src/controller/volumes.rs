//! Volumes (`/v1/apps/{app}/volumes…`): create (empty, from a snapshot, or a fork of another
//! volume), update, extend (online), snapshot, destroy; and what machines need of them —
//! [`Controller::resolve_mounts`] picks the volume of a new machine's `config.mounts`,
//! [`Controller::volume_binds`] mounts it on the host before the machine starts.
//!
//! Rules (Fly's): a machine has at most one mount; its volume belongs to the app, is in the
//! machine's region and is attached to no other machine (the attachment is written in the
//! machine's own creating transaction: `aloft_store::Tx::attach_volume`); an update may change
//! the mount's path, never its volume; destroying a machine detaches its volume (never deletes
//! it); an attached volume cannot be destroyed. Volumes exist on the host through
//! `aloft_runtime::volumes::VolumeHost` (ext4 images on loop devices: root only; without it
//! every volume request is refused with the reason). Only container machines mount volumes.
//!
//! Operations on one volume are serialised by the controller's per-id lock (volume ids never
//! equal machine ids).

use std::sync::Arc;

use aloft_api::volumes::{
    self as wire, CreateVolumeRequest, ExtendVolumeResponse, UpdateVolumeRequest, Volume,
    VolumeSnapshot,
};
use aloft_api::MachineConfig;
use aloft_runtime::volumes::{Grown, Source, VolumeBind, VolumeError, VolumeHost};
use aloft_store::{MachineRecord, SnapshotRow, VolumeRow};

use super::{now_rfc3339, Controller, DomainError, DomainResult};
use crate::ids;

/// The zone of every volume: one host is one zone.
const ZONE: &str = "local";

/// What a new machine's `config.mounts` resolved to: the volume it attaches.
#[derive(Clone, Debug, Default)]
pub struct ResolvedMount {
    pub volume_id: Option<String>,
}

fn volume_failure(e: VolumeError) -> DomainError {
    if e.disk_full {
        return DomainError::insufficient_storage(format!(
            "{e}: the agent's disk is full; free space in the data dir's filesystem and retry"
        ));
    }
    tracing::error!(error = %e, "volume operation failed");
    DomainError::internal(e.to_string())
}

fn volume_not_found(app: &str, id: &str) -> DomainError {
    DomainError::not_found(format!("volume {id:?} not found in app {app:?}"))
}

fn to_api(row: &VolumeRow, host: Option<&VolumeHost>) -> Volume {
    let stats = host.and_then(|h| h.stats(&row.id));
    Volume {
        id: row.id.clone(),
        name: row.name.clone(),
        state: row.state.clone(),
        size_gb: row.size_gb,
        region: row.region.clone(),
        zone: ZONE.into(),
        encrypted: row.encrypted,
        attached_machine_id: row.attached_machine_id.clone(),
        attached_alloc_id: None,
        created_at: row.created_at.clone(),
        fstype: wire::FSTYPE_EXT4.into(),
        snapshot_retention: row.snapshot_retention,
        auto_backup_enabled: row.auto_backup_enabled,
        host_status: wire::HOST_STATUS_OK.into(),
        block_size: stats.map(|s| s.block_size),
        blocks: stats.map(|s| s.blocks),
        blocks_free: stats.map(|s| s.blocks_free),
        blocks_avail: stats.map(|s| s.blocks_avail),
    }
}

fn snapshot_to_api(row: &SnapshotRow) -> VolumeSnapshot {
    VolumeSnapshot {
        id: row.id.clone(),
        size: row.size,
        digest: String::new(),
        created_at: row.created_at.clone(),
        status: wire::SNAPSHOT_STATUS_CREATED.into(),
        volume_size: row.volume_size,
        retention_days: None,
    }
}

/// Refuses mounts a machine config cannot have, naming the field.
pub(super) fn check_mounts(config: &MachineConfig, container: bool) -> DomainResult<()> {
    if config.mounts.len() > 1 {
        return Err(DomainError::invalid_config(format!(
            "config.mounts has {} entries; a machine mounts at most one volume",
            config.mounts.len()
        )));
    }
    let Some(m) = config.mounts.first() else {
        return Ok(());
    };
    if !m.path.starts_with('/') || m.path == "/" {
        return Err(DomainError::invalid_config(format!(
            "config.mounts[0].path {:?} must be an absolute path other than /",
            m.path
        )));
    }
    if m.volume.is_empty() && m.name.is_empty() {
        return Err(DomainError::invalid_config(
            "config.mounts[0] names no volume: set volume (a vol_… id) or name (a volume name)",
        ));
    }
    // extend_threshold_percent, add_size_gb, size_gb_limit: see crate::volumes_autoextend.
    if !container {
        return Err(DomainError::invalid_config(format!(
            "config.mounts[0] (volume at {:?}): only machines that run an image (containers) \
             can mount a volume; this one runs as a host process, which shares the host's \
             filesystem. Give the app a Dockerfile (or [build] image), or remove the mount",
            m.path
        )));
    }
    Ok(())
}

impl Controller {
    /// Sets the host's volumes, or why there are none; the first call wins.
    pub fn set_volume_host(&self, host: Result<VolumeHost, String>) {
        let _ = self.volumes.set(host.map(Arc::new));
    }

    fn volume_host(&self) -> DomainResult<Arc<VolumeHost>> {
        match self.volumes.get() {
            Some(Ok(h)) => Ok(h.clone()),
            Some(Err(why)) => Err(DomainError::precondition(format!(
                "volumes are not available on this agent: {why}"
            ))),
            None => Err(DomainError::precondition(
                "volumes are not available on this agent (it was started without a data dir for them)",
            )),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VolumeHost) -> Result<T, VolumeError> + Send + 'static,
    ) -> DomainResult<T> {
        let host = self.volume_host()?;
        match tokio::task::spawn_blocking(move || f(&host)).await {
            Ok(r) => r.map_err(volume_failure),
            Err(e) => Err(DomainError::internal(format!("volume task failed: {e}"))),
        }
    }

    async fn volume_row(&self, app: &str, id: &str) -> DomainResult<VolumeRow> {
        let (a, i) = (app.to_string(), id.to_string());
        let (has_app, row) = self
            .db(move |s| s.read(|tx| Ok((tx.app(&a)?.is_some(), tx.volume(&a, &i)?))))
            .await?;
        if !has_app {
            return Err(DomainError::app_not_found(app));
        }
        row.filter(|r| r.state != wire::STATE_DESTROYED)
            .ok_or_else(|| volume_not_found(app, id))
    }

    fn api(&self, row: &VolumeRow) -> Volume {
        let host = self.volumes.get().and_then(|h| h.as_ref().ok());
        to_api(row, host.map(|h| h.as_ref()))
    }

    /// The app's volumes that are not destroyed, oldest first.
    pub async fn list_volumes(&self, app: &str) -> DomainResult<Vec<Volume>> {
        let a = app.to_string();
        let rows = self
            .db(move |s| {
                s.read(|tx| match tx.app(&a)? {
                    None => Ok(None),
                    Some(_) => tx.volumes(Some(&a)).map(Some),
                })
            })
            .await?
            .ok_or_else(|| DomainError::app_not_found(app))?;
        Ok(rows.iter().map(|r| self.api(r)).collect())
    }

    pub async fn get_volume(&self, app: &str, id: &str) -> DomainResult<Volume> {
        Ok(self.api(&self.volume_row(app, id).await?))
    }

    /// A new volume: empty, a copy of a snapshot (`snapshot_id`) or of a volume
    /// (`source_volume_id`, a fork: name, region and size default to the source's).
    pub async fn create_volume(&self, app: &str, req: CreateVolumeRequest) -> DomainResult<Volume> {
        self.get_app(app).await?;
        if let Some(f) = req.fstype.as_deref().filter(|f| *f != wire::FSTYPE_EXT4) {
            return Err(DomainError::invalid_request(format!(
                "fstype {f:?}: this agent makes ext4 volumes only"
            )));
        }
        if req.snapshot_id.is_some() && req.source_volume_id.is_some() {
            return Err(DomainError::invalid_request(
                "snapshot_id and source_volume_id are exclusive: restore a snapshot or fork a volume",
            ));
        }
        let (source, from_size, from_name, from_region) = match (
            &req.snapshot_id,
            &req.source_volume_id,
        ) {
            (Some(s), _) => {
                let (a, sid) = (app.to_string(), s.clone());
                let snap = self
                        .db(move |st| st.read(|tx| tx.snapshot(&a, &sid)))
                        .await?
                        .ok_or_else(|| {
                            DomainError::not_found(format!(
                                "snapshot {s:?} not found in app {app:?} (aloft volumes snapshots list VOLUME)"
                            ))
                        })?;
                (Source::Snapshot(s.clone()), snap.volume_size, None, None)
            }
            (None, Some(v)) => {
                let src = self.volume_row(app, v).await?;
                (
                    Source::Volume(v.clone()),
                    src.size_gb,
                    Some(src.name),
                    Some(src.region),
                )
            }
            (None, None) => (Source::Empty, 0, None, None),
        };
        let name = match (req.name.is_empty(), from_name) {
            (true, Some(n)) => n,
            _ => req.name.clone(),
        };
        wire::check_name(&name).map_err(DomainError::invalid_request)?;
        let region = match (req.region.trim().is_empty(), from_region) {
            (true, Some(r)) => r,
            (true, None) => self.regions.default_for(None),
            (false, _) => req.region.trim().to_ascii_lowercase(),
        };
        if !self.regions.hosts(&region) {
            return Err(DomainError::invalid_request(self.regions.refusal(&region)));
        }
        let size_gb = req.size_gb.unwrap_or(if from_size > 0 {
            from_size
        } else {
            wire::DEFAULT_SIZE_GB
        });
        wire::check_size_gb(size_gb).map_err(DomainError::invalid_request)?;
        if size_gb < from_size {
            return Err(DomainError::invalid_request(format!(
                "size_gb {size_gb} is smaller than the {from_size} GB of the data it copies; \
                 a copy is at least as large as its source"
            )));
        }
        let snapshot_retention = req
            .snapshot_retention
            .unwrap_or(wire::DEFAULT_SNAPSHOT_RETENTION);
        wire::check_snapshot_retention(snapshot_retention).map_err(DomainError::invalid_request)?;
        let row = VolumeRow {
            id: ids::volume_id(),
            app: app.to_string(),
            name,
            region,
            size_gb,
            state: wire::STATE_CREATED.into(),
            attached_machine_id: None,
            encrypted: req.encrypted.unwrap_or(true),
            snapshot_retention,
            auto_backup_enabled: req.auto_backup_enabled.unwrap_or(true),
            created_at: now_rfc3339(),
        };
        let id = row.id.clone();
        let _guard = match &req.source_volume_id {
            Some(v) => Some(self.lock(v).await),
            None => None,
        };
        self.blocking(move |h| h.create(&id, size_gb, &source))
            .await?;
        let r = row.clone();
        let written = self
            .db(move |s| {
                s.write(|tx| {
                    if tx.app(&r.app)?.is_none() {
                        return Ok(false);
                    }
                    tx.put_volume(&r).map(|()| true)
                })
            })
            .await;
        if !matches!(written, Ok(true)) {
            let id = row.id.clone();
            let _ = self.blocking(move |h| h.destroy(&id)).await;
            written?;
            return Err(DomainError::app_not_found(app));
        }
        Ok(self.api(&row))
    }

    pub async fn update_volume(
        &self,
        app: &str,
        id: &str,
        req: UpdateVolumeRequest,
    ) -> DomainResult<Volume> {
        let _guard = self.lock(id).await;
        let mut row = self.volume_row(app, id).await?;
        if let Some(days) = req.snapshot_retention {
            wire::check_snapshot_retention(days).map_err(DomainError::invalid_request)?;
            row.snapshot_retention = days;
        }
        if let Some(b) = req.auto_backup_enabled {
            row.auto_backup_enabled = b;
        }
        let r = row.clone();
        self.db(move |s| s.write(|tx| tx.put_volume(&r))).await?;
        Ok(self.api(&row))
    }

    /// Grows a volume: online while its machine runs (`needs_restart` false), or, where the
    /// host refuses online resizing, at the machine's next start (`needs_restart` true).
    pub async fn extend_volume(
        &self,
        app: &str,
        id: &str,
        size_gb: u32,
    ) -> DomainResult<ExtendVolumeResponse> {
        let _guard = self.lock(id).await;
        let mut row = self.volume_row(app, id).await?;
        wire::check_size_gb(size_gb).map_err(DomainError::invalid_request)?;
        if size_gb <= row.size_gb {
            return Err(DomainError::invalid_request(format!(
                "volume {id} is {} GB; extend only grows it (give a size_gb above {})",
                row.size_gb, row.size_gb
            )));
        }
        let vid = id.to_string();
        let grown = self.blocking(move |h| h.extend(&vid, size_gb)).await?;
        row.size_gb = size_gb;
        let r = row.clone();
        self.db(move |s| s.write(|tx| tx.put_volume(&r))).await?;
        // Not mounted: it grows when a machine next starts with it, nothing to restart then.
        let needs_restart = grown == Grown::AtNextMount && row.attached_machine_id.is_some();
        Ok(ExtendVolumeResponse {
            needs_restart,
            volume: self.api(&row),
        })
    }

    /// Destroys an unattached volume and its data (its snapshots are kept).
    pub async fn destroy_volume(&self, app: &str, id: &str) -> DomainResult<Volume> {
        let _guard = self.lock(id).await;
        let mut row = self.volume_row(app, id).await?;
        if let Some(m) = &row.attached_machine_id {
            return Err(DomainError::precondition(format!(
                "volume {id} is attached to machine {m}; destroy the machine first \
                 (aloft machine destroy {m}), then the volume"
            )));
        }
        row.state = wire::STATE_DESTROYING.into();
        let r = row.clone();
        // Refused (attached meanwhile) in the same transaction that marks it.
        let marked = self
            .db(move |s| {
                s.write(|tx| match tx.volume(&r.app, &r.id)? {
                    Some(v) if v.attached_machine_id.is_none() => tx.put_volume(&r).map(|()| true),
                    _ => Ok(false),
                })
            })
            .await?;
        if !marked {
            return Err(DomainError::precondition(format!(
                "volume {id} was attached to a machine meanwhile; destroy the machine first"
            )));
        }
        let vid = id.to_string();
        self.blocking(move |h| h.destroy(&vid)).await?;
        row.state = wire::STATE_DESTROYED.into();
        let r = row.clone();
        self.db(move |s| s.write(|tx| tx.put_volume(&r))).await?;
        Ok(self.api(&row))
    }

    pub async fn list_volume_snapshots(
        &self,
        app: &str,
        id: &str,
    ) -> DomainResult<Vec<VolumeSnapshot>> {
        self.volume_row(app, id).await?;
        let (a, i) = (app.to_string(), id.to_string());
        let rows = self.db(move |s| s.read(|tx| tx.snapshots(&a, &i))).await?;
        Ok(rows.iter().map(snapshot_to_api).collect())
    }

    /// Takes a snapshot now (the volume's filesystem is frozen during the copy if mounted).
    pub async fn create_volume_snapshot(
        &self,
        app: &str,
        id: &str,
    ) -> DomainResult<VolumeSnapshot> {
        let _guard = self.lock(id).await;
        let row = self.volume_row(app, id).await?;
        let snapshot_id = ids::snapshot_id();
        let (vid, sid) = (id.to_string(), snapshot_id.clone());
        let info = self.blocking(move |h| h.snapshot(&vid, &sid)).await?;
        let snap = SnapshotRow {
            id: snapshot_id,
            volume_id: id.to_string(),
            app: app.to_string(),
            size: info.size,
            volume_size: row.size_gb,
            created_at: now_rfc3339(),
        };
        let s2 = snap.clone();
        self.db(move |s| s.write(|tx| tx.put_snapshot(&s2))).await?;
        Ok(snapshot_to_api(&snap))
    }

    /// Deletes snapshot `snapshot_id` of `app`: its row, then its copy (a copy left by a crash
    /// in between is only disk space; no snapshot lists it).
    pub async fn delete_volume_snapshot(&self, app: &str, snapshot_id: &str) -> DomainResult<()> {
        let (a, i) = (app.to_string(), snapshot_id.to_string());
        self.db(move |s| s.write(|tx| tx.delete_snapshot(&a, &i)))
            .await?;
        let id = snapshot_id.to_string();
        self.blocking(move |h| h.remove_snapshot(&id)).await
    }

    /// Fills in `config.mounts[0].volume` of a new machine in `region` from its `name` when
    /// only that is given (an unattached volume of that name in the region), and checks the
    /// volume: the app's, in the region, not destroyed. The attachment itself is written with
    /// the machine (`Tx::attach_volume`), which refuses a volume taken meanwhile.
    pub(crate) async fn resolve_mounts(
        &self,
        app: &str,
        region: &str,
        config: &mut MachineConfig,
    ) -> DomainResult<ResolvedMount> {
        let Some(m) = config.mounts.first_mut() else {
            return Ok(ResolvedMount::default());
        };
        let a = app.to_string();
        let volumes = self.db(move |s| s.read(|tx| tx.volumes(Some(&a)))).await?;
        let volume = if m.volume.is_empty() {
            let free = volumes.iter().find(|v| {
                v.name == m.name && v.region == region && v.attached_machine_id.is_none()
            });
            match free {
                Some(v) => v,
                None => {
                    return Err(DomainError::precondition(format!(
                        "config.mounts[0] asks for a volume named {:?}, and app {app:?} has no \
                         unattached one in region {region}; create one with `aloft volumes \
                         create {} --region {region}`",
                        m.name, m.name
                    )))
                }
            }
        } else {
            let v = volumes.iter().find(|v| v.id == m.volume).ok_or_else(|| {
                DomainError::not_found(format!(
                    "config.mounts[0].volume {:?} is not a volume of app {app:?}",
                    m.volume
                ))
            })?;
            if v.region != region {
                return Err(DomainError::invalid_config(format!(
                    "volume {} is in region {}, and the machine would be in {region}; create the \
                     machine in {} or use a volume of {region}",
                    v.id, v.region, v.region
                )));
            }
            if let Some(holder) = &v.attached_machine_id {
                return Err(in_use(&v.id, holder));
            }
            v
        };
        m.volume = volume.id.clone();
        if m.name.is_empty() {
            m.name = volume.name.clone();
        }
        Ok(ResolvedMount {
            volume_id: Some(volume.id.clone()),
        })
    }

    /// An update keeps the machine's volume: the mount's path may change, nothing else.
    pub(crate) fn check_mount_update(
        rec: &MachineRecord,
        config: &mut MachineConfig,
    ) -> DomainResult<()> {
        let old = rec.config.mounts.first();
        let new = config.mounts.first_mut();
        match (old, new) {
            (None, None) => Ok(()),
            (Some(o), Some(n)) => {
                if n.volume.is_empty() && (n.name.is_empty() || n.name == o.name) {
                    n.volume = o.volume.clone();
                }
                if n.name.is_empty() {
                    n.name = o.name.clone();
                }
                if n.volume != o.volume {
                    return Err(DomainError::invalid_config(format!(
                        "the volume of machine {} cannot be swapped by an update ({} → {}); \
                         create a new machine with the new volume",
                        rec.id, o.volume, n.volume
                    )));
                }
                Ok(())
            }
            (Some(o), None) => Err(DomainError::invalid_config(format!(
                "machine {} has volume {} mounted at {:?}; an update cannot remove it: destroy \
                 the machine (the volume is kept) and create a new one without the mount",
                rec.id, o.volume, o.path
            ))),
            (None, Some(_)) => Err(DomainError::invalid_config(format!(
                "machine {} has no volume, and an update cannot add one: create a new machine \
                 with the mount",
                rec.id
            ))),
        }
    }

    /// Mounts the volume of `rec` on the host (idempotent) and answers where the machine gets it.
    pub(crate) async fn volume_binds(&self, rec: &MachineRecord) -> DomainResult<Vec<VolumeBind>> {
        let Some(m) = rec.config.mounts.first() else {
            return Ok(Vec::new());
        };
        let _guard = self.lock(&m.volume).await;
        let id = m.volume.clone();
        let source = self.blocking(move |h| h.mount(&id)).await?;
        Ok(vec![VolumeBind {
            source,
            destination: m.path.clone(),
        }])
    }

    /// Unmounts the volume a destroyed machine had, unless another machine took it meanwhile
    /// (best effort: it stays attachable either way).
    pub(crate) async fn release_volume(&self, app: &str, config: &MachineConfig) {
        let Some(id) = config.mounts.first().map(|m| m.volume.clone()) else {
            return;
        };
        let _guard = self.lock(&id).await;
        let (a, i) = (app.to_string(), id.clone());
        match self.db(move |s| s.read(|tx| tx.volume(&a, &i))).await {
            Ok(Some(v)) if v.attached_machine_id.is_none() => {}
            _ => return,
        }
        if let Err(e) = self.blocking(move |h| h.unmount(&id)).await {
            tracing::warn!(error = %e, "cannot unmount the volume of a destroyed machine");
        }
    }

    /// At start-up: finishes destroys a previous agent left half done and frees what belongs
    /// to no volume the store knows.
    pub(crate) async fn reconcile_volumes(&self) -> DomainResult<()> {
        let Ok(host) = self.volume_host() else {
            return Ok(());
        };
        let rows = self.db(|s| s.read(|tx| tx.volumes(None))).await?;
        for row in rows.iter().filter(|r| r.state == wire::STATE_DESTROYING) {
            let mut row = row.clone();
            let (h, id) = (host.clone(), row.id.clone());
            match tokio::task::spawn_blocking(move || h.destroy(&id)).await {
                Ok(Ok(())) => {
                    row.state = wire::STATE_DESTROYED.into();
                    self.db(move |s| s.write(|tx| tx.put_volume(&row))).await?;
                }
                _ => tracing::warn!(volume = %row.id, "cannot finish destroying the volume"),
            }
        }
        let keep: Vec<String> = rows
            .iter()
            .filter(|r| r.state == wire::STATE_CREATED)
            .map(|r| r.id.clone())
            .collect();
        let removed = tokio::task::spawn_blocking(move || host.keep_only(&keep))
            .await
            .unwrap_or_default();
        if !removed.is_empty() {
            tracing::info!(?removed, "removed volumes no record knows");
        }
        Ok(())
    }

    /// Destroys every volume of an app being deleted (their rows go with the app).
    pub(crate) async fn destroy_app_volumes(&self, app: &str) -> DomainResult<()> {
        let a = app.to_string();
        let rows = self.db(move |s| s.read(|tx| tx.volumes(Some(&a)))).await?;
        for row in rows {
            let id = row.id.clone();
            self.blocking(move |h| h.destroy(&id)).await?;
        }
        Ok(())
    }
}

/// The 412 of a volume another machine holds.
pub(crate) fn in_use(volume: &str, holder: &str) -> DomainError {
    if holder.is_empty() {
        return DomainError::precondition(format!("volume {volume} is destroyed"));
    }
    DomainError::precondition(format!(
        "volume {volume} is attached to machine {holder}; a volume is attached to one machine \
         at a time: destroy that machine first, or create another volume"
    ))
}
