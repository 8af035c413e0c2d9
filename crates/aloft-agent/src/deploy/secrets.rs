//! `aloft secrets set|unset|import|deploy` carried out by the agent
//! (`POST /v1/apps/{app}/secrets`, `POST /v1/apps/{app}/secrets/deploy`).
//!
//! The controller checks and seals the change (`controller/secrets.rs`). Staged, it is written
//! alone and machines get it at their next start. Otherwise it is written in one transaction
//! with a release whose `scale.secrets` lists the app's started machines: the engine restarts
//! them one at a time, each waited on until started and healthy, like `scale vm`
//! (events, `follow`, resumed after an agent restart, each machine restarted once). Every start
//! opens the app's newest secrets, so stopped machines need no restart.

use std::sync::Arc;

use aloft_api::secrets::{SecretsUpdated, UpdateSecrets};
use aloft_api::MachineState;
use aloft_deploy::{Release, ScaleWork, SecretsRestart};

use super::{pending_release, Deployer};
use crate::controller::secrets::SecretsChange;
use crate::controller::{DomainError, DomainResult};

impl Deployer {
    /// See the module docs.
    pub async fn update_secrets(
        self: &Arc<Self>,
        app: &str,
        req: UpdateSecrets,
    ) -> DomainResult<SecretsUpdated> {
        self.ctl.get_app(app).await?;
        let _guard = self.create_lock(app).lock_owned().await;
        let stage = req.stage;
        let summary = summary(&req);
        // Bad input is told as such (4xx naming it) before a running release is.
        let change = self.ctl.prepare_secrets(app, req).await?;
        if !stage {
            self.refuse_secrets_while_running(app)?;
        }
        let release = if stage {
            self.ctl.db(move |s| s.write(|tx| change.apply(tx))).await?;
            None
        } else {
            self.roll(app, summary, Some(change)).await?
        };
        Ok(SecretsUpdated {
            secrets: self.ctl.list_secrets(app).await?,
            release,
        })
    }

    /// Deploys the staged secrets: marks them deployed and restarts the started machines.
    pub async fn deploy_secrets(self: &Arc<Self>, app: &str) -> DomainResult<SecretsUpdated> {
        self.ctl.get_app(app).await?;
        let _guard = self.create_lock(app).lock_owned().await;
        self.refuse_secrets_while_running(app)?;
        let release = self.roll(app, "secrets deploy".into(), None).await?;
        Ok(SecretsUpdated {
            secrets: self.ctl.list_secrets(app).await?,
            release,
        })
    }

    fn refuse_secrets_while_running(&self, app: &str) -> DomainResult<()> {
        let running = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .map(|r| r.version);
        match running {
            Some(version) => Err(DomainError::ReleaseRunning(format!(
                "a release of app {app:?} is running ({}); nothing was changed. Wait for it to \
                 finish (aloft releases) and try again, or stage the secrets (--stage)",
                aloft_deploy::spec::version_label(version)
            ))),
            None => Ok(()),
        }
    }

    /// Writes `change` (if any) with every staged secret marked deployed and, when the app has
    /// started machines, the release that restarts them, all in one transaction; starts that
    /// release and returns its version.
    async fn roll(
        self: &Arc<Self>,
        app: &str,
        summary: String,
        change: Option<SecretsChange>,
    ) -> DomainResult<Option<u64>> {
        let restarts: Vec<SecretsRestart> = self
            .machines_now(app)
            .await?
            .iter()
            .filter(|m| m.state == MachineState::Started)
            .map(|m| SecretsRestart {
                id: m.id.clone(),
                group: m.process_group().to_string(),
            })
            .collect();
        let a = app.to_string();
        let write = Arc::new(move |tx: &aloft_store::Tx<'_>| {
            if let Some(change) = &change {
                change.apply(tx)?;
            }
            tx.deploy_secrets(&a).map(drop)
        });
        if restarts.is_empty() {
            let write = write.clone();
            self.ctl.db(move |s| s.write(|tx| write(tx))).await?;
            return Ok(None);
        }
        let base = self.newest_deploy(app).await?;
        let spec = base.as_ref().map(|r| r.spec.clone()).unwrap_or_default();
        let release = Release {
            image_digest: base.and_then(|r| r.image_digest),
            scale: Some(ScaleWork {
                avoid_volumes: Vec::new(),
                summary,
                secrets: restarts,
                ..ScaleWork::default()
            }),
            ..pending_release(app, spec)
        };
        let release = self.insert_release(release, move |tx, _| write(tx)).await?;
        tracing::info!(app, version = release.version, "secrets operation created");
        let version = release.version;
        self.spawn_run(release, false);
        Ok(Some(version))
    }
}

/// `secrets set A B --stage` / `secrets unset C`: names only, never values.
fn summary(req: &UpdateSecrets) -> String {
    let names = |set: bool| {
        req.values
            .iter()
            .filter(|(_, v)| v.is_some() == set)
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
    };
    let mut parts = Vec::new();
    for (verb, list) in [("set", names(true)), ("unset", names(false))] {
        if !list.is_empty() {
            parts.push(format!("secrets {verb} {}", list.join(" ")));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_secrets_never_values() {
        let req = UpdateSecrets {
            values: [
                ("A".to_string(), Some("hunter2".to_string())),
                ("B".to_string(), None),
            ]
            .into_iter()
            .collect(),
            stage: false,
        };
        assert_eq!(summary(&req), "secrets set A; secrets unset B");
    }
}
