//! Automatic volume extension (`[[mounts]] auto_extend_size_threshold/increment/limit`, which
//! flattening turns into the machine's `config.mounts[0]` `extend_threshold_percent`,
//! `add_size_gb` and `size_gb_limit`).
//!
//! Every interval (60 s by default, `aloft agent --volume-extend-interval`) the agent looks at
//! each attached volume whose machine asks for it: when the share of the filesystem in use
//! (`statvfs` of the mounted volume, as `Volume.blocks`/`blocks_free` report it) reaches the
//! threshold, the volume grows by `add_size_gb` — online, through
//! [`Controller::extend_volume`] — but never past `size_gb_limit` (no limit when unset, up to
//! the largest volume). Each extension is a machine event (`volume_extend`, status
//! `extended`, visible in `aloft machine status`) and a log line. A volume at its limit is
//! left alone (logged once per agent run). Where the host refuses to resize a mounted
//! filesystem, the volume grows and its filesystem follows at the machine's next start
//! (`needs_restart` in the event).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aloft_api::volumes::{Volume, MAX_SIZE_GB};
use aloft_api::MachineMount;

use crate::controller::{event, Controller};

/// Percentage of the volume's filesystem in use, from its `statvfs` figures; `None` when the
/// volume is not mounted on the host (no figures).
pub fn used_percent(v: &Volume) -> Option<f64> {
    let (blocks, free) = (v.blocks?, v.blocks_free?);
    if blocks == 0 {
        return None;
    }
    Some(blocks.saturating_sub(free) as f64 * 100.0 / blocks as f64)
}

/// The size a volume grows to under `mount`'s rules, if it must grow now.
pub fn extended_size(v: &Volume, mount: &MachineMount) -> Option<u32> {
    let threshold = mount.extend_threshold_percent?;
    let add = mount.add_size_gb.filter(|a| *a > 0)?;
    if used_percent(v)? < threshold as f64 {
        return None;
    }
    let limit = mount
        .size_gb_limit
        .filter(|l| *l > 0)
        .unwrap_or(MAX_SIZE_GB)
        .min(MAX_SIZE_GB);
    let to = v.size_gb.saturating_add(add).min(limit);
    (to > v.size_gb).then_some(to)
}

/// Runs the checks every `interval` until the agent stops (the task is dropped).
pub async fn run(ctl: Arc<Controller>, interval: Duration) {
    let mut at_limit: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = check_all(&ctl, &mut at_limit).await {
            tracing::warn!(error = %e, "volume auto-extend pass failed; trying again later");
        }
    }
}

/// One pass over every app's attached volumes.
async fn check_all(
    ctl: &Controller,
    at_limit: &mut BTreeSet<String>,
) -> crate::controller::DomainResult<()> {
    for app in ctl.list_apps(None).await? {
        let Ok(volumes) = ctl.list_volumes(&app.name).await else {
            continue; // deleted meanwhile
        };
        for v in volumes {
            let Some(machine_id) = v.attached_machine_id.clone() else {
                continue;
            };
            let Ok(machine) = ctl.get_machine(&app.name, &machine_id).await else {
                continue;
            };
            let Some(mount) = machine.config.mounts.first().filter(|m| m.volume == v.id) else {
                continue;
            };
            if mount.extend_threshold_percent.is_none() {
                continue;
            }
            match extended_size(&v, mount) {
                Some(to) => extend(ctl, &app.name, &machine_id, &v, to).await,
                None => {
                    let full = used_percent(&v)
                        .zip(mount.extend_threshold_percent)
                        .is_some_and(|(used, t)| used >= t as f64);
                    if full && at_limit.insert(v.id.clone()) {
                        tracing::warn!(
                            app = %app.name, volume = %v.id, size_gb = v.size_gb,
                            "volume is past its auto-extend threshold and at its size limit \
                             (auto_extend_size_limit); it is not extended"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

async fn extend(ctl: &Controller, app: &str, machine_id: &str, v: &Volume, to: u32) {
    let used = used_percent(v).unwrap_or_default();
    match ctl.extend_volume(app, &v.id, to).await {
        Ok(grown) => {
            tracing::info!(
                app, volume = %v.id, machine = machine_id, from_gb = v.size_gb, to_gb = to,
                used_percent = format!("{used:.0}"),
                needs_restart = grown.needs_restart,
                "volume extended automatically{}",
                if grown.needs_restart {
                    " (this host cannot resize a mounted filesystem: the machine sees the new \
                     size from its next start)"
                } else {
                    ""
                }
            );
            let request = serde_json::json!({
                "volume": v.id,
                "from_size_gb": v.size_gb,
                "size_gb": to,
                "used_percent": used.round(),
                "needs_restart": grown.needs_restart,
            });
            let ev = event("volume_extend", "extended", "aloft", Some(request));
            let id = machine_id.to_string();
            if let Err(e) = ctl.db(move |s| s.write(|tx| tx.add_event(&id, &ev))).await {
                tracing::warn!(error = %e, "cannot record the volume_extend event");
            }
        }
        Err(e) => tracing::warn!(
            app, volume = %v.id, error = %e,
            "volume is past its auto-extend threshold and could not be extended"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(size_gb: u32, blocks: u64, free: u64) -> Volume {
        Volume {
            size_gb,
            blocks: Some(blocks),
            blocks_free: Some(free),
            ..Volume::default()
        }
    }

    fn mount(threshold: u32, add: u32, limit: Option<u32>) -> MachineMount {
        MachineMount {
            extend_threshold_percent: Some(threshold),
            add_size_gb: Some(add),
            size_gb_limit: limit,
            ..MachineMount::default()
        }
    }

    #[test]
    fn grows_by_the_increment_once_past_the_threshold_up_to_the_limit() {
        let m = mount(80, 2, Some(4));
        assert_eq!(extended_size(&vol(1, 100, 25), &m), None, "75% < 80%");
        assert_eq!(extended_size(&vol(1, 100, 20), &m), Some(3), "80% reached");
        assert_eq!(
            extended_size(&vol(3, 100, 5), &m),
            Some(4),
            "capped at the limit"
        );
        assert_eq!(extended_size(&vol(4, 100, 0), &m), None, "at the limit");
        assert_eq!(
            extended_size(&vol(499, 100, 0), &mount(80, 5, None)),
            Some(MAX_SIZE_GB),
            "no limit: the largest volume"
        );
        let unmounted = Volume {
            size_gb: 1,
            ..Volume::default()
        };
        assert_eq!(extended_size(&unmounted, &m), None);
        assert_eq!(
            extended_size(&vol(1, 100, 0), &MachineMount::default()),
            None
        );
    }
}
