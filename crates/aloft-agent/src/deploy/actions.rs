//! The deploy engine's actions: releases, image uploads (app directories, OCI blobs and
//! manifests, image garbage collection), group counts and `scale count`, `scale vm|memory`,
//! app secrets (set, unset, deploy: `super::secrets`), each a
//! typed [`DeployAction`] that [`Deployer::execute`] carries out, answering a [`DeployOutcome`]
//! or a [`DomainError`](crate::controller::DomainError) that `api/` turns into a status and a body (as for the controller's
//! `Action`s).
//!
//! Reads are queries, plain methods of the [`Deployer`]: `releases`, `release`, `events`, `image`
//! and `group_counts` change nothing and answer what the store holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_api::groups::{ScaleCountRequest, ScaleGuestRequest};
use aloft_api::images::{BlobInfo, ImageGcReport, ImageInfo, OciImageInfo};
use aloft_api::secrets::{SecretsUpdated, UpdateSecrets};
use aloft_deploy::messages::{
    ConfirmationRequired, CreateReleaseRequest, RollbackRequest, ScalePreview,
};
use aloft_deploy::plan::DeployPlan;
use aloft_deploy::scale::GuestPlan;
use aloft_deploy::Release;
use futures_util::stream::BoxStream;

use super::guest::GuestScaled;
use super::scale::Scaled;
use super::{CreateError, Created, Deployer};
use crate::controller::DomainResult;

/// The bytes of an image upload as they arrive; an `Err` (why) means it was cut off.
pub type UploadBody = BoxStream<'static, Result<bytes::Bytes, String>>;

/// Every change a client can ask of the deploy engine.
pub enum DeployAction {
    /// Plan a release against the machines now and, unless `dry_run`, record and run it.
    CreateRelease {
        app: String,
        /// Boxed: a release spec is large, the other actions small.
        request: Box<CreateReleaseRequest>,
        dry_run: bool,
        /// The name of the token that asked.
        by: Option<String>,
    },
    /// Deploy an earlier release's spec, image and counts as a new release (`super::rollback`).
    Rollback {
        app: String,
        request: RollbackRequest,
        dry_run: bool,
        by: Option<String>,
    },
    /// Store an uploaded app directory (a tar whose sha256 is `hex`).
    PutImage {
        app: String,
        hex: String,
        body: UploadBody,
    },
    /// Append bytes to an OCI blob upload at `offset` (`PATCH …/blobs/{digest}`).
    AppendBlob {
        app: String,
        digest: String,
        offset: u64,
        body: UploadBody,
    },
    /// Append the optional last bytes, verify and commit an OCI blob (`PUT …/blobs/{digest}`).
    CommitBlob {
        app: String,
        digest: String,
        size: Option<u64>,
        body: UploadBody,
    },
    /// Store, unpack and record an OCI image manifest for the app.
    PutManifest {
        app: String,
        digest: String,
        body: bytes::Bytes,
    },
    /// Garbage-collect the OCI image store.
    CollectImages,
    /// Remember the desired machine count of a process group.
    SetGroupCount {
        app: String,
        group: String,
        count: u32,
    },
    /// `scale count`, carried out by the agent (`super::scale`).
    ScaleCount {
        app: String,
        request: ScaleCountRequest,
    },
    /// `scale vm|memory`, carried out by the agent (`super::guest`).
    ScaleGuest {
        app: String,
        request: ScaleGuestRequest,
    },
    /// Set and unset app secrets, then (unless staged) restart the started machines
    /// (`super::secrets`). Its `Debug` names the secrets, never their values.
    UpdateSecrets { app: String, request: UpdateSecrets },
    /// Deploy the staged secrets: restart the started machines.
    DeploySecrets { app: String },
}

impl std::fmt::Debug for DeployAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployAction::CreateRelease { app, dry_run, .. } => f
                .debug_struct("CreateRelease")
                .field("app", app)
                .field("dry_run", dry_run)
                .finish_non_exhaustive(),
            DeployAction::Rollback {
                app,
                request,
                dry_run,
                ..
            } => f
                .debug_struct("Rollback")
                .field("app", app)
                .field("request", request)
                .field("dry_run", dry_run)
                .finish(),
            DeployAction::PutImage { app, hex, .. } => f
                .debug_struct("PutImage")
                .field("app", app)
                .field("hex", hex)
                .finish_non_exhaustive(),
            DeployAction::AppendBlob {
                app,
                digest,
                offset,
                ..
            } => f
                .debug_struct("AppendBlob")
                .field("app", app)
                .field("digest", digest)
                .field("offset", offset)
                .finish_non_exhaustive(),
            DeployAction::CommitBlob {
                app, digest, size, ..
            } => f
                .debug_struct("CommitBlob")
                .field("app", app)
                .field("digest", digest)
                .field("size", size)
                .finish_non_exhaustive(),
            DeployAction::PutManifest { app, digest, .. } => f
                .debug_struct("PutManifest")
                .field("app", app)
                .field("digest", digest)
                .finish_non_exhaustive(),
            DeployAction::CollectImages => f.write_str("CollectImages"),
            DeployAction::SetGroupCount { app, group, count } => f
                .debug_struct("SetGroupCount")
                .field("app", app)
                .field("group", group)
                .field("count", count)
                .finish(),
            DeployAction::ScaleCount { app, request } => f
                .debug_struct("ScaleCount")
                .field("app", app)
                .field("request", request)
                .finish(),
            DeployAction::ScaleGuest { app, request } => f
                .debug_struct("ScaleGuest")
                .field("app", app)
                .field("request", request)
                .finish(),
            DeployAction::UpdateSecrets { app, request } => f
                .debug_struct("UpdateSecrets")
                .field("app", app)
                .field("request", request)
                .finish(),
            DeployAction::DeploySecrets { app } => {
                f.debug_struct("DeploySecrets").field("app", app).finish()
            }
        }
    }
}

/// What a [`DeployAction`] gave.
#[derive(Debug)]
pub enum DeployOutcome {
    /// A release (deploy or scale operation) is recorded and running.
    Release(Box<Release>),
    /// A dry run's plan, as it would be frozen.
    Plan(DeployPlan),
    /// Nothing was created: the release would destroy machines the client did not confirm.
    ConfirmationRequired(ConfirmationRequired),
    /// The image is stored; `created` is false when it already was.
    Image { created: bool, info: ImageInfo },
    /// Where an OCI blob upload now is.
    UploadOffset(u64),
    /// An OCI blob is committed; `created` is false when it already was there.
    Blob { created: bool, info: BlobInfo },
    /// An OCI image is stored and unpacked.
    OciImage(Box<OciImageInfo>),
    /// What garbage collection removed.
    ImageGc(ImageGcReport),
    /// The app's remembered counts after the change.
    GroupCounts(BTreeMap<String, u32>),
    /// A scale dry run, or a scale with nothing to change (its counts are recorded).
    ScalePreview(ScalePreview),
    /// A `scale vm|memory` dry run, or one with no machine to change.
    GuestPlan(Box<GuestPlan>),
    /// The app's secrets after a change, and the operation restarting its machines.
    Secrets(SecretsUpdated),
}

impl Deployer {
    /// Carries out `action`.
    pub async fn execute(self: &Arc<Self>, action: DeployAction) -> DomainResult<DeployOutcome> {
        Ok(match action {
            DeployAction::CreateRelease {
                app,
                request,
                dry_run,
                by,
            } => match self.create_release(&app, *request, dry_run, by).await {
                Ok(Created::Release(r)) => DeployOutcome::Release(r),
                Ok(Created::Plan(p)) => DeployOutcome::Plan(p),
                Err(CreateError::Confirm(c)) => DeployOutcome::ConfirmationRequired(c),
                Err(CreateError::Refused(e)) => return Err(e),
            },
            DeployAction::Rollback {
                app,
                request,
                dry_run,
                by,
            } => match self.rollback(&app, request, dry_run, by).await {
                Ok(Created::Release(r)) => DeployOutcome::Release(r),
                Ok(Created::Plan(p)) => DeployOutcome::Plan(p),
                Err(CreateError::Confirm(c)) => DeployOutcome::ConfirmationRequired(c),
                Err(CreateError::Refused(e)) => return Err(e),
            },
            DeployAction::PutImage { app, hex, body } => {
                let (created, info) = self.put_image(&app, &hex, body).await?;
                DeployOutcome::Image { created, info }
            }
            DeployAction::AppendBlob {
                app,
                digest,
                offset,
                body,
            } => DeployOutcome::UploadOffset(
                self.append_blob(&app, &digest, Some(offset), body).await?,
            ),
            DeployAction::CommitBlob {
                app,
                digest,
                size,
                body,
            } => {
                let (created, info) = self.commit_blob(&app, &digest, size, body).await?;
                DeployOutcome::Blob { created, info }
            }
            DeployAction::PutManifest { app, digest, body } => {
                DeployOutcome::OciImage(Box::new(self.put_manifest(&app, &digest, body).await?))
            }
            DeployAction::CollectImages => DeployOutcome::ImageGc(self.collect_images().await?),
            DeployAction::SetGroupCount { app, group, count } => {
                DeployOutcome::GroupCounts(self.set_group_count(&app, &group, count).await?)
            }
            DeployAction::ScaleCount { app, request } => {
                match self.scale_count(&app, request).await? {
                    Scaled::Release(r) => DeployOutcome::Release(r),
                    Scaled::Preview(p) => DeployOutcome::ScalePreview(p),
                }
            }
            DeployAction::ScaleGuest { app, request } => {
                match self.scale_guest(&app, request).await? {
                    GuestScaled::Release(r) => DeployOutcome::Release(r),
                    GuestScaled::Plan(p) => DeployOutcome::GuestPlan(p),
                }
            }
            DeployAction::UpdateSecrets { app, request } => {
                DeployOutcome::Secrets(self.update_secrets(&app, request).await?)
            }
            DeployAction::DeploySecrets { app } => {
                DeployOutcome::Secrets(self.deploy_secrets(&app).await?)
            }
        })
    }
}
