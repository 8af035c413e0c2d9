//! `scale count` carried out by the agent (`POST /v1/apps/{app}/scale`).
//!
//! The agent plans the change against the app's current deploy release and its machines now
//! ([`aloft_deploy::scale::plan_count`]), then records, in one transaction, the new desired
//! counts and a release whose `scale` holds the frozen work: the machines to destroy, and the
//! machines to create, each under a slot key. The release runs like a deploy (events, `follow`,
//! resumed after an agent restart), and the engine creates a slot only when no machine carries
//! its key yet: a client or agent killed midway leaves an operation that finishes with exactly
//! the planned count, and counts that already say so.

use std::collections::BTreeMap;
use std::sync::Arc;

use aloft_api::groups::ScaleCountRequest;
use aloft_deploy::messages::ScalePreview;
use aloft_deploy::scale::{plan_count, CountRequest, CountSpec, ScalePlan};
use aloft_deploy::spec::PlannedDestroy;
use aloft_deploy::{Release, ReleaseStatus, ScaleWork, SlotCreate};

use super::{pending_release, Deployer};
use crate::controller::{DomainError, DomainResult};

/// What a scale request gave.
pub enum Scaled {
    /// Recorded and running.
    Release(Box<Release>),
    /// `dry_run`, or nothing to change (the counts are recorded then).
    Preview(ScalePreview),
}

impl Deployer {
    /// See the module docs.
    pub async fn scale_count(
        self: &Arc<Self>,
        app: &str,
        req: ScaleCountRequest,
    ) -> DomainResult<Scaled> {
        self.ctl.get_app(app).await?;
        let _guard = self.create_lock(app).lock_owned().await;
        self.refuse_while_running(app)?;
        let base = self.current_deploy(app).await?;
        let counts = parse_counts(&req, &base)?;
        let machines = self.machines_now(app).await?;
        let plan = plan_count(
            &CountRequest {
                counts: counts.clone(),
                regions: req.regions.clone(),
                max_per_region: req.max_per_region,
            },
            &base.spec,
            &base.meta(),
            &machines,
        )
        .map_err(|e| DomainError::invalid_config(e.to_string()))?;
        self.check_limit(&plan)?;
        let preview = preview(&plan);
        if req.dry_run {
            return Ok(Scaled::Preview(preview));
        }
        if plan.is_noop() {
            self.record_counts(app, plan.desired.clone()).await?;
            return Ok(Scaled::Preview(preview));
        }
        let release = self.record_scale(app, &base, &req, &counts, plan).await?;
        tracing::info!(app, version = release.version, "scale operation created");
        self.spawn_run(release.clone(), false);
        Ok(Scaled::Release(Box::new(release)))
    }

    /// A scale operation waits for no release: 409 while one of the app runs.
    pub(super) fn refuse_while_running(&self, app: &str) -> DomainResult<()> {
        let running = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .map(|r| r.version);
        match running {
            Some(version) => Err(DomainError::ReleaseRunning(format!(
                "a release of app {app:?} is running ({}); wait for it to finish (aloft \
                 releases) and scale again",
                aloft_deploy::spec::version_label(version)
            ))),
            None => Ok(()),
        }
    }

    /// The newest complete deploy, if any.
    pub(super) async fn newest_deploy(&self, app: &str) -> DomainResult<Option<Release>> {
        Ok(self
            .releases(app)
            .await?
            .into_iter()
            .filter(|r| r.status == ReleaseStatus::Complete && r.is_deploy())
            .max_by_key(|r| r.version))
    }

    /// The newest complete deploy: what `scale count` scales.
    async fn current_deploy(&self, app: &str) -> DomainResult<Release> {
        self.newest_deploy(app).await?.ok_or_else(|| {
            DomainError::invalid_config(format!(
                "app {app:?} has no complete release yet: run `aloft deploy` first"
            ))
        })
    }

    fn check_limit(&self, plan: &ScalePlan) -> DomainResult<()> {
        let max = self.ctl.limits().max_group_count;
        match plan.desired.iter().find(|(_, n)| **n > max) {
            Some((group, n)) => Err(DomainError::invalid_config(format!(
                "count {n} for process group {group:?} is more than this agent allows ({max} \
                 machines per group); scale to {max} or fewer, or raise aloft agent --max-group-count"
            ))),
            None => Ok(()),
        }
    }

    async fn record_counts(&self, app: &str, desired: BTreeMap<String, u32>) -> DomainResult<()> {
        let a = app.to_string();
        self.ctl
            .db(move |s| {
                s.write(|tx| {
                    for (group, n) in &desired {
                        tx.set_group_count(&a, group, *n)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Records the operation and the new counts in one transaction.
    async fn record_scale(
        &self,
        app: &str,
        base: &Release,
        req: &ScaleCountRequest,
        counts: &BTreeMap<String, CountSpec>,
        plan: ScalePlan,
    ) -> DomainResult<Release> {
        let id = ulid::Ulid::new().to_string();
        let avoid_volumes = if req.with_new_volumes {
            self.ctl
                .list_volumes(app)
                .await?
                .into_iter()
                .filter(|v| v.attached_machine_id.is_none())
                .map(|v| v.id)
                .collect()
        } else {
            Vec::new()
        };
        let work = ScaleWork {
            avoid_volumes,
            summary: summary(req, counts),
            guest: Vec::new(),
            secrets: Vec::new(),
            create: plan
                .create
                .into_iter()
                .enumerate()
                .map(|(n, c)| SlotCreate {
                    slot: format!("{id}:{n}"),
                    group: c.group,
                    region: c.region,
                    config: c.config,
                })
                .collect(),
            destroy: plan
                .destroy
                .into_iter()
                .map(|d| PlannedDestroy {
                    id: d.id,
                    group: d.group,
                    region: d.region,
                })
                .collect(),
        };
        let mut desired_counts = base.desired_counts.clone();
        desired_counts.extend(plan.desired.clone());
        let release = Release {
            id,
            desired_counts,
            image_digest: base.image_digest.clone(),
            scale: Some(work),
            ..pending_release(app, base.spec.clone())
        };
        let desired = plan.desired;
        self.insert_release(release, move |tx, r| {
            for (group, n) in &desired {
                tx.set_group_count(&r.app, group, *n)?;
            }
            Ok(())
        })
        .await
    }
}

/// The request's counts, checked against the groups of the release being scaled.
fn parse_counts(
    req: &ScaleCountRequest,
    base: &Release,
) -> DomainResult<BTreeMap<String, CountSpec>> {
    if req.counts.is_empty() {
        return Err(DomainError::invalid_config(
            "counts is empty: give at least one group and its count",
        ));
    }
    let known = base.spec.group_names();
    let mut out = BTreeMap::new();
    for (group, raw) in &req.counts {
        if !known.contains(group) {
            return Err(DomainError::invalid_config(format!(
                "process group {group:?} is not in the app's current release (v{}); known groups: {}",
                base.version,
                known.join(", ")
            )));
        }
        let arg = format!("{group}={raw}");
        let count = CountSpec::parse(&arg, raw.trim())
            .map_err(|e| DomainError::invalid_config(e.to_string()))?;
        out.insert(group.clone(), count);
    }
    Ok(out)
}

/// `web=8 worker=+1 --region gru,bog`.
fn summary(req: &ScaleCountRequest, counts: &BTreeMap<String, CountSpec>) -> String {
    let mut parts: Vec<String> = counts
        .iter()
        .map(|(g, c)| format!("{g}={}", c.to_arg()))
        .collect();
    if !req.regions.is_empty() {
        parts.push(format!("--region {}", req.regions.join(",")));
    }
    if let Some(n) = req.max_per_region {
        parts.push(format!("--max-per-region {n}"));
    }
    if req.with_new_volumes {
        parts.push("--with-new-volumes".into());
    }
    parts.join(" ")
}

fn preview(plan: &ScalePlan) -> ScalePreview {
    ScalePreview {
        lines: plan.lines.clone(),
        create: plan.create.len(),
        destroy: plan.destroy.clone(),
        desired: plan.desired.clone(),
    }
}
