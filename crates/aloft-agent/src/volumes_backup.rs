//! Daily snapshots of volumes and their expiry: what Fly does for a volume with
//! `auto_backup_enabled` (its default; fly.toml `[[mounts]] scheduled_snapshots`), keeping each
//! snapshot `snapshot_retention` days (default 5).
//!
//! Every interval (an hour by default, `aloft agent --volume-snapshot-interval`) the agent looks
//! at each volume: one with automatic backups whose newest snapshot (or, without one, its
//! creation) is a day old or more gets a snapshot now ([`Controller::create_volume_snapshot`]:
//! a consistent copy, the filesystem frozen during it when mounted); every snapshot older than
//! its volume's retention — taken automatically or on request — is deleted, row and copy.
//! A failure is logged and tried again at the next pass; it never stops the others.

use std::sync::Arc;
use std::time::Duration;

use aloft_api::volumes::{Volume, VolumeSnapshot};
use time::OffsetDateTime;

use crate::controller::{Controller, DomainResult};

/// How often a volume with automatic backups gets a snapshot.
pub const BACKUP_PERIOD: time::Duration = time::Duration::days(1);

fn parse(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// Whether `volume` is due a snapshot at `now`: automatic backups on, and its newest snapshot
/// (else its creation) at least [`BACKUP_PERIOD`] old.
pub fn backup_due(volume: &Volume, snapshots: &[VolumeSnapshot], now: OffsetDateTime) -> bool {
    if !volume.auto_backup_enabled {
        return false;
    }
    let newest = snapshots.iter().filter_map(|s| parse(&s.created_at)).max();
    match newest.or_else(|| parse(&volume.created_at)) {
        Some(since) => now - since >= BACKUP_PERIOD,
        None => false, // no time to count from: never a snapshot per pass
    }
}

/// The snapshots older than the volume's retention (days) at `now`.
pub fn expired<'a>(
    volume: &Volume,
    snapshots: &'a [VolumeSnapshot],
    now: OffsetDateTime,
) -> Vec<&'a VolumeSnapshot> {
    let keep = time::Duration::days(i64::from(volume.snapshot_retention.max(1)));
    snapshots
        .iter()
        .filter(|s| parse(&s.created_at).is_some_and(|at| now - at > keep))
        .collect()
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// (volume, snapshot) taken.
    pub taken: Vec<(String, String)>,
    /// (volume, snapshot) deleted.
    pub expired: Vec<(String, String)>,
}

/// Runs a pass every `interval` until the agent stops (the task is dropped).
pub async fn run(ctl: Arc<Controller>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pass(&ctl, OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %e, "volume snapshot pass failed; trying again later");
        }
    }
}

/// One pass over every app's volumes at `now`.
pub async fn pass(ctl: &Controller, now: OffsetDateTime) -> DomainResult<PassReport> {
    let mut report = PassReport::default();
    for app in ctl.list_apps(None).await? {
        let Ok(volumes) = ctl.list_volumes(&app.name).await else {
            continue; // deleted meanwhile
        };
        // Destroyed volumes still listed keep their snapshots until these expire.
        for v in &volumes {
            let Ok(snapshots) = ctl.list_volume_snapshots(&app.name, &v.id).await else {
                continue;
            };
            let live = v.state == aloft_api::volumes::STATE_CREATED;
            if live && backup_due(v, &snapshots, now) {
                match ctl.create_volume_snapshot(&app.name, &v.id).await {
                    Ok(s) => {
                        tracing::info!(app = %app.name, volume = %v.id, snapshot = %s.id, "daily volume snapshot taken");
                        report.taken.push((v.id.clone(), s.id));
                    }
                    Err(e) => {
                        tracing::warn!(app = %app.name, volume = %v.id, error = %e, "daily volume snapshot failed; trying again at the next pass")
                    }
                }
            }
            for s in expired(v, &snapshots, now) {
                match ctl.delete_volume_snapshot(&app.name, &s.id).await {
                    Ok(()) => {
                        tracing::info!(app = %app.name, volume = %v.id, snapshot = %s.id, retention_days = v.snapshot_retention, "expired volume snapshot deleted");
                        report.expired.push((v.id.clone(), s.id.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(app = %app.name, volume = %v.id, snapshot = %s.id, error = %e, "cannot delete an expired volume snapshot; trying again at the next pass")
                    }
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        parse(s).unwrap()
    }

    fn volume(created: &str, auto: bool, retention: u32) -> Volume {
        Volume {
            id: "vol_1".into(),
            created_at: created.into(),
            auto_backup_enabled: auto,
            snapshot_retention: retention,
            ..Default::default()
        }
    }

    fn snap(id: &str, created: &str) -> VolumeSnapshot {
        VolumeSnapshot {
            id: id.into(),
            created_at: created.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_snapshot_is_due_a_day_after_the_newest_one_or_the_volume_s_creation() {
        let v = volume("2026-01-01T00:00:00Z", true, 5);
        assert!(!backup_due(&v, &[], at("2026-01-01T23:59:59Z")));
        assert!(backup_due(&v, &[], at("2026-01-02T00:00:00Z")));
        let snaps = [
            snap("vs_a", "2026-01-02T00:00:00Z"),
            snap("vs_b", "2026-01-03T06:00:00Z"),
        ];
        assert!(!backup_due(&v, &snaps, at("2026-01-04T05:00:00Z")));
        assert!(backup_due(&v, &snaps, at("2026-01-04T06:00:00Z")));
        let off = volume("2026-01-01T00:00:00Z", false, 5);
        assert!(!backup_due(&off, &[], at("2026-03-01T00:00:00Z")));
    }

    #[test]
    fn snapshots_older_than_the_retention_expire() {
        let v = volume("2026-01-01T00:00:00Z", true, 2);
        let snaps = [
            snap("vs_old", "2026-01-01T00:00:00Z"),
            snap("vs_new", "2026-01-02T12:00:00Z"),
        ];
        let ids = |now: &str| -> Vec<String> {
            expired(&v, &snaps, at(now))
                .iter()
                .map(|s| s.id.clone())
                .collect()
        };
        assert!(
            ids("2026-01-03T00:00:00Z").is_empty(),
            "exactly 2 days: kept"
        );
        assert_eq!(ids("2026-01-03T00:00:01Z"), ["vs_old"]);
        assert_eq!(ids("2026-01-05T00:00:00Z"), ["vs_old", "vs_new"]);
    }
}
