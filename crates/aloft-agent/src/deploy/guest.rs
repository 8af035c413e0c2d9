//! `scale vm|memory` carried out by the agent (`POST /v1/apps/{app}/scale/guest`).
//!
//! The agent plans the change against the app's machines now
//! ([`aloft_deploy::scale::plan_guest_work`]: the group's machines and each one's new guest,
//! validated before anything changes), checks that every new guest fits this host's memory, then
//! records a release whose `scale.guest` holds that frozen list, in one transaction. The release
//! runs like a deploy (events, `follow`, resumed after an agent restart): one machine at a time,
//! each started one waited on until healthy. A machine that has its new guest already is never
//! updated again, so a client or agent killed midway leaves an operation that finishes with every
//! machine of the group updated exactly once.
//!
//! The new guest is kept by the machines' configs, as on Fly: a later deploy replaces a guest
//! only when fly.toml has a `[[vm]]` for the group, and `scale count` copies it to new machines.

use std::sync::Arc;

use aloft_api::groups::ScaleGuestRequest;
use aloft_api::Machine;
use aloft_deploy::scale::{group_for_guest_change, machine_groups, plan_guest_work, GuestPlan};
use aloft_deploy::{Release, ReleaseSpec, ScaleWork};

use super::{pending_release, Deployer};
use crate::controller::{DomainError, DomainResult, Reserve};

/// What a `scale vm|memory` request gave.
pub enum GuestScaled {
    /// Recorded and running.
    Release(Box<Release>),
    /// `dry_run`, or no machine to change.
    Plan(Box<GuestPlan>),
}

impl Deployer {
    /// See the module docs.
    pub async fn scale_guest(
        self: &Arc<Self>,
        app: &str,
        req: ScaleGuestRequest,
    ) -> DomainResult<GuestScaled> {
        self.ctl.get_app(app).await?;
        if req.size.is_none() && req.memory_mb.is_none() {
            return Err(DomainError::invalid_config(
                "give a size, memory_mb or both: e.g. {\"size\": \"performance-2x\"}",
            ));
        }
        let _guard = self.create_lock(app).lock_owned().await;
        self.refuse_while_running(app)?;
        let base = self.newest_deploy(app).await?;
        let machines = self.machines_now(app).await?;
        let (known, default_group) = match &base {
            Some(r) => (r.spec.group_names(), r.spec.default_group.clone()),
            None => machine_groups(&machines),
        };
        let unprocessable =
            |e: aloft_deploy::scale::ScaleError| DomainError::invalid_config(e.to_string());
        let group = group_for_guest_change(req.group.as_deref(), &known).map_err(unprocessable)?;
        let plan = plan_guest_work(
            &machines,
            &default_group,
            &group,
            req.size.as_deref(),
            req.memory_mb,
        )
        .map_err(unprocessable)?;
        self.check_guest_memory(&machines, &plan)?;
        if req.dry_run || plan.is_noop() {
            return Ok(GuestScaled::Plan(Box::new(plan)));
        }
        let spec = base
            .as_ref()
            .map(|r| r.spec.clone())
            .unwrap_or(ReleaseSpec {
                default_group,
                ..ReleaseSpec::default()
            });
        let release = self
            .record_guest(app, spec, base.and_then(|r| r.image_digest), &req, plan)
            .await?;
        tracing::info!(app, version = release.version, "scale vm operation created");
        self.spawn_run(release.clone(), false);
        Ok(GuestScaled::Release(Box::new(release)))
    }

    /// Each machine's new guest must fit this host (the check its update makes), so the
    /// operation is refused (422) before it starts rather than failing half-way.
    fn check_guest_memory(&self, machines: &[Machine], plan: &GuestPlan) -> DomainResult<()> {
        for set in &plan.updates {
            let Some(m) = machines.iter().find(|m| m.id == set.id) else {
                continue;
            };
            let mut config = m.config.clone();
            config.guest = Some(set.guest.clone());
            config.size = None;
            self.ctl
                .check_memory(&config, Reserve::Existing(&m.id))
                .map_err(|e| {
                    DomainError::invalid_config(format!(
                        "machine {} ({}): {}",
                        m.id,
                        set.group,
                        e.message()
                    ))
                })?;
        }
        Ok(())
    }

    /// Records the operation (its frozen list of machines and new guests) in one transaction.
    async fn record_guest(
        &self,
        app: &str,
        spec: ReleaseSpec,
        image_digest: Option<String>,
        req: &ScaleGuestRequest,
        plan: GuestPlan,
    ) -> DomainResult<Release> {
        let release = Release {
            image_digest,
            scale: Some(ScaleWork {
                avoid_volumes: Vec::new(),
                summary: summary(req, &plan.group),
                guest: plan.updates,
                ..ScaleWork::default()
            }),
            ..pending_release(app, spec)
        };
        self.insert_release(release, |_, _| Ok(())).await
    }
}

/// `vm performance-2x --vm-memory 8192 -g web` / `memory 1024 -g web`.
fn summary(req: &ScaleGuestRequest, group: &str) -> String {
    let mut out = match &req.size {
        Some(size) => format!("vm {size}"),
        None => "memory".to_string(),
    };
    match (&req.size, req.memory_mb) {
        (Some(_), Some(mb)) => out.push_str(&format!(" --vm-memory {mb}")),
        (None, Some(mb)) => out.push_str(&format!(" {mb}")),
        _ => {}
    }
    out.push_str(&format!(" -g {group}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_like_the_command() {
        let req = |size: Option<&str>, mb| ScaleGuestRequest {
            size: size.map(String::from),
            memory_mb: mb,
            ..ScaleGuestRequest::default()
        };
        assert_eq!(
            summary(&req(Some("performance-2x"), None), "web"),
            "vm performance-2x -g web"
        );
        assert_eq!(
            summary(&req(Some("performance-2x"), Some(8192)), "web"),
            "vm performance-2x --vm-memory 8192 -g web"
        );
        assert_eq!(summary(&req(None, Some(512)), "app"), "memory 512 -g app");
    }
}
