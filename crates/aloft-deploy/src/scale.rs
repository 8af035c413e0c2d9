//! Scale planning (flyctl-behaviour §4), pure: `scale count` ([`parse_counts`], [`plan_count`]),
//! `scale vm` / `scale memory` ([`plan_guest_work`], checked by [`plan_guest_change`]) and the
//! rows of `scale show` ([`show_groups`]).
//!
//! Region placement of `scale count`:
//! * with `--region a,b,…` the group's machines *in those regions* are spread evenly over them,
//!   in the order given (`web=4 --region gru,bog` → 2 + 2; `web=5` → 3 + 2); machines in other
//!   regions are kept and ignored, as flyctl does;
//! * without it, new machines go one by one to the region of the group that has fewest (ties: the
//!   order of the group's regions by first machine id), starting from the group's regions, else
//!   the primary region, else the regions of the app's other machines.
//!
//! Scale-down (documented, deterministic) keeps the spread even: each machine removed comes
//! from the region with most machines of the group left, and inside a region machines that are
//! not running go first (stopped, suspended, created, failed…), then the newest (`created_at`,
//! then id, descending); between regions with as many machines, the one whose next machine
//! comes first in that order gives it (a stopped machine before a running one). flyctl instead
//! removes round-robin from the second region on, whatever each region has left, and destroys
//! the first machines of a region in listing order, running or not (flyctl-behaviour §4.1,
//! a **[quirk]**): `gru` 3 + `bog` 1 scaled to 2 is `gru` 2 + `bog` 0 there, 1 + 1 here.
//! With `--region`, each listed region gets its even share and the order applies inside it.
//!
//! New machines take the group's current release config and [`crate::plan::guest_for_new`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use aloft_api::regions::is_known_region;
use aloft_api::volumes::Volume;
use aloft_api::{Guest, GuestError, Machine, MachineConfig, MachineState, VmPreset};
use serde::{Deserialize, Serialize};

use crate::plan::{
    config_for_new, effective_group, fmt_groups, guest_for_new, is_managed, meant_to_run,
    CreateWork,
};
use crate::spec::{GuestSet, ReleaseMeta, ReleaseSpec};

/// Why a scale request is refused. Nothing has been changed when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    #[error("unknown process group {group:?}; this app's groups are {}. Use `scale count N -g GROUP` or `scale count GROUP=N …`", fmt_groups(.known))]
    UnknownGroup { group: String, known: Vec<String> },
    #[error("invalid count {arg:?}: expected N, +N, -N or GROUP=N (e.g. `web=8`, `web=+2`)")]
    BadCount { arg: String },
    #[error("{arg:?}: +0 and -0 change nothing; give a non-zero relative count")]
    ZeroRelative { arg: String },
    #[error("mixed count forms: use either a single N with -g, or GROUP=N for every group")]
    MixedForms,
    #[error("group {group:?} is given twice")]
    DuplicateGroup { group: String },
    #[error("no count given: e.g. `scale count 2` or `scale count web=2 worker=1`")]
    NoCounts,
    #[error("unknown region {region:?}; see `aloft platform regions`")]
    UnknownRegion { region: String },
    #[error("group {group:?} needs {expected} machines but {regions} region(s) × --max-per-region {max} allow only {capacity}")]
    OverCapacity {
        group: String,
        expected: u32,
        regions: usize,
        max: u32,
        capacity: u64,
    },
    #[error("scaling an app with multiple process groups requires specifying a group with '--process-group <name>': {}", fmt_groups(.known))]
    GroupRequired { known: Vec<String> },
    #[error("this app has several process groups, {}: say which to scale with `scale count N -g GROUP` (or `--process-group GROUP`), or `scale count {}`", fmt_groups(.known), count_pairs(.known))]
    CountGroupRequired { known: Vec<String> },
    #[error("no active machines in process group {group:?}")]
    NoMachines { group: String },
    #[error("unknown VM size {size:?}; valid sizes: {}", .suggestions.join(", "))]
    UnknownSize {
        size: String,
        suggestions: Vec<String>,
    },
    #[error("invalid memory {input:?}: expected a size like 4096, 512mb or 4gb")]
    BadMemory { input: String },
    #[error("invalid guest for group {group:?}: {source}")]
    Guest { group: String, source: GuestError },
}

/// `web=N worker=N`: the `GROUP=N` form for these groups, for messages.
fn count_pairs(known: &[String]) -> String {
    known
        .iter()
        .map(|g| format!("{g}=N"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One group's requested count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountSpec {
    Absolute(u32),
    /// `+N` / `-N`: relative to the group's current machine count (all regions); clamps at 0.
    Relative(i64),
}

impl CountSpec {
    /// As the user writes it (`8`, `+2`, `-1`); [`CountSpec::parse`] reads it back.
    pub fn to_arg(self) -> String {
        match self {
            CountSpec::Absolute(n) => n.to_string(),
            CountSpec::Relative(d) => format!("{d:+}"),
        }
    }

    /// Reads `8`, `+2` or `-1`; `arg` is the whole argument, for the error.
    pub fn parse(arg: &str, raw: &str) -> Result<CountSpec, ScaleError> {
        parse_one(arg, raw)
    }
}

fn parse_one(arg: &str, raw: &str) -> Result<CountSpec, ScaleError> {
    let bad = || ScaleError::BadCount {
        arg: arg.to_string(),
    };
    if let Some(rest) = raw
        .strip_prefix('+')
        .map(|r| (1i64, r))
        .or_else(|| raw.strip_prefix('-').map(|r| (-1, r)))
    {
        let n: i64 = rest.1.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(ScaleError::ZeroRelative {
                arg: arg.to_string(),
            });
        }
        if n < 0 {
            return Err(bad());
        }
        return Ok(CountSpec::Relative(rest.0 * n));
    }
    raw.parse::<u32>()
        .map(CountSpec::Absolute)
        .map_err(|_| bad())
}

/// Reads `scale count` arguments: a single `N`/`+N`/`-N` (for `group`, else the app's only
/// group), or `GROUP=N` pairs. Group names are checked against `known`.
///
/// A single count without `-g` in an app of several groups is refused, naming the groups and
/// both forms. flyctl applies it to a group literally named `app` and refuses it only when there
/// is none; guessing which group a bare number meant is what surprised its users
/// (flyctl-behaviour §8.3), so here the user always says it.
pub fn parse_counts(
    args: &[String],
    group: Option<&str>,
    known: &[String],
) -> Result<BTreeMap<String, CountSpec>, ScaleError> {
    if args.is_empty() {
        return Err(ScaleError::NoCounts);
    }
    let check = |g: &str| {
        if known.iter().any(|k| k == g) {
            Ok(())
        } else {
            Err(ScaleError::UnknownGroup {
                group: g.to_string(),
                known: known.to_vec(),
            })
        }
    };
    let mut out = BTreeMap::new();
    if args.len() == 1 && !args[0].contains('=') {
        let count = parse_one(&args[0], &args[0])?;
        let g = match (group, known) {
            (Some(g), _) => g,
            (None, [only]) => only.as_str(),
            (None, _) => {
                return Err(ScaleError::CountGroupRequired {
                    known: known.to_vec(),
                })
            }
        };
        check(g)?;
        out.insert(g.to_string(), count);
        return Ok(out);
    }
    for arg in args {
        let Some((g, n)) = arg.split_once('=') else {
            return Err(ScaleError::MixedForms);
        };
        let g = g.trim();
        if g.is_empty() {
            return Err(ScaleError::BadCount { arg: arg.clone() });
        }
        check(g)?;
        if out
            .insert(g.to_string(), parse_one(arg, n.trim())?)
            .is_some()
        {
            return Err(ScaleError::DuplicateGroup {
                group: g.to_string(),
            });
        }
    }
    Ok(out)
}

/// Checks `--region` codes.
pub fn check_regions(regions: &[String]) -> Result<(), ScaleError> {
    for r in regions {
        if !is_known_region(r) {
            return Err(ScaleError::UnknownRegion { region: r.clone() });
        }
    }
    Ok(())
}

/// A `scale count` request after parsing.
#[derive(Clone, Debug, Default)]
pub struct CountRequest {
    pub counts: BTreeMap<String, CountSpec>,
    /// `--region`, in the order given; empty = not given.
    pub regions: Vec<String>,
    /// `--max-per-region`.
    pub max_per_region: Option<u32>,
}

/// The plan of a `scale count`, printed before acting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalePlan {
    /// Per (group, region) change, in group then region-order.
    pub lines: Vec<PlanLine>,
    pub create: Vec<CreateWork>,
    pub destroy: Vec<ScaleDestroy>,
    /// Machines each requested group has once the plan is carried out (what the app remembers).
    pub desired: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLine {
    pub group: String,
    /// Empty when the agent picks the region.
    pub region: String,
    pub delta: i64,
    pub size: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleDestroy {
    pub id: String,
    pub group: String,
    pub region: String,
    /// The machine is running: destroying it needs force.
    pub running: bool,
}

impl ScalePlan {
    pub fn is_noop(&self) -> bool {
        self.create.is_empty() && self.destroy.is_empty()
    }

    /// flyctl's plan lines: `%+4d machines for group 'g' on region 'r' of size 's'`.
    pub fn describe(&self) -> String {
        describe_lines(&self.lines)
    }
}

/// flyctl's plan lines: `%+4d machines for group 'g' on region 'r' of size 's'`.
pub fn describe_lines(lines: &[PlanLine]) -> String {
    let mut out = String::new();
    for l in lines {
        let region = if l.region.is_empty() {
            "(agent's choice)"
        } else {
            l.region.as_str()
        };
        let _ = writeln!(
            out,
            "{:+4} machines for group '{}' on region '{}' of size '{}'",
            l.delta, l.group, region, l.size
        );
    }
    out
}

/// The volume lines under the plan lines (flyctl-behaviour §4.1 step 6): for each line that
/// adds machines of a group with `[[mounts]]`, how many unattached volumes of the mount's
/// `source` in that region it takes (none with `--with-new-volumes`) and how many it creates.
/// The engine makes the same choice when it runs ([`crate::engine`]).
pub fn describe_volume_lines(
    lines: &[PlanLine],
    spec: &ReleaseSpec,
    volumes: &[Volume],
    with_new_volumes: bool,
) -> String {
    let mut out = String::new();
    let mut used: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.delta > 0) {
        let Some(mount) = spec.groups.get(&l.group).and_then(|c| c.mounts.first()) else {
            continue;
        };
        let in_region = |v: &&Volume| l.region.is_empty() || v.region == l.region;
        let free = if with_new_volumes {
            0
        } else {
            volumes
                .iter()
                .filter(|v| v.name == mount.name && v.attached_machine_id.is_none())
                .filter(|v| v.state == aloft_api::volumes::STATE_CREATED)
                .filter(in_region)
                .count()
        };
        let taken = used
            .entry((mount.name.clone(), l.region.clone()))
            .or_default();
        let reuse = free.saturating_sub(*taken).min(l.delta as usize);
        *taken += reuse;
        let create = l.delta as usize - reuse;
        let size = mount
            .size_gb
            .or(spec.deploy.volume_initial_size)
            .unwrap_or(crate::spec::DEFAULT_VOLUME_SIZE_GB);
        if reuse > 0 {
            let _ = writeln!(
                out,
                "     using {reuse} unattached volume(s) '{}' for group '{}'",
                mount.name, l.group
            );
        }
        if create > 0 {
            let _ = writeln!(
                out,
                "     creating {create} volume(s) '{}' of {size} GB for group '{}'",
                mount.name, l.group
            );
        }
    }
    out
}

/// Scale-down order: machines not running first, then the newest (`created_at`, then id,
/// descending).
fn scale_down_cmp(a: &Machine, b: &Machine) -> std::cmp::Ordering {
    meant_to_run(a.state)
        .cmp(&meant_to_run(b.state))
        .then_with(|| b.created_at.cmp(&a.created_at))
        .then_with(|| b.id.cmp(&a.id))
}

/// Orders machines for scale-down ([`scale_down_cmp`]).
fn scale_down_order(machines: &mut [&Machine]) {
    machines.sort_by(|a, b| scale_down_cmp(a, b));
}

/// Plans `scale count` against the app's current release (`spec`, `release`) and machines.
pub fn plan_count(
    req: &CountRequest,
    spec: &ReleaseSpec,
    release: &ReleaseMeta,
    machines: &[Machine],
) -> Result<ScalePlan, ScaleError> {
    check_regions(&req.regions)?;
    let known = spec.group_names();
    let mut managed: Vec<&Machine> = machines.iter().filter(|m| is_managed(m)).collect();
    managed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut plan = ScalePlan::default();
    for (group, count) in &req.counts {
        let Some(group_cfg) = spec.groups.get(group) else {
            return Err(ScaleError::UnknownGroup {
                group: group.clone(),
                known,
            });
        };
        let members: Vec<&Machine> = managed
            .iter()
            .copied()
            .filter(|m| effective_group(m, &spec.default_group) == group)
            .collect();
        let expected = match *count {
            CountSpec::Absolute(n) => n,
            CountSpec::Relative(d) => (members.len() as i64 + d).clamp(0, u32::MAX as i64) as u32,
        };
        let guest = guest_for_new(spec, group, machines);
        let size = guest.size_name();
        let config = config_for_new(group_cfg, group, &spec.image, release, guest);
        let (per_region, outside) = if req.regions.is_empty() {
            let regions = derived_regions(&members, spec, &managed);
            (
                place_incremental(group, expected, &members, &regions, req.max_per_region)?,
                0,
            )
        } else {
            place_even(group, expected, &members, &req.regions, req.max_per_region)?
        };
        let mut total = outside;
        for (region, change) in per_region {
            total += change.keep;
            let delta = change.create as i64 - change.destroy.len() as i64;
            if delta == 0 {
                continue;
            }
            plan.lines.push(PlanLine {
                group: group.clone(),
                region: region.clone(),
                delta,
                size: size.clone(),
            });
            for _ in 0..change.create {
                let region = (!region.is_empty()).then(|| region.clone());
                plan.create.push(CreateWork {
                    group: group.clone(),
                    region,
                    config: config.clone(),
                    skip_launch: false,
                });
            }
            for m in change.destroy {
                plan.destroy.push(ScaleDestroy {
                    id: m.id.clone(),
                    group: group.clone(),
                    region: m.region.clone(),
                    running: meant_to_run(m.state),
                });
            }
        }
        plan.desired.insert(group.clone(), total);
    }
    Ok(plan)
}

#[derive(Default)]
struct RegionChange<'a> {
    /// Machines kept plus created: the region's count afterwards.
    keep: u32,
    create: u32,
    destroy: Vec<&'a Machine>,
}

/// Regions for a group when `--region` is not given: the group's own (by first machine id),
/// else the primary region, else the regions of the app's machines; `""` = agent's choice.
fn derived_regions(members: &[&Machine], spec: &ReleaseSpec, managed: &[&Machine]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in members {
        if !out.contains(&m.region) {
            out.push(m.region.clone());
        }
    }
    if out.is_empty() {
        if let Some(p) = &spec.primary_region {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        for m in managed {
            if !out.contains(&m.region) {
                out.push(m.region.clone());
            }
        }
    }
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

fn capacity_error(group: &str, expected: u32, regions: usize, max: u32) -> ScaleError {
    ScaleError::OverCapacity {
        group: group.into(),
        expected,
        regions,
        max,
        capacity: regions as u64 * max as u64,
    }
}

/// Without `--region`: keep what exists, add to the emptiest region, remove in scale-down order.
fn place_incremental<'a>(
    group: &str,
    expected: u32,
    members: &[&'a Machine],
    regions: &[String],
    max: Option<u32>,
) -> Result<Vec<(String, RegionChange<'a>)>, ScaleError> {
    if let Some(max) = max {
        if (regions.len() as u64) * (max as u64) < expected as u64 {
            return Err(capacity_error(group, expected, regions.len(), max));
        }
    }
    let mut changes: Vec<(String, RegionChange<'a>)> = regions
        .iter()
        .map(|r| (r.clone(), RegionChange::default()))
        .collect();
    // Per region, the machines kept so far, in scale-down order.
    let mut kept: Vec<Vec<&'a Machine>> = Vec::with_capacity(changes.len());
    for (region, change) in changes.iter_mut() {
        let mut here: Vec<&'a Machine> = members
            .iter()
            .copied()
            .filter(|m| &m.region == region)
            .collect();
        scale_down_order(&mut here);
        // Over the per-region maximum: the first ones in scale-down order go.
        let over = max.map_or(0, |max| here.len().saturating_sub(max as usize));
        change.destroy.extend(here.drain(..over));
        change.keep = here.len() as u32;
        kept.push(here);
    }
    let mut total: u32 = changes.iter().map(|(_, c)| c.keep).sum();
    while total > expected {
        let i = region_to_shrink(&kept);
        let m = kept[i].remove(0);
        changes[i].1.destroy.push(m);
        changes[i].1.keep -= 1;
        total -= 1;
    }
    while total < expected {
        let slot = changes
            .iter_mut()
            .filter(|(_, c)| max.is_none_or(|max| c.keep < max))
            .min_by_key(|(_, c)| c.keep)
            .expect("capacity checked");
        slot.1.keep += 1;
        slot.1.create += 1;
        total += 1;
    }
    Ok(changes)
}

/// The region a scale-down takes its next machine from: the one with most machines left, so
/// the spread stays even; among those, the one whose next machine comes first in scale-down
/// order (a stopped one before a running one, then the newest); then the first listed.
fn region_to_shrink(kept: &[Vec<&Machine>]) -> usize {
    let most = kept.iter().map(Vec::len).max().unwrap_or(0);
    kept.iter()
        .enumerate()
        .filter(|(_, here)| here.len() == most && most > 0)
        .min_by(|(_, a), (_, b)| scale_down_cmp(a[0], b[0]))
        .map_or(0, |(i, _)| i)
}

/// With `--region`: targets spread evenly over the regions in the given order; machines of the
/// group in other regions are kept (their count is returned as the second value).
fn place_even<'a>(
    group: &str,
    expected: u32,
    members: &[&'a Machine],
    regions: &[String],
    max: Option<u32>,
) -> Result<(Vec<(String, RegionChange<'a>)>, u32), ScaleError> {
    let mut unique: Vec<String> = Vec::new();
    for r in regions {
        if !unique.contains(r) {
            unique.push(r.clone());
        }
    }
    let n = unique.len() as u32;
    if let Some(max) = max {
        if (n as u64) * (max as u64) < expected as u64 {
            return Err(capacity_error(group, expected, unique.len(), max));
        }
    }
    let listed: BTreeSet<&str> = unique.iter().map(String::as_str).collect();
    let outside = members
        .iter()
        .filter(|m| !listed.contains(m.region.as_str()))
        .count() as u32;
    let mut out = Vec::new();
    for (i, region) in unique.iter().enumerate() {
        let target = expected / n + u32::from((i as u32) < expected % n);
        let mut here: Vec<&'a Machine> = members
            .iter()
            .copied()
            .filter(|m| &m.region == region)
            .collect();
        scale_down_order(&mut here);
        let have = here.len() as u32;
        let mut change = RegionChange {
            keep: target,
            ..RegionChange::default()
        };
        if have > target {
            change
                .destroy
                .extend(here.into_iter().take((have - target) as usize));
        } else {
            change.create = target - have;
        }
        out.push((region.clone(), change));
    }
    Ok((out, outside))
}

/// Parses a memory size with binary units; a bare number is MB (`4096`, `512mb`, `4gb`, `1.5g`).
pub fn parse_memory_mb(input: &str) -> Result<u32, ScaleError> {
    let bad = || ScaleError::BadMemory {
        input: input.to_string(),
    };
    let s = input.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "" | "m" | "mb" | "mib" => 1.0,
        "g" | "gb" | "gib" => 1024.0,
        _ => return Err(bad()),
    };
    let mb = value * factor;
    if !mb.is_finite() || mb <= 0.0 || mb > u32::MAX as f64 || mb.fract() != 0.0 {
        return Err(bad());
    }
    Ok(mb as u32)
}

/// Resolves the group of `scale vm` / `scale memory`: `-g`, else the only group of the app.
pub fn group_for_guest_change(group: Option<&str>, known: &[String]) -> Result<String, ScaleError> {
    match group {
        Some(g) if known.iter().any(|k| k == g) => Ok(g.to_string()),
        Some(g) => Err(ScaleError::UnknownGroup {
            group: g.to_string(),
            known: known.to_vec(),
        }),
        None if known.len() == 1 => Ok(known[0].clone()),
        None => Err(ScaleError::GroupRequired {
            known: known.to_vec(),
        }),
    }
}

/// Group names of the app's managed machines (sorted), and the default group (§2.1: `app` when
/// there is one or no group, else the first): the groups of `scale vm|memory` when the app has
/// no deploy to read them from.
pub fn machine_groups(machines: &[Machine]) -> (Vec<String>, String) {
    let mut groups: Vec<String> = machines
        .iter()
        .filter(|m| is_managed(m))
        .map(|m| m.process_group().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort();
    groups.dedup();
    let default = if groups.iter().any(|g| g == "app") || groups.is_empty() {
        "app".to_string()
    } else {
        groups[0].clone()
    };
    (groups, default)
}

/// One machine's new guest.
#[derive(Clone, Debug, PartialEq)]
pub struct GuestUpdate {
    pub id: String,
    pub current_version: String,
    pub config: MachineConfig,
}

/// The guest a `scale vm SIZE` / `scale memory MB` produces from `current` (§4.2 step 4):
/// SIZE resets the guest to the preset, then MB sets memory; the result is validated (§4.3).
pub fn new_guest(
    current: Option<&Guest>,
    size: Option<&str>,
    memory_mb: Option<u32>,
    group: &str,
) -> Result<Guest, ScaleError> {
    let mut guest = match size {
        Some(name) => Guest::from_preset(name).ok_or_else(|| ScaleError::UnknownSize {
            size: name.to_string(),
            suggestions: VmPreset::suggestions_for(name)
                .into_iter()
                .map(String::from)
                .collect(),
        })?,
        None => current
            .cloned()
            .or_else(|| Guest::from_preset(aloft_api::guest::DEFAULT_VM_SIZE))
            .unwrap_or_default(),
    };
    if let Some(mb) = memory_mb {
        guest.memory_mb = mb;
    }
    guest.validate().map_err(|source| ScaleError::Guest {
        group: group.to_string(),
        source,
    })?;
    Ok(guest)
}

/// Plans `scale vm` / `scale memory` for `group`: every active managed machine of the group,
/// in id order. Validates everything before returning, so nothing is changed on error.
pub fn plan_guest_change(
    machines: &[Machine],
    default_group: &str,
    group: &str,
    size: Option<&str>,
    memory_mb: Option<u32>,
) -> Result<Vec<GuestUpdate>, ScaleError> {
    // A size (with or without memory) is checked once up front, even when the group has no
    // machine; memory alone depends on each machine's CPUs and is checked per machine below.
    if size.is_some() {
        new_guest(None, size, memory_mb, group)?;
    }
    let mut members: Vec<&Machine> = machines
        .iter()
        .filter(|m| is_managed(m) && effective_group(m, default_group) == group)
        .collect();
    if members.is_empty() {
        return Err(ScaleError::NoMachines {
            group: group.to_string(),
        });
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members
        .into_iter()
        .map(|m| {
            let mut config = m.config.clone();
            config.guest = Some(new_guest(m.config.guest.as_ref(), size, memory_mb, group)?);
            config.size = None;
            Ok(GuestUpdate {
                id: m.id.clone(),
                current_version: m.instance_id.clone(),
                config,
            })
        })
        .collect()
}

/// The plan of a `scale vm|memory` as the agent freezes it (and answers a dry run with).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GuestPlan {
    pub group: String,
    /// Machines whose guest changes, in id order: the order they are updated in, one at a time.
    pub updates: Vec<GuestSet>,
    /// Machines of the group that have their new guest already.
    #[serde(default)]
    pub unchanged: Vec<String>,
    /// The group's guest afterwards (its first machine's, by id).
    pub guest: Guest,
}

impl GuestPlan {
    pub fn is_noop(&self) -> bool {
        self.updates.is_empty()
    }

    /// flyctl's closing lines (§4.2 step 5).
    pub fn describe_result(&self) -> String {
        describe_guest(&self.group, &self.guest)
    }
}

/// flyctl's closing lines of `scale vm|memory` (§4.2 step 5) for `group` now running `guest`.
pub fn describe_guest(group: &str, guest: &Guest) -> String {
    format!(
        "Scaled VM Type for '{group}' to '{}'\n      CPU Cores: {}\n         Memory: {} MB\n",
        guest.size_name(),
        guest.cpus,
        guest.memory_mb
    )
}

/// Plans `scale vm` / `scale memory` for the agent to carry out: [`plan_guest_change`] (every
/// input validated before anything changes), minus the machines whose guest is already the new
/// one. A machine is waited on after its update when it is started now.
pub fn plan_guest_work(
    machines: &[Machine],
    default_group: &str,
    group: &str,
    size: Option<&str>,
    memory_mb: Option<u32>,
) -> Result<GuestPlan, ScaleError> {
    let changes = plan_guest_change(machines, default_group, group, size, memory_mb)?;
    let by_id: BTreeMap<&str, &Machine> = machines.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut plan = GuestPlan {
        group: group.to_string(),
        updates: Vec::new(),
        unchanged: Vec::new(),
        guest: Guest::default(),
    };
    for (n, change) in changes.into_iter().enumerate() {
        let Some(m) = by_id.get(change.id.as_str()) else {
            continue;
        };
        let guest = change.config.guest.unwrap_or_default();
        if n == 0 {
            plan.guest = guest.clone();
        }
        if m.config.guest.as_ref() == Some(&guest) && m.config.size.is_none() {
            plan.unchanged.push(change.id);
            continue;
        }
        plan.updates.push(GuestSet {
            id: change.id,
            group: group.to_string(),
            guest,
            wait: m.state == MachineState::Started,
        });
    }
    Ok(plan)
}

/// One row of `scale show` (§4.4); the field names are the JSON keys flyctl prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupRow {
    pub process: String,
    pub count: u32,
    #[serde(rename = "CPUKind")]
    pub cpu_kind: String,
    #[serde(rename = "CPUs")]
    pub cpus: u32,
    pub memory: u32,
    pub regions: BTreeMap<String, u32>,
}

impl GroupRow {
    /// `ams(2),gru` — codes sorted, count shown when > 1.
    pub fn regions_text(&self) -> String {
        self.regions
            .iter()
            .map(|(r, n)| {
                if *n > 1 {
                    format!("{r}({n})")
                } else {
                    r.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Rows of `scale show`: managed machines grouped by group (sorted); the guest shown is the
/// first machine's (by id).
pub fn show_groups(machines: &[Machine]) -> Vec<GroupRow> {
    let mut managed: Vec<&Machine> = machines.iter().filter(|m| is_managed(m)).collect();
    managed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut rows: BTreeMap<&str, GroupRow> = BTreeMap::new();
    for m in managed {
        let row = rows.entry(m.process_group()).or_insert_with(|| {
            let g = m.config.guest.clone().unwrap_or_default();
            GroupRow {
                process: m.process_group().to_string(),
                count: 0,
                cpu_kind: g.cpu_kind,
                cpus: g.cpus,
                memory: g.memory_mb,
                regions: BTreeMap::new(),
            }
        });
        row.count += 1;
        *row.regions.entry(m.region.clone()).or_default() += 1;
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{machine, spec};
    use aloft_api::MachineState::{Started, Stopped};

    #[test]
    fn volume_lines_say_what_is_reused_and_what_is_created() {
        let mut s = spec(&[("web", true), ("cron", false)]);
        s.groups.get_mut("web").unwrap().mounts = vec![aloft_api::MachineMount {
            name: "data".into(),
            path: "/data".into(),
            size_gb: Some(3),
            ..Default::default()
        }];
        let line = |group: &str, region: &str, delta| PlanLine {
            group: group.into(),
            region: region.into(),
            delta,
            size: "shared-cpu-1x".into(),
        };
        let lines = [
            line("web", "gru", 3),
            line("cron", "gru", 2),
            line("web", "ams", -1),
        ];
        let volume = |id: &str, region: &str| Volume {
            id: id.into(),
            name: "data".into(),
            state: aloft_api::volumes::STATE_CREATED.into(),
            size_gb: 3,
            region: region.into(),
            ..Volume::default()
        };
        let free = volume("vol_1", "gru");
        let mut attached = volume("vol_2", "gru");
        attached.attached_machine_id = Some("m1".into());
        let elsewhere = volume("vol_3", "ams");
        let volumes = [free, attached, elsewhere];
        assert_eq!(
            describe_volume_lines(&lines, &s, &volumes, false),
            "     using 1 unattached volume(s) 'data' for group 'web'\n     \
             creating 2 volume(s) 'data' of 3 GB for group 'web'\n"
        );
        assert_eq!(
            describe_volume_lines(&lines, &s, &volumes, true),
            "     creating 3 volume(s) 'data' of 3 GB for group 'web'\n"
        );
    }

    fn meta() -> ReleaseMeta {
        ReleaseMeta {
            id: "r1".into(),
            version: 1,
        }
    }
    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_count_forms() {
        let known = names(&["cron", "web"]);
        let p = parse_counts(&names(&["web=8", "cron=2"]), None, &known).unwrap();
        assert_eq!(
            p,
            BTreeMap::from([
                ("web".into(), CountSpec::Absolute(8)),
                ("cron".into(), CountSpec::Absolute(2))
            ])
        );
        let p = parse_counts(&names(&["+3"]), Some("web"), &known).unwrap();
        assert_eq!(p, BTreeMap::from([("web".into(), CountSpec::Relative(3))]));
        let err = parse_counts(&names(&["-1"]), None, &known).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this app has several process groups, ['cron', 'web']: say which to scale with `scale count N -g GROUP` (or `--process-group GROUP`), or `scale count cron=N web=N`",
            "a bare count names no group when there are several"
        );
        let only = names(&["worker"]);
        let p = parse_counts(&names(&["-1"]), None, &only).unwrap();
        assert_eq!(
            p,
            BTreeMap::from([("worker".into(), CountSpec::Relative(-1))]),
            "the only group"
        );
        assert!(matches!(
            parse_counts(&names(&["+0"]), None, &known),
            Err(ScaleError::ZeroRelative { .. })
        ));
        assert!(matches!(
            parse_counts(&names(&["x"]), None, &known),
            Err(ScaleError::BadCount { .. })
        ));
        assert!(matches!(
            parse_counts(&names(&["web=1", "2"]), None, &known),
            Err(ScaleError::MixedForms)
        ));
        assert!(matches!(
            parse_counts(&names(&["web=1", "web=2"]), None, &known),
            Err(ScaleError::DuplicateGroup { .. })
        ));
        let err = parse_counts(&names(&["db=1"]), None, &known).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown process group \"db\"; this app's groups are ['cron', 'web']. Use `scale count N -g GROUP` or `scale count GROUP=N …`"
        );
        assert!(matches!(
            parse_counts(&names(&["3"]), Some("db"), &known),
            Err(ScaleError::UnknownGroup { .. })
        ));
        assert!(matches!(
            parse_counts(&[], None, &known),
            Err(ScaleError::NoCounts)
        ));
    }

    fn req(counts: &[(&str, CountSpec)], regions: &[&str], max: Option<u32>) -> CountRequest {
        CountRequest {
            counts: counts.iter().map(|(g, c)| (g.to_string(), *c)).collect(),
            regions: names(regions),
            max_per_region: max,
        }
    }

    #[test]
    fn scale_up_from_nothing_uses_release_config() {
        let s = spec(&[("web", true), ("cron", false)]);
        let ms = vec![
            machine("m1", "web", Started, "gru"),
            machine("m2", "cron", Started, "gru"),
        ];
        let r = req(
            &[
                ("web", CountSpec::Absolute(8)),
                ("cron", CountSpec::Absolute(2)),
            ],
            &[],
            None,
        );
        let plan = plan_count(&r, &s, &meta(), &ms).unwrap();
        assert_eq!(plan.create.iter().filter(|c| c.group == "web").count(), 7);
        assert_eq!(plan.create.iter().filter(|c| c.group == "cron").count(), 1);
        assert!(plan.destroy.is_empty());
        assert_eq!(
            plan.desired,
            BTreeMap::from([("web".into(), 8), ("cron".into(), 2)])
        );
        let c = &plan.create[0];
        assert_eq!(c.region.as_deref(), Some("gru"));
        assert_eq!(c.config.image, "img@sha256:new");
        assert_eq!(c.config.metadata["fly_release_version"], "1");
        assert_eq!(plan.describe(), "  +1 machines for group 'cron' on region 'gru' of size 'shared-cpu-1x'\n  +7 machines for group 'web' on region 'gru' of size 'shared-cpu-1x'\n");
    }

    #[test]
    fn standbys_count_and_new_machines_are_not_standbys() {
        let s = spec(&[("cron", false)]);
        let mut standby = machine("c2", "cron", Stopped, "gru");
        standby.config.set_standby_for(vec!["c1".into()]);
        let ms = vec![machine("c1", "cron", Started, "gru"), standby];
        let plan = plan_count(
            &req(&[("cron", CountSpec::Absolute(3))], &[], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert_eq!(plan.create.len(), 1, "1 + its standby are 2 of the 3");
        assert!(!plan.create[0].config.is_standby());
        assert!(!plan.create[0]
            .config
            .env
            .contains_key(aloft_api::STANDBY_FOR_ENV));
        let plan = plan_count(
            &req(&[("cron", CountSpec::Relative(1))], &[], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert_eq!(plan.desired["cron"], 3, "+1 counts from 2");
        let rows = show_groups(&ms);
        assert_eq!(rows[0].count, 2);
    }

    #[test]
    fn regions_spread_evenly_in_given_order() {
        let s = spec(&[("web", true)]);
        let ms: Vec<Machine> = (0..8)
            .map(|i| machine(&format!("m{i}"), "web", Started, "gru"))
            .collect();
        let plan = plan_count(
            &req(&[("web", CountSpec::Absolute(4))], &["gru", "bog"], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert_eq!(plan.destroy.len(), 6);
        assert_eq!(plan.create.len(), 2);
        assert!(plan
            .create
            .iter()
            .all(|c| c.region.as_deref() == Some("bog")));
        assert_eq!(plan.desired["web"], 4);
        let plan = plan_count(
            &req(&[("web", CountSpec::Absolute(5))], &["bog", "gru"], None),
            &s,
            &meta(),
            &[],
        )
        .unwrap();
        let bog = plan
            .create
            .iter()
            .filter(|c| c.region.as_deref() == Some("bog"))
            .count();
        assert_eq!((bog, plan.create.len() - bog), (3, 2));
    }

    #[test]
    fn machines_outside_listed_regions_are_kept() {
        let s = spec(&[("web", true)]);
        let ms = vec![
            machine("m1", "web", Started, "iad"),
            machine("m2", "web", Started, "gru"),
        ];
        let plan = plan_count(
            &req(&[("web", CountSpec::Absolute(2))], &["gru"], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert_eq!(plan.create.len(), 1);
        assert!(plan.destroy.is_empty());
        assert_eq!(plan.desired["web"], 3);
    }

    /// Machines of group `web` (id, state, region), each created a second after the one before.
    fn web_created_in_order(specs: &[(&str, MachineState, &str)]) -> Vec<Machine> {
        specs
            .iter()
            .enumerate()
            .map(|(i, (id, state, region))| Machine {
                created_at: format!("2026-01-01T00:00:0{i}Z"),
                ..machine(id, "web", *state, region)
            })
            .collect()
    }

    #[test]
    fn scale_down_prefers_stopped_then_newest() {
        let s = spec(&[("web", true)]);
        let ms = web_created_in_order(&[
            ("a1", Started, "gru"),
            ("a2", Stopped, "gru"),
            ("a3", Started, "gru"),
            ("a4", Started, "gru"),
        ]);
        let plan = plan_count(
            &req(&[("web", CountSpec::Relative(-2))], &[], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        let ids: Vec<&str> = plan.destroy.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, vec!["a2", "a4"]);
        assert!(!plan.destroy[0].running);
        assert!(plan.destroy[1].running);
        let plan = plan_count(
            &req(&[("web", CountSpec::Relative(-9))], &[], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert_eq!(plan.destroy.len(), 4, "clamps at 0");
        assert_eq!(plan.desired["web"], 0);
    }

    #[test]
    fn scale_down_keeps_the_spread_even_and_prefers_stopped_machines() {
        let s = spec(&[("web", true)]);
        let ms = web_created_in_order(&[
            ("g1", Started, "gru"),
            ("g2", Started, "gru"),
            ("g3", Started, "gru"),
            ("g4", Started, "gru"),
            ("b1", Started, "bog"),
            ("b2", Stopped, "bog"),
        ]);
        let down_to = |n| {
            let plan = plan_count(
                &req(&[("web", CountSpec::Absolute(n))], &[], None),
                &s,
                &meta(),
                &ms,
            )
            .unwrap();
            let mut ids: Vec<String> = plan.destroy.iter().map(|d| d.id.clone()).collect();
            ids.sort();
            ids
        };
        // gru 4 + bog 2: the newest of gru go until both have 2.
        assert_eq!(down_to(4), vec!["g3", "g4"]);
        // Then gru 2 + bog 2: bog's stopped machine goes before any running one.
        assert_eq!(down_to(3), vec!["b2", "g3", "g4"]);
        // gru 1 + bog 1.
        assert_eq!(down_to(2), vec!["b2", "g2", "g3", "g4"]);
        assert_eq!(down_to(1), vec!["b1", "b2", "g2", "g3", "g4"]);
    }

    #[test]
    fn max_per_region() {
        let s = spec(&[("web", true)]);
        let err = plan_count(
            &req(&[("web", CountSpec::Absolute(5))], &["gru", "bog"], Some(2)),
            &s,
            &meta(),
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(err, ScaleError::OverCapacity { capacity: 4, .. }),
            "{err}"
        );
        let ms: Vec<Machine> = (0..3)
            .map(|i| machine(&format!("m{i}"), "web", Started, "gru"))
            .collect();
        let plan = plan_count(
            &req(&[("web", CountSpec::Absolute(3))], &[], Some(2)),
            &s,
            &meta(),
            &ms,
        );
        assert!(
            matches!(plan, Err(ScaleError::OverCapacity { .. })),
            "only gru is known for web"
        );
        let plan = plan_count(
            &req(&[("web", CountSpec::Absolute(2))], &[], Some(2)),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert_eq!(plan.destroy.len(), 1);
    }

    #[test]
    fn unchanged_is_a_noop_and_bad_input_is_refused() {
        let s = spec(&[("web", true)]);
        let ms = vec![machine("m1", "web", Started, "gru")];
        let plan = plan_count(
            &req(&[("web", CountSpec::Absolute(1))], &[], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap();
        assert!(plan.is_noop());
        assert!(plan.describe().is_empty());
        let err = plan_count(
            &req(&[("web", CountSpec::Absolute(1))], &["xxx"], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown region \"xxx\"; see `aloft platform regions`"
        );
        let err = plan_count(
            &req(&[("db", CountSpec::Absolute(1))], &[], None),
            &s,
            &meta(),
            &ms,
        )
        .unwrap_err();
        assert!(matches!(err, ScaleError::UnknownGroup { .. }));
    }

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory_mb("4096").unwrap(), 4096);
        assert_eq!(parse_memory_mb("512mb").unwrap(), 512);
        assert_eq!(parse_memory_mb("4GB").unwrap(), 4096);
        assert_eq!(parse_memory_mb("1.5g").unwrap(), 1536);
        for bad in ["", "abc", "0", "-1", "4tb", "1.1mb"] {
            assert!(parse_memory_mb(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn guest_changes_touch_only_the_group_and_validate() {
        let ms = vec![
            machine("w1", "web", Started, "gru"),
            machine("c1", "cron", Started, "gru"),
        ];
        let ups = plan_guest_change(&ms, "web", "web", Some("performance-2x"), None).unwrap();
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].id, "w1");
        assert_eq!(ups[0].config.guest, Guest::from_preset("performance-2x"));
        let ups = plan_guest_change(&ms, "web", "web", None, Some(512)).unwrap();
        assert_eq!(ups[0].config.guest.as_ref().unwrap().memory_mb, 512);
        let err = plan_guest_change(&ms, "web", "web", None, Some(4096)).unwrap_err();
        assert!(
            err.to_string().contains("above the maximum of 2048 MB"),
            "{err}"
        );
        let err = plan_guest_change(&ms, "web", "web", Some("shared-cpu-3x"), None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown VM size \"shared-cpu-3x\"; valid sizes: shared-cpu-1x"),
            "{err}"
        );
        assert!(matches!(
            plan_guest_change(&ms, "web", "worker", None, Some(512)),
            Err(ScaleError::NoMachines { .. })
        ));
        assert!(plan_guest_change(&ms, "web", "web", Some("performance-2x"), Some(4096)).is_ok());
        // Memory alone is judged against each machine's own CPUs.
        let mut big = ms.clone();
        big[0].config.guest = Guest::from_preset("performance-2x");
        let ups = plan_guest_change(&big, "web", "web", None, Some(8192)).unwrap();
        assert_eq!(
            ups[0].config.guest.as_ref().unwrap().cpu_kind,
            "performance"
        );
        assert!(plan_guest_change(&big, "web", "web", None, Some(32768)).is_err());
    }

    #[test]
    fn guest_work_skips_machines_already_there_and_waits_on_started_ones() {
        let mut ms = vec![
            machine("w3", "web", Started, "gru"),
            machine("w1", "web", Stopped, "gru"),
            machine("w2", "web", Started, "bog"),
            machine("c1", "cron", Started, "gru"),
            machine("x1", "", Started, "gru"),
        ];
        ms[2].config.guest = Guest::from_preset("performance-2x");
        let plan = plan_guest_work(&ms, "web", "web", Some("performance-2x"), None).unwrap();
        let planned: Vec<(&str, bool)> = plan
            .updates
            .iter()
            .map(|u| (u.id.as_str(), u.wait))
            .collect();
        assert_eq!(
            planned,
            vec![("w1", false), ("w3", true), ("x1", true)],
            "id order; group-less machines belong to the default group; w2 has its guest"
        );
        assert_eq!(plan.unchanged, vec!["w2".to_string()]);
        assert!(plan
            .updates
            .iter()
            .all(|u| u.group == "web"
                && Guest::from_preset("performance-2x") == Some(u.guest.clone())));
        assert_eq!(
            plan.describe_result(),
            "Scaled VM Type for 'web' to 'performance-2x'\n      CPU Cores: 2\n         Memory: 4096 MB\n"
        );
        let again = plan_guest_work(&ms[2..3], "web", "web", Some("performance-2x"), None).unwrap();
        assert!(again.is_noop());
        // Memory alone keeps each machine's CPUs and is checked against them.
        let plan = plan_guest_work(&ms, "web", "web", None, Some(8192)).unwrap_err();
        assert!(
            plan.to_string().contains("above the maximum of 2048 MB"),
            "shared-cpu-1x machines refuse 8 GB: {plan}"
        );
        let plan = plan_guest_work(&ms[2..3], "web", "web", None, Some(8192)).unwrap();
        assert_eq!(plan.updates[0].guest.cpu_kind, "performance");
        assert_eq!(plan.updates[0].guest.memory_mb, 8192);
        assert!(matches!(
            plan_guest_work(&ms, "web", "db", None, Some(512)),
            Err(ScaleError::NoMachines { .. })
        ));
    }

    #[test]
    fn guest_group_resolution() {
        assert_eq!(
            group_for_guest_change(None, &names(&["app"])).unwrap(),
            "app"
        );
        assert!(matches!(
            group_for_guest_change(None, &names(&["a", "b"])),
            Err(ScaleError::GroupRequired { .. })
        ));
        assert!(matches!(
            group_for_guest_change(Some("c"), &names(&["a", "b"])),
            Err(ScaleError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn show_rows() {
        let ms = vec![
            machine("m1", "web", Started, "gru"),
            machine("m2", "web", Started, "gru"),
            machine("m3", "web", Started, "bog"),
            machine("m4", "cron", Started, "gru"),
        ];
        let rows = show_groups(&ms);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].process, "cron");
        assert_eq!(rows[1].count, 3);
        assert_eq!(rows[1].regions_text(), "bog,gru(2)");
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["CPUKind"], "shared");
        assert_eq!(json["Memory"], 256);
        assert_eq!(json["Regions"]["gru"], 2);
    }
}
