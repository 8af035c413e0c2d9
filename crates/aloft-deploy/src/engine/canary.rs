//! The `canary` strategy's first step (flyctl-behaviour §3.3 step 4): for every group with
//! machines to update, one temporary machine of the new release (`fly_canary = true`, no
//! traffic), waited on like a new machine (started, smoke check, health checks), then destroyed.
//! Only when every canary was healthy does the group get rolled; a failing canary fails the
//! release before any machine changed.
//!
//! Resumable: a group whose canary was recorded healthy is not tried again; canaries an
//! interrupted or superseded run left are destroyed first.

use std::collections::BTreeSet;

use aloft_api::metadata::CANARY;
use aloft_api::{CreateMachineRequest, Machine};
use futures_util::stream::{self, StreamExt};

use super::{DeployTarget, Engine, EngineError, TargetError, GROUPS_AT_ONCE};
use crate::events::DeployEvent;
use crate::plan::{config_for_new, guest_for_new, UpdateWork};

impl<T: DeployTarget> Engine<'_, T> {
    pub(super) async fn canaries(
        &self,
        update: &[UpdateWork],
        machines: &[Machine],
    ) -> Result<(), EngineError> {
        // Canaries an interrupted (or superseded) release left: none is in use.
        for m in machines
            .iter()
            .filter(|m| m.state.is_active() && m.config.metadata.contains_key(CANARY))
        {
            self.destroy_temporary(&m.id, m.process_group()).await?;
        }
        let recorded = self.target.recorded().await.map_err(EngineError::Record)?;
        let healthy: BTreeSet<&str> = recorded
            .iter()
            .filter_map(|e| match e {
                DeployEvent::CanaryHealthy { group, .. } => Some(group.as_str()),
                _ => None,
            })
            .collect();
        // group → the region of its first machine to update
        let mut groups: Vec<(String, String)> = Vec::new();
        for u in update {
            if !healthy.contains(u.group.as_str()) && !groups.iter().any(|(g, _)| *g == u.group) {
                groups.push((u.group.clone(), u.region.clone()));
            }
        }
        // Every canary runs to its end (none is dropped half-way, which would leave its machine):
        // then the first failure fails the release.
        let results: Vec<Result<(), EngineError>> = stream::iter(groups)
            .map(|(group, region)| async move {
                self.canary(&group, region, machines)
                    .await
                    .map_err(|source| EngineError::Canary {
                        group: group.clone(),
                        source: Box::new(source),
                    })
            })
            .buffer_unordered(GROUPS_AT_ONCE)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// One group's canary: create, wait, destroy (whatever the wait gave).
    async fn canary(
        &self,
        group: &str,
        region: String,
        machines: &[Machine],
    ) -> Result<(), EngineError> {
        let spec = &self.release.spec;
        let Some(group_cfg) = spec.groups.get(group) else {
            return Ok(());
        };
        let guest = guest_for_new(spec, group, machines);
        let mut config = config_for_new(group_cfg, group, &spec.image, &self.release.meta(), guest);
        config.metadata.insert(CANARY.into(), "true".into());
        let req = CreateMachineRequest {
            config,
            region: spec.primary_region.clone().or(Some(region)),
            skip_service_registration: true,
            ..CreateMachineRequest::default()
        };
        let m = self
            .target
            .create_machine(req)
            .await
            .map_err(|source| EngineError::Create {
                group: group.to_string(),
                source,
            })?;
        self.record(DeployEvent::CanaryCreated {
            id: m.id.clone(),
            group: group.to_string(),
        })
        .await?;
        let waited = self.wait_all(vec![(m.id.clone(), group.to_string())]).await;
        if waited.is_ok() {
            self.record(DeployEvent::CanaryHealthy {
                id: m.id.clone(),
                group: group.to_string(),
            })
            .await?;
        }
        let destroyed = match self.target.destroy_machine(&m.id, true).await {
            Err(TargetError::NotFound(_)) => Ok(()),
            other => other,
        };
        if destroyed.is_ok() {
            self.record(DeployEvent::CanaryDestroyed {
                id: m.id.clone(),
                group: group.to_string(),
            })
            .await?;
        }
        waited?;
        destroyed.map_err(|source| EngineError::Destroy {
            id: m.id.clone(),
            group: group.to_string(),
            source,
        })
    }
}
