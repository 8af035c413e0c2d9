//! The `bluegreen` strategy (flyctl-behaviour §3.5): instead of updating machines in place,
//! a green machine of the new release is created next to each blue one (same update config and
//! region, `fly_bluegreen_deployment_tag`, cordoned: it gets no traffic but its checks run);
//! once every green is started and healthy, [`DeployTarget::switch_traffic`] moves traffic to
//! the greens and away from the blues in one step; then the blues are destroyed.
//!
//! A failure before the switch destroys the greens and leaves the blues serving (uncordoned).
//! Resumable: a green carries the id of its blue (`aloft_green_for`), so a run after a crash
//! creates only the missing greens; the switch is idempotent; blues left after it are destroyed.

use std::collections::BTreeMap;

use aloft_api::metadata::{BLUEGREEN_TAG, GREEN_FOR, RELEASE_ID};
use aloft_api::{CreateMachineRequest, Machine};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::{DeployTarget, Engine, EngineError, TargetError};
use crate::events::DeployEvent;
use crate::plan::UpdateWork;

/// A green machine and whether it runs (the green of a stopped blue stays stopped).
struct Green {
    id: String,
    group: String,
    launched: bool,
}

impl<T: DeployTarget> Engine<'_, T> {
    /// What a superseded or failed blue-green release left, destroyed before a deploy plans:
    /// - greens that never got traffic (still cordoned): never live, and left alone they would
    ///   be members that never serve;
    /// - blues switched away from (cordoned, named by a green that serves): the release was
    ///   stopped after its switch, before it destroyed them. A cordoned machine no serving
    ///   green names is left alone: a user may have cordoned it.
    pub(super) async fn destroy_stale_greens(&self) -> Result<(), EngineError> {
        let machines = self
            .target
            .list_machines()
            .await
            .map_err(EngineError::List)?;
        let of_another_release = |m: &Machine| {
            m.state.is_active()
                && m.config.metadata.contains_key(GREEN_FOR)
                && m.config.metadata.get(RELEASE_ID) != Some(&self.release.id)
        };
        let switched_blues: Vec<&str> = machines
            .iter()
            .filter(|m| of_another_release(m) && !m.cordoned)
            .filter_map(|m| m.config.metadata.get(GREEN_FOR).map(String::as_str))
            .collect();
        for m in &machines {
            let stale_green = of_another_release(m) && m.cordoned;
            let switched_blue =
                m.state.is_active() && m.cordoned && switched_blues.contains(&m.id.as_str());
            if !stale_green && !switched_blue {
                continue;
            }
            match self.target.destroy_machine(&m.id, true).await {
                Ok(()) | Err(TargetError::NotFound(_)) => {}
                Err(source) => {
                    return Err(EngineError::Destroy {
                        id: m.id.clone(),
                        group: m.process_group().to_string(),
                        source,
                    })
                }
            }
            let (id, group) = (m.id.clone(), m.process_group().to_string());
            self.record(if stale_green {
                DeployEvent::GreenDestroyed { id, group }
            } else {
                DeployEvent::BlueDestroyed { id, group }
            })
            .await?;
        }
        Ok(())
    }

    pub(super) async fn blue_green(
        &self,
        blues: Vec<UpdateWork>,
        machines: &[Machine],
    ) -> Result<(), EngineError> {
        if blues.is_empty() {
            return Ok(());
        }
        let release = &self.release.id;
        // blue id → its green, made by an interrupted run of this release
        let existing: BTreeMap<&str, &Machine> = machines
            .iter()
            .filter(|m| m.state.is_active() && m.config.metadata.get(RELEASE_ID) == Some(release))
            .filter_map(|m| Some((m.config.metadata.get(GREEN_FOR)?.as_str(), m)))
            .collect();
        let mut greens: Vec<Green> = Vec::new();
        let mut missing = Vec::new();
        for b in &blues {
            match existing.get(b.id.as_str()) {
                Some(g) => greens.push(Green {
                    id: g.id.clone(),
                    group: b.group.clone(),
                    launched: !b.skip_launch,
                }),
                None => missing.push(b.clone()),
            }
        }
        let created: Vec<Result<Green, EngineError>> = stream::iter(missing)
            .map(|b| async move { self.create_green(&b).await })
            .buffer_unordered(self.concurrency())
            .collect()
            .await;
        let mut failure = None;
        for c in created {
            match c {
                Ok(g) => greens.push(g),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let blue_ids: Vec<String> = blues.iter().map(|b| b.id.clone()).collect();
        let green_ids: Vec<String> = greens.iter().map(|g| g.id.clone()).collect();
        if failure.is_none() {
            let launched: Vec<(String, String)> = greens
                .iter()
                .filter(|g| g.launched)
                .map(|g| (g.id.clone(), g.group.clone()))
                .collect();
            match self.wait_all(launched).await {
                Ok(()) => {
                    self.record(DeployEvent::GreensHealthy {
                        count: greens.len(),
                    })
                    .await?;
                    match self.target.switch_traffic(&green_ids, &blue_ids).await {
                        Ok(()) => {}
                        Err(source) => {
                            failure = Some(EngineError::Update {
                                id: green_ids.join(","),
                                group: String::new(),
                                source,
                            })
                        }
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            self.roll_back(&greens, &blue_ids).await;
            return Err(EngineError::BlueGreen(Box::new(e)));
        }
        self.record(DeployEvent::TrafficSwitched {
            green: greens.len(),
            blue: blues.len(),
        })
        .await?;
        stream::iter(blues.iter().map(Ok))
            .try_for_each_concurrent(self.concurrency(), |b| async move {
                match self.target.destroy_machine(&b.id, true).await {
                    Ok(()) | Err(TargetError::NotFound(_)) => {}
                    Err(source) => {
                        return Err(EngineError::Destroy {
                            id: b.id.clone(),
                            group: b.group.clone(),
                            source,
                        })
                    }
                }
                self.record(DeployEvent::BlueDestroyed {
                    id: b.id.clone(),
                    group: b.group.clone(),
                })
                .await
            })
            .await
    }

    async fn create_green(&self, blue: &UpdateWork) -> Result<Green, EngineError> {
        let mut config = blue.config.clone();
        config
            .metadata
            .insert(BLUEGREEN_TAG.into(), self.release.id.clone());
        config.metadata.insert(GREEN_FOR.into(), blue.id.clone());
        let req = CreateMachineRequest {
            config,
            region: Some(blue.region.clone()).filter(|r| !r.is_empty()),
            skip_launch: blue.skip_launch,
            skip_service_registration: true,
            ..CreateMachineRequest::default()
        };
        let m = self
            .target
            .create_machine(req)
            .await
            .map_err(|source| EngineError::Create {
                group: blue.group.clone(),
                source,
            })?;
        self.record(DeployEvent::GreenCreated {
            id: m.id.clone(),
            group: blue.group.clone(),
            blue: blue.id.clone(),
        })
        .await?;
        Ok(Green {
            id: m.id,
            group: blue.group.clone(),
            launched: !blue.skip_launch,
        })
    }

    /// After a failure before the switch: blues serve (uncordoned, whatever an interrupted
    /// switch did), greens are destroyed. Best effort: the release fails with the first error.
    async fn roll_back(&self, greens: &[Green], blues: &[String]) {
        let _ = self.target.switch_traffic(blues, &[]).await;
        for g in greens {
            if matches!(
                self.target.destroy_machine(&g.id, true).await,
                Ok(()) | Err(TargetError::NotFound(_))
            ) {
                let _ = self
                    .record(DeployEvent::GreenDestroyed {
                        id: g.id.clone(),
                        group: g.group.clone(),
                    })
                    .await;
            }
        }
    }
}
