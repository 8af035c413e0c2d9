//! `POST /v1/apps/{app}/releases/rollback`: an earlier release's spec (configs of every
//! group), image and per-group counts, deployed as a new release with the same strategy and
//! checks as any deploy. Which release: the one asked for, else the newest complete deploy
//! before the live one (the newest complete deploy).

use std::sync::Arc;

use aloft_deploy::messages::{CreateReleaseRequest, RollbackRequest};
use aloft_deploy::{Release, ReleaseStatus};

use super::{CreateError, Created, Deployer, Origin};
use crate::controller::DomainError;

impl Deployer {
    /// Rolls `app` back (see the module docs); `dry_run` answers the plan.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        req: RollbackRequest,
        dry_run: bool,
        created_by: Option<String>,
    ) -> Result<Created, CreateError> {
        let releases = self.releases(app).await?;
        let keep = self.ctl.limits().keep_releases;
        let target = rollback_target(app, &releases, req.version)?.clone();
        let create = CreateReleaseRequest {
            spec: target.spec.clone(),
            image_digest: target.image_digest.clone(),
            process_groups: None,
            confirmed_destroy: req.confirmed_destroy,
        };
        let origin = Origin {
            restore: (!target.group_counts.is_empty()).then(|| target.group_counts.clone()),
            rollback_of: Some(target.version),
            created_by,
        };
        self.create_release_from(app, create, dry_run, origin)
            .await
            .map_err(|e| match e {
                CreateError::Refused(e @ DomainError::NotFound(_)) => {
                    CreateError::Refused(DomainError::invalid_request(format!(
                        "cannot roll back to {}: its image is no longer kept ({e}); the agent \
                         keeps the images of each app's last {keep} deploys (`aloft agent \
                         --keep-releases`)",
                        target.label()
                    )))
                }
                other => other,
            })
    }
}

/// The release to roll back to among `releases` (newest first): `version`, else the newest
/// complete deploy older than the live one. Errors say why none fits and what to do.
pub fn rollback_target<'r>(
    app: &str,
    releases: &'r [Release],
    version: Option<u64>,
) -> Result<&'r Release, DomainError> {
    let deploys: Vec<&Release> = releases.iter().filter(|r| r.is_deploy()).collect();
    let live = deploys
        .iter()
        .copied()
        .find(|r| r.status == ReleaseStatus::Complete);
    let target = match version {
        Some(v) => deploys
            .iter()
            .copied()
            .find(|r| r.version == v)
            .ok_or_else(|| {
                DomainError::not_found(format!(
                    "app {app} has no release v{v}; `aloft releases -a {app}` lists them"
                ))
            })?,
        None => {
            let live = live.ok_or_else(|| {
                DomainError::invalid_request(format!(
                    "app {app} has no complete release yet: there is nothing to roll back from"
                ))
            })?;
            deploys
                .iter()
                .copied()
                .find(|r| r.version < live.version && r.status == ReleaseStatus::Complete)
                .ok_or_else(|| {
                    DomainError::invalid_request(format!(
                        "app {app} has no complete release before the live {}; name one with \
                         `aloft releases rollback VERSION`",
                        live.label()
                    ))
                })?
        }
    };
    if target.status != ReleaseStatus::Complete {
        return Err(DomainError::invalid_request(format!(
            "{} of app {app} is {}: roll back to a release that completed",
            target.label(),
            target.status.as_str()
        )));
    }
    if live.is_some_and(|l| l.version == target.version) {
        return Err(DomainError::invalid_request(format!(
            "{} is the live release of app {app} already",
            target.label()
        )));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(statuses: &[(u64, ReleaseStatus)]) -> Vec<Release> {
        let mut out: Vec<Release> = statuses
            .iter()
            .map(|(v, s)| Release {
                status: *s,
                version: *v,
                ..super::super::pending_release("a", Default::default())
            })
            .collect();
        out.sort_by_key(|r| std::cmp::Reverse(r.version));
        out
    }

    #[test]
    fn the_default_is_the_newest_complete_deploy_before_the_live_one() {
        use ReleaseStatus::*;
        let h = history(&[
            (1, Complete),
            (2, Complete),
            (3, Failed),
            (4, Complete),
            (5, Failed),
        ]);
        assert_eq!(rollback_target("a", &h, None).unwrap().version, 2);
        assert_eq!(rollback_target("a", &h, Some(1)).unwrap().version, 1);
    }

    #[test]
    fn unusable_targets_are_refused_with_the_reason() {
        use ReleaseStatus::*;
        let h = history(&[(1, Complete), (2, Failed), (3, Complete)]);
        let err = |v| rollback_target("a", &h, v).unwrap_err().to_string();
        assert!(
            err(Some(9)).contains("has no release v9"),
            "{}",
            err(Some(9))
        );
        assert!(
            err(Some(2)).contains("v2 of app a is failed"),
            "{}",
            err(Some(2))
        );
        assert!(err(Some(3)).contains("live release"), "{}", err(Some(3)));
        let first = history(&[(1, Complete)]);
        let e = rollback_target("a", &first, None).unwrap_err().to_string();
        assert!(e.contains("no complete release before the live v1"), "{e}");
        let e = rollback_target("a", &[], None).unwrap_err().to_string();
        assert!(e.contains("nothing to roll back from"), "{e}");
    }
}
