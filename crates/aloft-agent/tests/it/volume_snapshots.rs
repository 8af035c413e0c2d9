//! Daily volume snapshots and their expiry (`aloft_agent::volumes_backup`), against an
//! in-process agent with real volumes (root: loop devices), passes run at chosen times.

use aloft_agent::volumes_backup::pass;
use aloft_api::volumes::{CreateVolumeRequest, UpdateVolumeRequest};
use aloft_api::CreateAppRequest;
use aloft_testkit::privileged::privileged_or_skip;
use time::{Duration, OffsetDateTime};

use crate::common::Harness;

#[tokio::test(flavor = "multi_thread")]
async fn volumes_get_a_snapshot_a_day_and_lose_those_past_their_retention() {
    if !privileged_or_skip("volume_snapshots", aloft_runtime::volumes::available()) {
        return;
    }
    let mut h = Harness::start_with(|_| {}).await;
    let ctl = h.agent.as_ref().unwrap().controller.clone();
    ctl.create_app(CreateAppRequest {
        app_name: Some("snaps".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let create = |name: &str| CreateVolumeRequest {
        name: name.into(),
        size_gb: Some(1),
        snapshot_retention: Some(2),
        ..Default::default()
    };
    let daily = ctl.create_volume("snaps", create("daily")).await.unwrap();
    let manual = ctl.create_volume("snaps", create("manual")).await.unwrap();
    ctl.update_volume(
        "snaps",
        &manual.id,
        UpdateVolumeRequest {
            auto_backup_enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let now = OffsetDateTime::now_utc();
    let snapshots = |id: String| {
        let ctl = ctl.clone();
        async move {
            ctl.list_volume_snapshots("snaps", &id)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };

    // Within the first day: nothing. A day after creation: one for the daily volume only.
    assert_eq!(
        pass(&ctl, now + Duration::hours(23)).await.unwrap().taken,
        []
    );
    let report = pass(&ctl, now + Duration::hours(25)).await.unwrap();
    assert_eq!(report.taken.len(), 1, "{report:?}");
    assert_eq!(report.taken[0].0, daily.id);
    let first = snapshots(daily.id.clone()).await;
    assert_eq!(first.len(), 1);
    assert!(snapshots(manual.id.clone()).await.is_empty());
    let copy = h
        .agent
        .as_ref()
        .unwrap()
        .data_dir
        .join("volumes/snapshots")
        .join(format!("{}.img", first[0]));
    assert!(copy.exists(), "{} is the snapshot's copy", copy.display());
    // Not twice a day.
    assert!(pass(&ctl, now + Duration::hours(1))
        .await
        .unwrap()
        .taken
        .is_empty());

    // A snapshot on request of the manual volume expires like the daily ones.
    ctl.create_volume_snapshot("snaps", &manual.id)
        .await
        .unwrap();
    let report = pass(&ctl, now + Duration::days(3)).await.unwrap();
    let mut expired: Vec<&str> = report.expired.iter().map(|(v, _)| v.as_str()).collect();
    expired.sort();
    let mut both = vec![daily.id.as_str(), manual.id.as_str()];
    both.sort();
    assert_eq!(expired, both, "{report:?}");
    assert!(!copy.exists(), "an expired snapshot's copy is deleted");
    let now_daily = snapshots(daily.id.clone()).await;
    assert_eq!(
        now_daily.len(),
        1,
        "a new daily one was taken: {now_daily:?}"
    );
    assert_ne!(now_daily, first);
    assert!(snapshots(manual.id.clone()).await.is_empty());
    for v in [&daily.id, &manual.id] {
        ctl.destroy_volume("snaps", v).await.unwrap();
    }
    h.agent.take().unwrap().shutdown().await;
}
