//! Deploy planning (flyctl-behaviour §3.2–§3.4, §2.4), pure functions of
//! (spec, machines, remembered counts, flags):
//!
//! * [`plan_deploy`] takes the decisions of a new release once (the [`FrozenPlan`]): which
//!   groups get machines (1, or 2 with services, or 1 and a standby without services or
//!   mounts; a remembered count wins, so a group scaled to 0 stays at 0), which machines of
//!   removed groups are destroyed (shown to the user first), which machines stay stopped.
//! * [`converge`] says what is left to do for a release given the machines that exist *now*; the
//!   engine calls it on every (re)run, which makes a deploy resumable and idempotent.
//! * [`config_for_update`] / [`config_for_new`] build a machine's config for a group.
//!
//! Volumes (`[[mounts]]`, §3.2 steps 14–15, §3.4, §6 item 6): a machine keeps its volume for
//! life; an update merges the group's mount into the machine's, keeping the volume id
//! ([`merge_mounts`]; a new `destination` applies in place). A mount added, removed or renamed
//! replaces the machine ([`mount_change`]): flyctl errors on a renamed source and on a new group
//! without a hand-made volume; Aloft replaces (the machine is destroyed, confirmed like any
//! destroy, and a new one made; the old volume stays, unattached) and creates the volumes new
//! machines need (`crate::engine` picks or creates them).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use aloft_api::metadata::{
    CANARY, LEGACY_PROCESS_GROUP, PLATFORM_VERSION, PLATFORM_VERSION_V2, PROCESS_GROUP, RELEASE_ID,
    RELEASE_VERSION, RESERVED_GROUPS,
};
use aloft_api::{Guest, Machine, MachineConfig, MachineMount, MachineState};
use serde::{Deserialize, Serialize};

use crate::spec::{FrozenPlan, PlannedDestroy, Release, ReleaseMeta, ReleaseSpec, Strategy};

/// Why a deploy cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown process group {group:?} in --process-groups; the config defines {}", fmt_groups(.known))]
    UnknownGroup { group: String, known: Vec<String> },
    #[error("the config defines no process group")]
    NoGroups,
    #[error("the {strategy} strategy cannot be used with volumes: group {group:?} has [[mounts]]; use \"rolling\" (the default) or \"immediate\"")]
    StrategyWithMounts {
        strategy: &'static str,
        group: String,
    },
    #[error("the bluegreen strategy needs health checks to know when the green machines are ready, and no deployed group has any; add checks (e.g. [[http_service.checks]]) or use \"rolling\"")]
    BlueGreenWithoutChecks,
}

/// Formats group names the way flyctl does in errors: `['a', 'b']`.
pub fn fmt_groups(groups: &[String]) -> String {
    let inner: Vec<String> = groups.iter().map(|g| format!("'{g}'")).collect();
    format!("[{}]", inner.join(", "))
}

/// Whether deploy/scale/status manage this machine (`fly_platform_version = v2`, §2.2) and it
/// is not a platform machine (release command, console) nor a temporary canary.
pub fn is_managed(m: &Machine) -> bool {
    m.config.metadata.get(PLATFORM_VERSION).map(String::as_str) == Some(PLATFORM_VERSION_V2)
        && !RESERVED_GROUPS.contains(&m.process_group())
        && !m.config.metadata.contains_key(CANARY)
        && m.state.is_active()
}

/// The group a machine belongs to for deploy purposes: its label, or the default group when it
/// has none (§2.2: group-less machines are adopted into the default group).
pub fn effective_group<'a>(m: &'a Machine, default_group: &'a str) -> &'a str {
    match m.process_group() {
        "" => default_group,
        g => g,
    }
}

/// Whether a machine in `state` is meant to be running: started or on its way there, or failed
/// (a crash, not a stop). A deploy relaunches such machines with their update; every other state
/// (stopped, suspended, created) is updated with `skip_launch` (§3.4), and scale-down destroys
/// them last. Not "has a process now" (`failed` has none).
pub fn meant_to_run(state: MachineState) -> bool {
    matches!(
        state,
        MachineState::Started
            | MachineState::Starting
            | MachineState::Restarting
            | MachineState::Updating
            | MachineState::Replacing
            | MachineState::Failed
    )
}

/// A deploy plan: the frozen decisions plus what it will do to existing machines, for display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployPlan {
    pub frozen: FrozenPlan,
    /// Existing machines that will be updated in place, in machine id order.
    pub updates: Vec<PlannedUpdate>,
    /// Whether no managed machine existed (the wording of the summary changes).
    pub first_deploy: bool,
    /// Machines per group of the spec once the release is carried out (what a rollback to it
    /// restores).
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUpdate {
    pub id: String,
    pub group: String,
    pub region: String,
    /// Updated but left stopped.
    pub keep_stopped: bool,
    /// The machine had no group label and is adopted into the default group.
    pub adopted: bool,
}

impl DeployPlan {
    /// Whether the user must confirm (machines would be destroyed).
    pub fn needs_confirmation(&self) -> bool {
        !self.frozen.destroy.is_empty()
    }

    /// Ids of the machines to destroy: what the CLI sends back as confirmed.
    pub fn destroy_ids(&self) -> Vec<String> {
        self.frozen.destroy.iter().map(|d| d.id.clone()).collect()
    }

    /// How many machines of `group` are replaced.
    fn replaced_in(&self, group: &str) -> usize {
        self.frozen
            .destroy
            .iter()
            .filter(|d| d.group == group && self.frozen.replace.contains_key(&d.id))
            .count()
    }

    /// The summary printed before deploying (§3.3 step 3), or `None` when the group set is unchanged.
    pub fn describe_group_changes(&self) -> Option<String> {
        if self.frozen.create.is_empty() && self.frozen.destroy.is_empty() {
            return None;
        }
        let mut out = String::from(if self.first_deploy {
            "This deployment will:\n"
        } else {
            "Process groups have changed. This will:\n"
        });
        let mut destroy_by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for d in &self.frozen.destroy {
            if self.frozen.replace.contains_key(&d.id) {
                continue;
            }
            destroy_by_group
                .entry(d.group.as_str())
                .or_default()
                .push(d.id.as_str());
        }
        for d in &self.frozen.destroy {
            if let Some(why) = self.frozen.replace.get(&d.id) {
                let _ = writeln!(out, " * replace \"{}\" machine {}: {why}", d.group, d.id);
            }
        }
        for (group, ids) in destroy_by_group {
            let label = if group.is_empty() {
                "<no group>"
            } else {
                group
            };
            let noun = if ids.len() == 1 {
                "machine"
            } else {
                "machines"
            };
            let _ = writeln!(
                out,
                " * destroy {} \"{label}\" {noun} ({})",
                ids.len(),
                ids.join(", ")
            );
        }
        for (group, n) in &self.frozen.create {
            if self.frozen.standby.contains(group) {
                let n = n.saturating_sub(1);
                let noun = if n == 1 { "machine" } else { "machines" };
                let _ = writeln!(
                    out,
                    " * create {n} \"{group}\" {noun} and 1 standby machine for it"
                );
                continue;
            }
            // Replacements keep their group at its count (said above): only more is news.
            let kept =
                self.updates.iter().filter(|u| u.group == *group).count() + self.replaced_in(group);
            let n = &if self.replaced_in(group) > 0 {
                n.saturating_sub(kept as u32)
            } else {
                *n
            };
            if *n == 0 {
                continue;
            }
            let noun = if *n == 1 { "machine" } else { "machines" };
            let _ = writeln!(out, " * create {n} \"{group}\" {noun}");
        }
        Some(out)
    }
}

/// Plans a new release. `desired_counts` are the per-group counts the app remembers (set by
/// `scale count`); `process_groups` is `--process-groups` (None = every group).
///
/// Rules:
/// * only managed, active machines count (§2.2); group-less ones belong to the default group;
/// * machines of groups not in the spec are destroyed — unless `--process-groups` is given, which
///   leaves every other group (defined or not) untouched;
/// * a group in scope with no machine gets `desired_counts[group]` machines when remembered (so
///   a group scaled to 0 stays at 0), else 2 when it has services and HA is on, else 1 — plus
///   a standby when HA is on and it has neither services nor mounts ([`gets_standby`]); none
///   with `update_only`;
/// * machines not running before the deploy are updated and left stopped.
pub fn plan_deploy(
    spec: &ReleaseSpec,
    machines: &[Machine],
    desired_counts: &BTreeMap<String, u32>,
    process_groups: Option<&[String]>,
) -> Result<DeployPlan, PlanError> {
    plan_deploy_restoring(spec, machines, desired_counts, process_groups, None)
}

/// [`plan_deploy`], and with `restore` (a rollback: the per-group counts of the release rolled
/// back to) each group in scope is brought to its count: machines are created, and surplus
/// ones destroyed (to be confirmed like any destroy) — stopped ones first, then from the
/// regions with the most machines of the group, newest id first.
pub fn plan_deploy_restoring(
    spec: &ReleaseSpec,
    machines: &[Machine],
    desired_counts: &BTreeMap<String, u32>,
    process_groups: Option<&[String]>,
    restore: Option<&BTreeMap<String, u32>>,
) -> Result<DeployPlan, PlanError> {
    if spec.groups.is_empty() {
        return Err(PlanError::NoGroups);
    }
    let known = spec.group_names();
    let scope: BTreeSet<String> = match process_groups {
        Some(filter) if !filter.is_empty() => {
            for g in filter {
                if !spec.groups.contains_key(g) {
                    return Err(PlanError::UnknownGroup {
                        group: g.clone(),
                        known,
                    });
                }
            }
            filter.iter().cloned().collect()
        }
        _ => known.iter().cloned().collect(),
    };
    check_strategy(spec, &scope)?;
    let filtered = process_groups.is_some_and(|f| !f.is_empty());
    let mut managed: Vec<&Machine> = machines.iter().filter(|m| is_managed(m)).collect();
    managed.sort_by(|a, b| a.id.cmp(&b.id));

    let mut frozen = FrozenPlan {
        groups: scope.clone(),
        ..FrozenPlan::default()
    };
    let surplus = match restore {
        Some(counts) => surplus_machines(spec, &managed, &scope, counts),
        None => BTreeSet::new(),
    };
    let mut updates = Vec::new();
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &managed {
        let group = effective_group(m, &spec.default_group);
        if surplus.contains(m.id.as_str()) {
            frozen.destroy.push(PlannedDestroy {
                id: m.id.clone(),
                group: group.to_string(),
                region: m.region.clone(),
            });
            continue;
        }
        if !spec.groups.contains_key(group) {
            if !filtered {
                frozen.destroy.push(PlannedDestroy {
                    id: m.id.clone(),
                    group: m.process_group().to_string(),
                    region: m.region.clone(),
                });
            }
            continue;
        }
        *per_group.entry(group).or_default() += 1;
        if !scope.contains(group) {
            continue;
        }
        if let Some(why) = mount_change(&m.config, &spec.groups[group]) {
            frozen.destroy.push(PlannedDestroy {
                id: m.id.clone(),
                group: group.to_string(),
                region: m.region.clone(),
            });
            frozen.replace.insert(m.id.clone(), why);
            continue;
        }
        let keep_stopped = !meant_to_run(m.state);
        if keep_stopped {
            frozen.keep_stopped.insert(m.id.clone());
        }
        updates.push(PlannedUpdate {
            id: m.id.clone(),
            group: group.to_string(),
            region: m.region.clone(),
            keep_stopped,
            adopted: m.process_group().is_empty(),
        });
    }
    if let Some(counts) = restore {
        for group in &scope {
            let have = per_group.get(group.as_str()).copied().unwrap_or(0);
            match counts.get(group) {
                Some(&n) if n as usize > have => {
                    // A group rebuilt from nothing gets its standby back, as a new group does.
                    if have == 0 && n >= 2 && gets_standby(spec, group) {
                        frozen.standby.insert(group.clone());
                    }
                    frozen.create.insert(group.clone(), n);
                }
                _ => {}
            }
        }
    } else if !spec.deploy.update_only {
        for group in &scope {
            if per_group.get(group.as_str()).copied().unwrap_or(0) > 0 {
                continue;
            }
            let n = match desired_counts.get(group) {
                Some(n) => *n,
                None if gets_standby(spec, group) => {
                    frozen.standby.insert(group.clone());
                    new_group_count(spec, group) + 1
                }
                None => new_group_count(spec, group),
            };
            if n > 0 {
                frozen.create.insert(group.clone(), n);
            }
        }
    }
    // A replaced machine is destroyed and its group brought back to its count.
    for d in &frozen.destroy {
        if frozen.replace.contains_key(&d.id) {
            let have = per_group.get(d.group.as_str()).copied().unwrap_or(0) as u32;
            let n = frozen.create.entry(d.group.clone()).or_insert(0);
            *n = (*n).max(have);
        }
    }
    let counts = spec
        .groups
        .keys()
        .map(|g| {
            let have = per_group.get(g.as_str()).copied().unwrap_or(0) as u32;
            (g.clone(), frozen.create.get(g).copied().unwrap_or(have))
        })
        .collect();
    Ok(DeployPlan {
        frozen,
        updates,
        first_deploy: managed.is_empty(),
        counts,
    })
}

/// The machines a rollback destroys so that each group in `scope` keeps `counts[group]`:
/// stopped ones first, then one at a time from the region with the most machines left, newest
/// id first. Groups without a count keep all their machines.
fn surplus_machines<'m>(
    spec: &ReleaseSpec,
    managed: &[&'m Machine],
    scope: &BTreeSet<String>,
    counts: &BTreeMap<String, u32>,
) -> BTreeSet<&'m str> {
    let mut doomed = BTreeSet::new();
    for group in scope {
        let Some(&keep) = counts.get(group) else {
            continue;
        };
        let mut members: Vec<&Machine> = managed
            .iter()
            .copied()
            .filter(|m| effective_group(m, &spec.default_group) == group)
            .collect();
        let mut extra = members.len().saturating_sub(keep as usize);
        // Stopped machines first, newest id first.
        members.sort_by(|a, b| b.id.cmp(&a.id));
        members.retain(|m| {
            if extra > 0 && !meant_to_run(m.state) {
                doomed.insert(m.id.as_str());
                extra -= 1;
                return false;
            }
            true
        });
        while extra > 0 {
            let mut per_region: BTreeMap<&str, Vec<&Machine>> = BTreeMap::new();
            for m in &members {
                per_region.entry(m.region.as_str()).or_default().push(m);
            }
            let Some(region) = per_region
                .iter()
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
                .map(|(r, _)| r.to_string())
            else {
                break;
            };
            let pos = members
                .iter()
                .position(|m| m.region == region)
                .expect("the region has a machine");
            doomed.insert(members.remove(pos).id.as_str());
            extra -= 1;
        }
    }
    doomed
}

/// What the strategy needs of the deployed groups (flyctl's rules): `canary` and `bluegreen`
/// create extra machines of a group, which a volume cannot follow; `bluegreen` switches traffic
/// only once the greens pass their checks, so some group must have checks.
fn check_strategy(spec: &ReleaseSpec, scope: &BTreeSet<String>) -> Result<(), PlanError> {
    let strategy = spec.deploy.strategy;
    if !matches!(strategy, Strategy::Canary | Strategy::Bluegreen) {
        return Ok(());
    }
    let groups = || {
        spec.groups
            .iter()
            .filter(|(g, _)| scope.contains(g.as_str()))
    };
    if let Some((group, _)) = groups().find(|(_, c)| !c.mounts.is_empty()) {
        return Err(PlanError::StrategyWithMounts {
            strategy: strategy.as_str(),
            group: group.clone(),
        });
    }
    let has_checks =
        |c: &MachineConfig| !c.checks.is_empty() || c.services.iter().any(|s| !s.checks.is_empty());
    if strategy == Strategy::Bluegreen && !groups().any(|(_, c)| has_checks(c)) {
        return Err(PlanError::BlueGreenWithoutChecks);
    }
    Ok(())
}

/// Machines deploy creates for a group that has none and no remembered count (§3.3 step 6),
/// not counting the standby of [`gets_standby`].
pub fn new_group_count(spec: &ReleaseSpec, group: &str) -> u32 {
    let has_services = spec
        .groups
        .get(group)
        .is_some_and(|c| !c.services.is_empty());
    let has_mounts = spec.groups.get(group).is_some_and(|c| !c.mounts.is_empty());
    if has_services && spec.deploy.ha && !has_mounts {
        2
    } else {
        1
    }
}

/// Whether deploy gives a new group a standby machine (§3.3 step 6): with `--ha` (the
/// default), a group with no services and no mounts gets 1 machine and 1 standby — a stopped
/// copy watching it (`standbys = [first id]`, `FLY_STANDBY_FOR`), which the platform starts
/// only when the watched machine's host fails.
pub fn gets_standby(spec: &ReleaseSpec, group: &str) -> bool {
    spec.deploy.ha
        && spec
            .groups
            .get(group)
            .is_some_and(|c| c.services.is_empty() && c.mounts.is_empty())
}

/// Writes the labels every deploy- or scale-managed machine carries (§2.4, §5.1).
pub fn apply_release_metadata(cfg: &mut MachineConfig, group: &str, release: &ReleaseMeta) {
    cfg.metadata
        .insert(PLATFORM_VERSION.into(), PLATFORM_VERSION_V2.into());
    cfg.metadata.insert(PROCESS_GROUP.into(), group.into());
    cfg.metadata.remove(LEGACY_PROCESS_GROUP);
    cfg.metadata.insert(RELEASE_ID.into(), release.id.clone());
    cfg.metadata
        .insert(RELEASE_VERSION.into(), release.version.to_string());
    cfg.env.insert("FLY_PROCESS_GROUP".into(), group.into());
}

/// The config an existing machine gets when deployed into `group` (§2.4): start from the
/// machine's config; replace command, services, checks, env, mounts, restart, metrics, statics,
/// files and stop_config from the group's config; merge metadata; replace the guest only when a
/// `[[vm]]` matched (`group_cfg.guest` is `Some`); keep everything else (schedule, auto_destroy,
/// dns, standbys…). A standby keeps `FLY_STANDBY_FOR` through the env replacement, unless the
/// group now has services: then it stops being a standby (§3.4). Group commands are CMD:
/// `init.entrypoint`/`init.exec` come only from the group config (i.e. `[experimental]`),
/// never from `[processes]`.
pub fn config_for_update(
    existing: &MachineConfig,
    group_cfg: &MachineConfig,
    group: &str,
    image: &str,
    release: &ReleaseMeta,
) -> MachineConfig {
    let mut cfg = existing.clone();
    cfg.image = image.to_string();
    cfg.init.cmd = group_cfg.init.cmd.clone();
    cfg.init.entrypoint = group_cfg.init.entrypoint.clone();
    cfg.init.exec = group_cfg.init.exec.clone();
    cfg.init.swap_size_mb = group_cfg.init.swap_size_mb;
    cfg.services = group_cfg.services.clone();
    cfg.checks = group_cfg.checks.clone();
    cfg.env = group_cfg.env.clone();
    cfg.mounts = merge_mounts(&existing.mounts, &group_cfg.mounts);
    cfg.restart = group_cfg.restart.clone();
    cfg.metrics = group_cfg.metrics.clone();
    cfg.statics = group_cfg.statics.clone();
    cfg.files = group_cfg.files.clone();
    cfg.stop_config = group_cfg.stop_config.clone();
    for (k, v) in &group_cfg.metadata {
        cfg.metadata.insert(k.clone(), v.clone());
    }
    if let Some(guest) = &group_cfg.guest {
        cfg.guest = Some(guest.clone());
        cfg.size = None;
    }
    if cfg.services.is_empty() {
        let watched = std::mem::take(&mut cfg.standbys);
        cfg.set_standby_for(watched);
    } else {
        cfg.clear_standby();
    }
    apply_release_metadata(&mut cfg, group, release);
    cfg
}

/// The mounts an updated machine gets: the group's, keeping the volume the machine has when
/// the names agree (the group's mount names a volume, the machine's carries its id). A changed
/// `destination` is applied in place (§3.4).
pub fn merge_mounts(existing: &[MachineMount], group: &[MachineMount]) -> Vec<MachineMount> {
    let mut mounts = group.to_vec();
    if let (Some(have), Some(want)) = (existing.first(), mounts.first_mut()) {
        if have.name == want.name || want.name.is_empty() {
            want.volume = have.volume.clone();
            want.name = have.name.clone();
        }
    }
    mounts
}

/// Why a machine's volume no longer fits its group's `[[mounts]]`, if it does not: the machine
/// is then replaced (a machine gets a volume only when created, and keeps it for life), and
/// its volume is kept, unattached (§3.4; flyctl refuses a renamed source, Aloft replaces).
/// A changed `destination` alone is no reason: it is applied in place.
pub fn mount_change(machine: &MachineConfig, group_cfg: &MachineConfig) -> Option<String> {
    match (machine.mounts.first(), group_cfg.mounts.first()) {
        (None, None) => None,
        (Some(have), Some(want)) if have.name == want.name => None,
        (Some(have), Some(want)) => Some(format!(
            "its volume {} is named {:?} and the group's [[mounts]] source is now {:?}; the new \
             machine gets a volume {:?} (volume {} is kept, unattached)",
            have.volume, have.name, want.name, want.name, have.volume
        )),
        (Some(have), None) => Some(format!(
            "the group has no [[mounts]] any more; the new machine has no volume (volume {} \
             {:?}, mounted at {}, is kept, unattached: `aloft volumes list`)",
            have.volume, have.name, have.path
        )),
        (None, Some(want)) => Some(format!(
            "the group now mounts a volume {:?} at {}, and a machine gets its volume only when \
             created; the new machine gets one",
            want.name, want.path
        )),
    }
}

/// The config of a new machine of `group`: the group's config, the release image and labels,
/// and `guest`.
pub fn config_for_new(
    group_cfg: &MachineConfig,
    group: &str,
    image: &str,
    release: &ReleaseMeta,
    guest: Guest,
) -> MachineConfig {
    let mut cfg = group_cfg.clone();
    cfg.image = image.to_string();
    cfg.guest = Some(guest);
    cfg.size = None;
    cfg.clear_standby();
    apply_release_metadata(&mut cfg, group, release);
    cfg
}

/// The guest of a new machine of `group` (deploy and scale alike): the group's `[[vm]]`; else
/// the guest of the group's first machine (by id); else the default group's; else the first
/// group's (sorted) that has one; else `shared-cpu-1x`.
pub fn guest_for_new(spec: &ReleaseSpec, group: &str, machines: &[Machine]) -> Guest {
    if let Some(g) = spec.groups.get(group).and_then(|c| c.guest.clone()) {
        return g;
    }
    let mut managed: Vec<&Machine> = machines.iter().filter(|m| is_managed(m)).collect();
    managed.sort_by(|a, b| a.id.cmp(&b.id));
    let first_guest = |g: &str| {
        managed
            .iter()
            .find(|m| effective_group(m, &spec.default_group) == g)
            .and_then(|m| m.config.guest.clone())
    };
    if let Some(guest) = first_guest(group).or_else(|| first_guest(&spec.default_group)) {
        return guest;
    }
    for name in spec.groups.keys() {
        if let Some(guest) = first_guest(name) {
            return guest;
        }
    }
    Guest::from_preset(aloft_api::guest::DEFAULT_VM_SIZE).unwrap_or_default()
}

/// What remains to be done for a release, given the machines that exist now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    /// Planned destroys whose machine still exists.
    pub destroy: Vec<PlannedDestroy>,
    pub create: Vec<CreateWork>,
    /// Machines not yet carrying this release, in group then id order.
    pub update: Vec<UpdateWork>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.destroy.is_empty() && self.create.is_empty() && self.update.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreateWork {
    pub group: String,
    pub region: Option<String>,
    pub config: MachineConfig,
    /// Created stopped and not waited on (a standby).
    pub skip_launch: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UpdateWork {
    pub id: String,
    pub group: String,
    /// The machine's region (a blue-green deploy puts its green there).
    pub region: String,
    /// `instance_id` seen when planning, sent as `current_version`.
    pub current_version: String,
    pub config: MachineConfig,
    pub skip_launch: bool,
    /// The machine was started when seen (rolling batches treat warm and cold machines apart).
    pub warm: bool,
}

/// Whether `m` already carries `release` as a member of `group`: it was created or updated by
/// this release, so re-running the release leaves it alone.
pub fn carries_release(m: &Machine, group: &str, release: &ReleaseMeta) -> bool {
    let md = &m.config.metadata;
    md.get(RELEASE_ID) == Some(&release.id)
        && md.get(PROCESS_GROUP).map(String::as_str) == Some(group)
}

/// The convergent step: from the release's frozen plan and the live machines, what must still
/// be destroyed, created and updated. Running the work and calling this again yields empty work.
pub fn converge(release: &Release, machines: &[Machine]) -> Work {
    let spec = &release.spec;
    let meta = release.meta();
    let live: BTreeMap<&str, &Machine> = machines
        .iter()
        .filter(|m| m.state.is_active())
        .map(|m| (m.id.as_str(), m))
        .collect();
    let destroy: Vec<PlannedDestroy> = release
        .plan
        .destroy
        .iter()
        .filter(|d| live.contains_key(d.id.as_str()))
        .cloned()
        .collect();
    let doomed: BTreeSet<&str> = destroy.iter().map(|d| d.id.as_str()).collect();

    let mut managed: Vec<&Machine> = machines
        .iter()
        .filter(|m| is_managed(m) && !doomed.contains(m.id.as_str()))
        .collect();
    managed.sort_by(|a, b| a.id.cmp(&b.id));

    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut update = Vec::new();
    for m in &managed {
        let group = effective_group(m, &spec.default_group);
        let Some(group_cfg) = spec.groups.get(group) else {
            continue;
        };
        *counts.entry(group).or_default() += 1;
        if !release.plan.groups.contains(group) || carries_release(m, group, &meta) {
            continue;
        }
        let config = config_for_update(&m.config, group_cfg, group, &spec.image, &meta);
        let skip_launch = release.plan.keep_stopped.contains(&m.id) || !meant_to_run(m.state);
        update.push(UpdateWork {
            id: m.id.clone(),
            group: group.to_string(),
            region: m.region.clone(),
            current_version: m.instance_id.clone(),
            config,
            skip_launch,
            warm: m.state == MachineState::Started,
        });
    }
    update.sort_by(|a, b| (&a.group, &a.id).cmp(&(&b.group, &b.id)));

    let mut create = Vec::new();
    for (group, target) in &release.plan.create {
        let Some(group_cfg) = spec.groups.get(group) else {
            continue;
        };
        let have = counts.get(group.as_str()).copied().unwrap_or(0);
        if have >= *target {
            continue;
        }
        let members = || {
            managed
                .iter()
                .filter(|m| effective_group(m, &spec.default_group) == group)
        };
        let primaries: Vec<&&Machine> = members().filter(|m| !m.config.is_standby()).collect();
        let standbys = members().count() - primaries.len();
        let with_standby = release.plan.standby.contains(group);
        let want = if with_standby { target - 1 } else { *target };
        let guest = guest_for_new(spec, group, machines);
        let config = config_for_new(group_cfg, group, &spec.image, &meta, guest);
        for _ in (primaries.len() as u32)..want {
            create.push(CreateWork {
                group: group.clone(),
                region: spec.primary_region.clone(),
                config: config.clone(),
                skip_launch: false,
            });
        }
        // The standby copies the group's first machine once it exists (the next pass).
        if let Some(first) = primaries.first().filter(|_| with_standby && standbys == 0) {
            let mut config = config.clone();
            config.set_standby_for(vec![first.id.clone()]);
            create.push(CreateWork {
                group: group.clone(),
                region: Some(first.region.clone()),
                config,
                skip_launch: true,
            });
        }
    }
    Work {
        destroy,
        create,
        update,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aloft_api::MachineService;

    pub fn machine(id: &str, group: &str, state: MachineState, region: &str) -> Machine {
        let mut config = MachineConfig {
            image: "old".into(),
            ..MachineConfig::default()
        };
        config
            .metadata
            .insert(PLATFORM_VERSION.into(), PLATFORM_VERSION_V2.into());
        if !group.is_empty() {
            config.metadata.insert(PROCESS_GROUP.into(), group.into());
        }
        config.guest = Guest::from_preset("shared-cpu-1x");
        Machine {
            instance_id: format!("{id}-v1"),
            created_at: format!("2026-01-01T00:00:{:02}Z", id.len()),
            ..Machine::new(id, region, state, config)
        }
    }

    pub fn group_cfg(cmd: &str, services: bool) -> MachineConfig {
        let mut c = MachineConfig::default();
        c.init.cmd = Some(cmd.split(' ').map(String::from).collect());
        if services {
            c.services.push(MachineService {
                internal_port: 8080,
                protocol: "tcp".into(),
                ..Default::default()
            });
        }
        c.env.insert("GREETING".into(), "hi".into());
        c
    }

    pub fn spec(groups: &[(&str, bool)]) -> ReleaseSpec {
        ReleaseSpec {
            image: "img@sha256:new".into(),
            groups: groups
                .iter()
                .map(|(g, s)| (g.to_string(), group_cfg(&format!("run {g}"), *s)))
                .collect(),
            default_group: groups
                .iter()
                .map(|(g, _)| g.to_string())
                .find(|g| g == "app")
                .unwrap_or_else(|| {
                    let mut names: Vec<String> =
                        groups.iter().map(|(g, _)| g.to_string()).collect();
                    names.sort();
                    names[0].clone()
                }),
            primary_region: Some("gru".into()),
            ..ReleaseSpec::default()
        }
    }

    pub fn release(spec: ReleaseSpec, plan: FrozenPlan, version: u64) -> Release {
        Release {
            id: format!("rel{version}"),
            version,
            app: "a".into(),
            status: crate::spec::ReleaseStatus::Pending,
            spec,
            plan,
            desired_counts: BTreeMap::new(),
            image_digest: None,
            created_at: String::new(),
            updated_at: String::new(),
            error: None,
            scale: None,
            group_counts: BTreeMap::new(),
            rollback_of: None,
            created_by: None,
            phase: None,
        }
    }

    #[test]
    fn first_deploy_creates_one_or_two_per_group() {
        let s = spec(&[("web", true), ("cron", false)]);
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        assert!(plan.first_deploy);
        // cron: 1 machine and its standby (flyctl-behaviour §3.3 step 6).
        assert_eq!(
            plan.frozen.create,
            BTreeMap::from([("cron".into(), 2), ("web".into(), 2)])
        );
        assert!(plan.frozen.destroy.is_empty());
        let text = plan.describe_group_changes().unwrap();
        assert!(text.starts_with("This deployment will:"), "{text}");
        assert!(text.contains(" * create 2 \"web\" machines"), "{text}");
        assert!(
            text.contains(" * create 1 \"cron\" machine and 1 standby machine for it\n"),
            "{text}"
        );
    }

    #[test]
    fn a_new_group_without_services_or_mounts_gets_a_standby() {
        let s = spec(&[("web", true), ("cron", false)]);
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        assert_eq!(
            plan.frozen.create,
            BTreeMap::from([("cron".into(), 2), ("web".into(), 2)])
        );
        assert_eq!(plan.frozen.standby, BTreeSet::from(["cron".to_string()]));
        assert_eq!(plan.counts["cron"], 2, "the standby counts as a machine");
        let text = plan.describe_group_changes().unwrap();
        assert!(
            text.contains(" * create 1 \"cron\" machine and 1 standby machine for it\n"),
            "{text}"
        );
        assert!(text.contains(" * create 2 \"web\" machines\n"), "{text}");

        // The first pass creates the machine, the next its standby: a stopped copy watching it.
        let r = release(s.clone(), plan.frozen, 1);
        let work = converge(&r, &[]);
        let cron: Vec<&CreateWork> = work.create.iter().filter(|c| c.group == "cron").collect();
        assert_eq!(cron.len(), 1);
        assert!(!cron[0].skip_launch && !cron[0].config.is_standby());
        let mut first = machine("c1", "cron", MachineState::Started, "gru");
        first.config = cron[0].config.clone();
        let work = converge(&r, std::slice::from_ref(&first));
        let cron: Vec<&CreateWork> = work.create.iter().filter(|c| c.group == "cron").collect();
        assert_eq!(cron.len(), 1);
        let standby = cron[0];
        assert!(standby.skip_launch, "a standby is created stopped");
        assert_eq!(standby.config.standbys, ["c1"]);
        assert_eq!(standby.config.env["FLY_STANDBY_FOR"], "c1");
        assert_eq!(standby.region.as_deref(), Some("gru"));
        let mut same = standby.config.clone();
        same.clear_standby();
        assert_eq!(same, first.config, "otherwise the first machine's config");
        let mut second = machine("c2", "cron", MachineState::Stopped, "gru");
        second.config = standby.config.clone();
        let work = converge(&r, &[first, second]);
        assert!(work.create.iter().all(|c| c.group != "cron"), "one standby");
    }

    #[test]
    fn a_rollback_rebuilds_a_group_with_its_standby() {
        let s = spec(&[("web", true), ("worker", false)]);
        let ms = vec![machine("w1", "web", MachineState::Started, "gru")];
        let counts = BTreeMap::from([("web".to_string(), 1), ("worker".to_string(), 2)]);
        let plan = plan_deploy_restoring(&s, &ms, &BTreeMap::new(), None, Some(&counts)).unwrap();
        assert_eq!(plan.frozen.create["worker"], 2);
        assert_eq!(plan.frozen.standby, BTreeSet::from(["worker".to_string()]));
    }

    #[test]
    fn no_standby_without_ha_or_with_mounts() {
        let mut s = spec(&[("cron", false), ("db", false)]);
        s.groups
            .get_mut("db")
            .unwrap()
            .mounts
            .push(Default::default());
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        assert_eq!(plan.frozen.standby, BTreeSet::from(["cron".to_string()]));
        assert_eq!(plan.frozen.create["db"], 1);
        s.deploy.ha = false;
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        assert!(plan.frozen.standby.is_empty());
        assert_eq!(
            plan.frozen.create,
            BTreeMap::from([("cron".into(), 1), ("db".into(), 1)])
        );
        let text = plan.describe_group_changes().unwrap();
        assert!(!text.contains("standby"), "{text}");
    }

    #[test]
    fn a_standby_is_updated_left_stopped_and_keeps_watching() {
        let s = spec(&[("cron", false)]);
        let first = machine("c1", "cron", MachineState::Started, "gru");
        let mut standby = machine("c2", "cron", MachineState::Stopped, "gru");
        standby.config.set_standby_for(vec!["c1".into()]);
        let ms = vec![first, standby];
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        assert!(plan.frozen.create.is_empty(), "the group has its machines");
        let work = converge(&release(s, plan.frozen, 2), &ms);
        let u = work.update.iter().find(|u| u.id == "c2").unwrap();
        assert!(u.skip_launch, "a standby is updated but left stopped");
        assert_eq!(u.config.standbys, ["c1"]);
        assert_eq!(
            u.config.env["FLY_STANDBY_FOR"], "c1",
            "the env replacement keeps FLY_STANDBY_FOR"
        );
        assert_eq!(u.config.env["GREETING"], "hi");
    }

    #[test]
    fn a_group_that_gains_services_drops_its_standbys() {
        let s = spec(&[("cron", true)]);
        let mut standby = machine("c2", "cron", MachineState::Stopped, "gru");
        standby.config.set_standby_for(vec!["c1".into()]);
        let ms = vec![machine("c1", "cron", MachineState::Started, "gru"), standby];
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        let work = converge(&release(s, plan.frozen, 2), &ms);
        let u = work.update.iter().find(|u| u.id == "c2").unwrap();
        assert!(u.config.standbys.is_empty());
        assert!(!u.config.env.contains_key("FLY_STANDBY_FOR"));
    }

    #[test]
    fn removed_group_is_destroyed_and_listed() {
        let s = spec(&[("web", true)]);
        let ms = vec![
            machine("m1", "web", MachineState::Started, "gru"),
            machine("m2", "cron", MachineState::Started, "gru"),
        ];
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        assert!(plan.needs_confirmation());
        assert_eq!(plan.destroy_ids(), vec!["m2".to_string()]);
        assert!(plan.frozen.create.is_empty());
        let text = plan.describe_group_changes().unwrap();
        assert!(text.contains("Process groups have changed"), "{text}");
        assert!(
            text.contains(" * destroy 1 \"cron\" machine (m2)"),
            "{text}"
        );
    }

    #[test]
    fn remembered_zero_stays_zero_and_remembered_count_is_used() {
        let s = spec(&[("web", true), ("cron", false), ("worker", false)]);
        let ms = vec![machine("m1", "web", MachineState::Started, "gru")];
        let counts = BTreeMap::from([("cron".to_string(), 0), ("worker".to_string(), 3)]);
        let plan = plan_deploy(&s, &ms, &counts, None).unwrap();
        assert_eq!(plan.frozen.create, BTreeMap::from([("worker".into(), 3)]));
    }

    #[test]
    fn update_only_creates_nothing() {
        let mut s = spec(&[("web", true)]);
        s.deploy.update_only = true;
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        assert!(plan.frozen.create.is_empty());
    }

    #[test]
    fn process_groups_limit_the_deploy() {
        let mut s = spec(&[("web", true), ("cron", false), ("worker", false)]);
        s.deploy.ha = false;
        let ms = vec![
            machine("m1", "web", MachineState::Started, "gru"),
            machine("m2", "gone", MachineState::Started, "gru"),
            machine("m3", "cron", MachineState::Started, "gru"),
        ];
        let plan = plan_deploy(
            &s,
            &ms,
            &BTreeMap::new(),
            Some(&["web".to_string(), "worker".to_string()]),
        )
        .unwrap();
        assert!(
            plan.frozen.destroy.is_empty(),
            "filtered deploys never destroy"
        );
        assert_eq!(plan.frozen.create, BTreeMap::from([("worker".into(), 1)]));
        assert_eq!(
            plan.updates
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>(),
            vec!["m1"]
        );
        let err = plan_deploy(&s, &ms, &BTreeMap::new(), Some(&["nope".to_string()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown process group \"nope\" in --process-groups; the config defines ['cron', 'web', 'worker']"
        );
    }

    #[test]
    fn groupless_machines_are_adopted_and_unmanaged_ignored() {
        let s = spec(&[("app", true)]);
        let mut unmanaged = machine("m9", "other", MachineState::Started, "gru");
        unmanaged.config.metadata.remove(PLATFORM_VERSION);
        let ms = vec![machine("m1", "", MachineState::Started, "gru"), unmanaged];
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        assert!(plan.frozen.destroy.is_empty());
        assert!(plan.frozen.create.is_empty());
        assert_eq!(plan.updates.len(), 1);
        assert!(plan.updates[0].adopted);
        let r = release(s, plan.frozen, 1);
        let work = converge(&r, &ms);
        assert_eq!(work.update.len(), 1);
        assert_eq!(work.update[0].config.process_group(), "app");
    }

    #[test]
    fn a_rollback_brings_each_group_to_its_count() {
        let mut s = spec(&[("web", true), ("worker", false)]);
        s.deploy.ha = false;
        let ms = vec![
            machine("w1", "web", MachineState::Started, "gru"),
            machine("w2", "web", MachineState::Started, "gru"),
            machine("w3", "web", MachineState::Started, "bog"),
            machine("w4", "web", MachineState::Stopped, "bog"),
            machine("w5", "web", MachineState::Started, "gru"),
        ];
        let counts = BTreeMap::from([("web".to_string(), 2), ("worker".to_string(), 3)]);
        let plan = plan_deploy_restoring(&s, &ms, &BTreeMap::new(), None, Some(&counts)).unwrap();
        // The stopped one first, then from gru (3 there, 1 left in bog), newest id first.
        let mut doomed = plan.destroy_ids();
        doomed.sort();
        assert_eq!(doomed, ["w2", "w4", "w5"]);
        assert!(plan.needs_confirmation());
        assert_eq!(
            plan.frozen.create,
            BTreeMap::from([("worker".to_string(), 3)])
        );
        assert_eq!(plan.counts, counts);
        let work = converge(&release(s, plan.frozen, 2), &ms);
        assert_eq!(work.destroy.len(), 3);
        assert_eq!(work.create.len(), 3);
        assert_eq!(work.update.len(), 2);
        // Without counts a deploy plan is unchanged: nothing destroyed, worker gets its one.
        let mut s = spec(&[("web", true), ("worker", false)]);
        s.deploy.ha = false;
        let plain = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        assert!(plain.frozen.destroy.is_empty());
        assert_eq!(plain.counts["web"], 5);
        assert_eq!(plain.counts["worker"], 1);
    }

    #[test]
    fn stopped_machines_stay_stopped() {
        let s = spec(&[("web", true)]);
        let ms = vec![
            machine("m1", "web", MachineState::Stopped, "gru"),
            machine("m2", "web", MachineState::Started, "gru"),
        ];
        let plan = plan_deploy(&s, &ms, &BTreeMap::new(), None).unwrap();
        assert_eq!(plan.frozen.keep_stopped, BTreeSet::from(["m1".to_string()]));
        let work = converge(&release(s, plan.frozen, 1), &ms);
        let by_id: BTreeMap<_, _> = work
            .update
            .iter()
            .map(|u| (u.id.as_str(), u.skip_launch))
            .collect();
        assert_eq!(by_id, BTreeMap::from([("m1", true), ("m2", false)]));
    }

    #[test]
    fn update_replaces_group_fields_and_keeps_the_rest() {
        let mut existing = machine("m1", "web", MachineState::Started, "gru").config;
        existing.schedule = Some("hourly".into());
        existing.auto_destroy = true;
        existing.env.insert("SET_BY_HAND".into(), "x".into());
        existing.metadata.insert("role".into(), "primary".into());
        existing.init.entrypoint = Some(vec!["/old-entry".into()]);
        existing.guest = Guest::from_preset("performance-2x");
        let group = group_cfg("python3 web.py", true);
        let meta = ReleaseMeta {
            id: "r7".into(),
            version: 7,
        };
        let cfg = config_for_update(&existing, &group, "web", "img2", &meta);
        assert_eq!(cfg.image, "img2");
        assert_eq!(cfg.init.cmd, Some(vec!["python3".into(), "web.py".into()]));
        assert_eq!(
            cfg.init.entrypoint, None,
            "entrypoint only comes from [experimental]"
        );
        assert_eq!(cfg.services.len(), 1);
        assert_eq!(cfg.schedule.as_deref(), Some("hourly"));
        assert!(cfg.auto_destroy);
        assert!(!cfg.env.contains_key("SET_BY_HAND"), "env is replaced");
        assert_eq!(cfg.env["FLY_PROCESS_GROUP"], "web");
        assert_eq!(cfg.metadata["role"], "primary", "metadata is merged");
        assert_eq!(cfg.metadata[RELEASE_VERSION], "7");
        assert_eq!(cfg.metadata[RELEASE_ID], "r7");
        assert_eq!(cfg.metadata[PLATFORM_VERSION], "v2");
        assert_eq!(
            cfg.guest,
            Guest::from_preset("performance-2x"),
            "no [[vm]]: guest kept"
        );
        let mut with_vm = group.clone();
        with_vm.guest = Guest::from_preset("shared-cpu-2x");
        let cfg = config_for_update(&existing, &with_vm, "web", "img2", &meta);
        assert_eq!(
            cfg.guest,
            Guest::from_preset("shared-cpu-2x"),
            "[[vm]] matched: guest replaced"
        );
    }

    #[test]
    fn moved_machine_gets_its_new_group_command() {
        let s = spec(&[("app", true), ("web", true)]);
        let mut m = machine("m1", "web", MachineState::Started, "gru");
        m.config.metadata.insert(PROCESS_GROUP.into(), "app".into());
        m.config.init.cmd = Some(vec!["run".into(), "web".into()]);
        let plan = plan_deploy(&s, std::slice::from_ref(&m), &BTreeMap::new(), None).unwrap();
        let work = converge(&release(s, plan.frozen, 2), &[m]);
        let u = work.update.iter().find(|u| u.id == "m1").unwrap();
        assert_eq!(u.group, "app");
        assert_eq!(u.config.init.cmd, Some(vec!["run".into(), "app".into()]));
    }

    #[test]
    fn new_guest_resolution_order() {
        let mut s = spec(&[("web", true), ("cron", false)]);
        let mut big = machine("m1", "web", MachineState::Started, "gru");
        big.config.guest = Guest::from_preset("performance-2x");
        assert_eq!(
            guest_for_new(&s, "cron", &[]),
            Guest::from_preset("shared-cpu-1x").unwrap()
        );
        assert_eq!(
            guest_for_new(&s, "cron", std::slice::from_ref(&big)),
            Guest::from_preset("performance-2x").unwrap()
        );
        s.groups.get_mut("cron").unwrap().guest = Guest::from_preset("shared-cpu-4x");
        assert_eq!(
            guest_for_new(&s, "cron", &[big]),
            Guest::from_preset("shared-cpu-4x").unwrap()
        );
    }

    #[test]
    fn converge_is_empty_once_done() {
        let s = spec(&[("web", true)]);
        let plan = plan_deploy(&s, &[], &BTreeMap::new(), None).unwrap();
        let r = release(s, plan.frozen, 1);
        let work = converge(&r, &[]);
        assert_eq!(work.create.len(), 2);
        let ms: Vec<Machine> = work
            .create
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut m = machine(&format!("n{i}"), "web", MachineState::Started, "gru");
                m.config = c.config.clone();
                m
            })
            .collect();
        assert!(converge(&r, &ms).is_empty());
    }
}
