//! Volumes of new machines (flyctl-behaviour §3.2 steps 14–15, §4.1 step 6): before machines
//! of a group with `[[mounts]]` are created, each gets a volume of its own — an unattached
//! volume named as the mount's `source` in the machine's region when there is one (oldest
//! first), else a new one (`initial_size` > `--volume-initial-size` > 1 GB, the group's
//! snapshot settings). The machine's `config.mounts[0].volume` then names it.
//!
//! Resumable by construction: a volume created by a run that died before creating its machine
//! is unattached, so the next run takes it instead of creating another. Volumes are picked
//! for all the machines of a pass before any is created, so two new machines never reach for
//! the same one. `scale count --with-new-volumes` lists the volumes that were unattached when
//! it was planned ([`crate::spec::ScaleWork::avoid_volumes`]); those are never taken.

use std::collections::BTreeSet;

use aloft_api::volumes::{CreateVolumeRequest, Volume, STATE_CREATED};

use super::{DeployTarget, Engine, EngineError};
use crate::events::DeployEvent;
use crate::plan::CreateWork;
use crate::spec::DEFAULT_VOLUME_SIZE_GB;

/// `Volume::host_status` of a healthy host (`aloft_api::volumes`' host constant; spelled out
/// here because this crate names no status constant: see the architecture test).
const HOST_OK: &str = "ok";

/// Whether the machine to create mounts a volume it has not got yet (a name, no id).
fn needs_volume(c: &CreateWork) -> bool {
    c.config.mounts.first().is_some_and(|m| m.volume.is_empty())
}

/// Whether a new machine may take `v`: usable, unattached, on a healthy host.
fn is_free(v: &Volume) -> bool {
    v.state == STATE_CREATED
        && v.attached_machine_id.is_none()
        && (v.host_status.is_empty() || v.host_status == HOST_OK)
}

impl<T: DeployTarget> Engine<'_, T> {
    /// Gives every machine of `create` that mounts a volume by name its own volume (see the
    /// module docs), and a region (the agent's default when none was planned).
    pub(super) async fn give_volumes(&self, create: &mut [CreateWork]) -> Result<(), EngineError> {
        if !create.iter().any(needs_volume) {
            return Ok(());
        }
        let avoid: BTreeSet<&str> = self
            .release
            .scale
            .iter()
            .flat_map(|w| w.avoid_volumes.iter().map(String::as_str))
            .collect();
        let mut free: Vec<Volume> = self
            .target
            .list_volumes()
            .await
            .map_err(EngineError::Volumes)?
            .into_iter()
            .filter(|v| is_free(v) && !avoid.contains(v.id.as_str()))
            .collect();
        free.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        for c in create.iter_mut().filter(|c| needs_volume(c)) {
            let region = c.region.clone().unwrap_or_else(|| {
                let primary = c.config.env.get("PRIMARY_REGION").map(String::as_str);
                self.target.default_region(primary)
            });
            c.region = Some(region.clone());
            let mount = &c.config.mounts[0];
            let name = mount.name.clone();
            let taken = free
                .iter()
                .position(|v| v.name == name && v.region == region)
                .map(|i| free.remove(i));
            let volume = match taken {
                Some(v) => {
                    self.record(DeployEvent::VolumeReused {
                        id: v.id.clone(),
                        name: v.name.clone(),
                        group: c.group.clone(),
                    })
                    .await?;
                    v
                }
                None => {
                    let settings = self.release.spec.volumes.get(&c.group);
                    let size_gb = mount
                        .size_gb
                        .or(self.release.spec.deploy.volume_initial_size)
                        .unwrap_or(DEFAULT_VOLUME_SIZE_GB);
                    let req = CreateVolumeRequest {
                        name: name.clone(),
                        region: region.clone(),
                        size_gb: Some(size_gb),
                        encrypted: Some(true),
                        snapshot_retention: settings.and_then(|s| s.snapshot_retention),
                        auto_backup_enabled: settings.and_then(|s| s.scheduled_snapshots),
                        compute: c.config.guest.clone(),
                        compute_image: Some(c.config.image.clone()).filter(|i| !i.is_empty()),
                        ..CreateVolumeRequest::default()
                    };
                    let v = self.target.create_volume(req).await.map_err(|source| {
                        EngineError::CreateVolume {
                            group: c.group.clone(),
                            name: name.clone(),
                            source,
                        }
                    })?;
                    self.record(DeployEvent::VolumeCreated {
                        id: v.id.clone(),
                        name: v.name.clone(),
                        region: v.region.clone(),
                        size_gb: v.size_gb,
                        group: c.group.clone(),
                    })
                    .await?;
                    v
                }
            };
            c.config.mounts[0].volume = volume.id;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use aloft_api::{Machine, MachineMount, MachineState};

    use super::super::memory::{volume, MemTarget};
    use super::super::run_release;
    use crate::plan::plan_deploy;
    use crate::plan::tests::{machine, release, spec};
    use crate::spec::{Release, ReleaseSpec, ScaleWork, SlotCreate};

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn mount(name: &str, path: &str) -> MachineMount {
        MachineMount {
            name: name.into(),
            path: path.into(),
            ..MachineMount::default()
        }
    }

    /// `web` (services) mounts `data` at /data; `cron` mounts nothing.
    fn spec_with_mount() -> ReleaseSpec {
        let mut s = spec(&[("web", true), ("cron", false)]);
        s.groups.get_mut("web").unwrap().mounts = vec![mount("data", "/data")];
        s
    }

    fn deploy(s: &ReleaseSpec, ms: &[Machine], counts: &[(&str, u32)]) -> Release {
        let counts: BTreeMap<String, u32> =
            counts.iter().map(|(g, n)| (g.to_string(), *n)).collect();
        let plan = plan_deploy(s, ms, &counts, None).unwrap();
        release(s.clone(), plan.frozen, 2)
    }

    /// Volume id of each machine of `group`, sorted by machine id.
    fn volumes_of(t: &MemTarget, group: &str) -> Vec<String> {
        t.machines()
            .iter()
            .filter(|m| m.process_group() == group)
            .map(|m| {
                m.config
                    .mounts
                    .first()
                    .map(|v| v.volume.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn new_machines_get_one_volume_each_reusing_unattached_ones_of_their_region_first() {
        let s = spec_with_mount();
        let t = MemTarget::default();
        {
            let mut st = t.state.lock().unwrap();
            for v in [
                volume("vol_old", "data", "gru", 5),
                volume("vol_ams", "data", "ams", 5), // another region
                volume("vol_oth", "other", "gru", 5), // another name
            ] {
                st.volumes.insert(v.id.clone(), v);
            }
        }
        let r = deploy(&s, &[], &[("web", 3)]);
        block(run_release(&t, &r, false)).unwrap();
        let vols = volumes_of(&t, "web");
        assert_eq!(vols.len(), 3);
        assert!(vols.contains(&"vol_old".to_string()), "{vols:?}");
        assert_eq!(vols.iter().collect::<BTreeSet<_>>().len(), 3, "{vols:?}");
        let st = t.state.lock().unwrap();
        assert_eq!(st.volumes.len(), 5, "two created, three were there");
        for id in &vols {
            let v = &st.volumes[id];
            assert_eq!((v.name.as_str(), v.region.as_str()), ("data", "gru"));
        }
        // New volumes: no initial_size nor --volume-initial-size → 1 GB.
        let new: Vec<u32> = vols
            .iter()
            .filter(|v| *v != "vol_old")
            .map(|v| st.volumes[v].size_gb)
            .collect();
        assert_eq!(new, vec![1, 1]);
        drop(st);
        // cron (a machine and its standby: no services, no mounts) has no mount, so no volume.
        let cron = volumes_of(&t, "cron");
        assert!(
            !cron.is_empty() && cron.iter().all(String::is_empty),
            "no mount, no volume: {cron:?}"
        );
    }

    #[test]
    fn a_volume_size_is_initial_size_then_the_flag_then_one_gb() {
        for (initial, flag, want) in [(Some(7), Some(4), 7), (None, Some(4), 4), (None, None, 1)] {
            let mut s = spec_with_mount();
            s.groups.get_mut("web").unwrap().mounts[0].size_gb = initial;
            s.deploy.volume_initial_size = flag;
            s.volumes.insert(
                "web".into(),
                crate::spec::VolumeSettings {
                    snapshot_retention: Some(9),
                    scheduled_snapshots: None,
                },
            );
            let t = MemTarget::default();
            block(run_release(&t, &deploy(&s, &[], &[("web", 1)]), false)).unwrap();
            let st = t.state.lock().unwrap();
            let sizes: Vec<u32> = st.volumes.values().map(|v| v.size_gb).collect();
            assert_eq!(sizes, vec![want], "initial {initial:?}, flag {flag:?}");
        }
    }

    /// Killed at any operation (before or after it took effect) and run again: each machine
    /// has its own volume, and no volume is left over — the one made for a machine that was
    /// never created is taken by the resumed run.
    #[test]
    fn a_deploy_killed_between_a_volume_and_its_machine_resumes_without_leaking_volumes() {
        let s = spec_with_mount();
        let r = deploy(&s, &[], &[("web", 3), ("cron", 1)]);
        for kill_at in 0..10 {
            for commit in [false, true] {
                let what = format!("killed at {kill_at}, commit {commit}");
                let t = MemTarget::default();
                {
                    let mut st = t.state.lock().unwrap();
                    st.kill_at = Some(kill_at);
                    st.commit_before_kill = commit;
                }
                let _ = block(run_release(&t, &r, false));
                t.state.lock().unwrap().kill_at = None;
                block(run_release(&t, &r, true)).unwrap();
                let vols = volumes_of(&t, "web");
                assert_eq!(vols.len(), 3, "{what}");
                assert_eq!(
                    vols.iter().collect::<BTreeSet<_>>().len(),
                    3,
                    "{what}: {vols:?}"
                );
                assert_eq!(t.state.lock().unwrap().volumes.len(), 3, "{what}");
            }
        }
    }

    fn with_volume(mut m: Machine, id: &str, name: &str, path: &str) -> Machine {
        m.config.mounts = vec![MachineMount {
            volume: id.into(),
            ..mount(name, path)
        }];
        m
    }

    #[test]
    fn an_update_keeps_the_machine_volume_and_applies_a_new_path_in_place() {
        let mut s = spec_with_mount();
        s.groups.get_mut("web").unwrap().mounts[0].path = "/srv/data".into();
        let ms = vec![with_volume(
            machine("w1", "web", MachineState::Started, "gru"),
            "vol_1",
            "data",
            "/data",
        )];
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), Some(&["web".to_string()])).unwrap();
        assert!(plan.frozen.destroy.is_empty(), "{:?}", plan.frozen);
        let t = MemTarget::with(ms.clone());
        block(run_release(&t, &release(s, plan.frozen, 2), false)).unwrap();
        let m = &t.machines()[0];
        assert_eq!(m.id, "w1");
        assert_eq!(m.config.mounts[0].volume, "vol_1");
        assert_eq!(m.config.mounts[0].path, "/srv/data");
        assert!(t.state.lock().unwrap().volumes.is_empty(), "none created");
    }

    #[test]
    fn a_mount_added_removed_or_renamed_replaces_the_machine_and_keeps_its_volume() {
        let mut s = spec_with_mount();
        s.groups.get_mut("cron").unwrap().mounts = vec![mount("logs", "/logs")];
        let ms = vec![
            // web had a volume of another name; cron had none; worker's mount is gone.
            with_volume(
                machine("w1", "web", MachineState::Started, "gru"),
                "vol_1",
                "olddata",
                "/data",
            ),
            machine("c1", "cron", MachineState::Started, "gru"),
            with_volume(
                machine("k1", "worker", MachineState::Started, "gru"),
                "vol_2",
                "cache",
                "/cache",
            ),
        ];
        s.groups.insert(
            "worker".into(),
            crate::plan::tests::group_cfg("work", false),
        );
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let replaced: Vec<&String> = plan.frozen.replace.keys().collect();
        assert_eq!(replaced, ["c1", "k1", "w1"]);
        assert!(
            plan.needs_confirmation(),
            "a replacement is confirmed like a destroy"
        );
        let text = plan.describe_group_changes().unwrap();
        assert!(text.contains("replace \"worker\" machine k1"), "{text}");
        assert!(text.contains("vol_2"), "{text}");
        assert!(!text.contains(" * create"), "{text}");

        let t = MemTarget::with(ms.clone());
        {
            let mut st = t.state.lock().unwrap();
            for v in [
                volume("vol_1", "olddata", "gru", 1),
                volume("vol_2", "cache", "gru", 1),
            ] {
                st.volumes.insert(v.id.clone(), v);
            }
        }
        block(run_release(&t, &release(s, plan.frozen, 2), false)).unwrap();
        let ms = t.machines();
        assert_eq!(ms.len(), 3);
        for m in &ms {
            assert!(
                !["w1", "c1", "k1"].contains(&m.id.as_str()),
                "{} kept",
                m.id
            );
        }
        let name_of = |g: &str| {
            let m = ms.iter().find(|m| m.process_group() == g).unwrap();
            let st = t.state.lock().unwrap();
            m.config
                .mounts
                .first()
                .map(|v| st.volumes[&v.volume].name.clone())
        };
        assert_eq!(name_of("web").as_deref(), Some("data"));
        assert_eq!(name_of("cron").as_deref(), Some("logs"));
        assert_eq!(name_of("worker"), None);
        // The old volumes are still there.
        let st = t.state.lock().unwrap();
        assert!(st.volumes.contains_key("vol_1") && st.volumes.contains_key("vol_2"));
    }

    #[test]
    fn scale_with_new_volumes_never_takes_the_volumes_listed_at_planning() {
        let s = spec_with_mount();
        let mut cfg = s.groups["web"].clone();
        cfg.metadata
            .insert(aloft_api::metadata::PROCESS_GROUP.into(), "web".to_string());
        let mut r = release(s, crate::spec::FrozenPlan::default(), 2);
        r.scale = Some(ScaleWork {
            summary: "web=2 --with-new-volumes".into(),
            create: (0..2)
                .map(|i| SlotCreate {
                    slot: format!("op:{i}"),
                    group: "web".into(),
                    region: Some("gru".into()),
                    config: cfg.clone(),
                })
                .collect(),
            avoid_volumes: vec!["vol_old".into()],
            ..ScaleWork::default()
        });
        let t = MemTarget::default();
        {
            let mut st = t.state.lock().unwrap();
            let v = volume("vol_old", "data", "gru", 1);
            st.volumes.insert(v.id.clone(), v);
        }
        block(run_release(&t, &r, false)).unwrap();
        let vols = volumes_of(&t, "web");
        assert_eq!(vols.len(), 2);
        assert!(!vols.contains(&"vol_old".to_string()), "{vols:?}");
        assert_eq!(t.state.lock().unwrap().volumes.len(), 3);
    }
}
