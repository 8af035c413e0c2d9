//! Deploy state through the store's public API, on a real database file: releases and their
//! event logs survive a reopen, unfinished releases are found for resuming, counts and images
//! are per app, and deleting an app removes its deploy state.

use aloft_store::{AppRecord, Durability, ImageRow, ReleaseRow, Store};

fn app(name: &str) -> AppRecord {
    crate::common::app_with_status(name, "deployed")
}

fn release(app: &str, version: u64, status: &str) -> ReleaseRow {
    ReleaseRow {
        app: app.into(),
        version,
        id: format!("rel-{app}-{version}"),
        status: status.into(),
        body: format!(r#"{{"version":{version}}}"#),
        created_at: "2024-01-01T00:00:00Z".into(),
        updated_at: "2024-01-01T00:00:00Z".into(),
    }
}

#[test]
fn releases_events_counts_and_images_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path, Durability::ProcessCrash).unwrap();
        s.write(|tx| {
            tx.insert_app(&app("a"))?;
            tx.insert_app(&app("b"))?;
            assert_eq!(tx.next_release_version("a")?, 1);
            tx.insert_release(&release("a", 1, "complete"))?;
            tx.insert_release(&release("a", 2, "running"))?;
            tx.insert_release(&release("b", 1, "pending"))?;
            assert_eq!(tx.next_release_version("a")?, 3);
            assert_eq!(tx.next_release_version("b")?, 2);
            for n in 0..3 {
                assert_eq!(tx.add_release_event("a", 2, "t", &format!("e{n}"))?, n + 1);
            }
            assert_eq!(
                tx.add_release_event("b", 1, "t", "x")?,
                1,
                "seq is per release"
            );
            tx.set_group_count("a", "web", 0)?;
            tx.set_group_count("a", "worker", 3)?;
            tx.set_group_count("a", "worker", 4)?;
            tx.put_image(&ImageRow {
                app: "a".into(),
                digest: "sha256:ab".into(),
                size: 10,
                path: "/x".into(),
                created_at: "t".into(),
            })?;
            Ok(())
        })
        .unwrap();
    }
    let s = Store::open(&path, Durability::ProcessCrash).unwrap();
    s.read(|tx| {
        let versions: Vec<u64> = tx.releases("a")?.iter().map(|r| r.version).collect();
        assert_eq!(versions, vec![2, 1], "newest first");
        assert!(tx.has_complete_deploy("a")?, "v1 completed");
        assert!(!tx.has_complete_deploy("b")?, "b's only release is pending");
        let unfinished: Vec<(String, u64)> = tx
            .unfinished_releases()?
            .into_iter()
            .map(|r| (r.app, r.version))
            .collect();
        assert_eq!(unfinished, vec![("a".into(), 2), ("b".into(), 1)]);
        let ev = tx.release_events("a", 2, 1, 100)?;
        assert_eq!(
            ev.iter()
                .map(|e| (e.seq, e.event.as_str()))
                .collect::<Vec<_>>(),
            vec![(2, "e1"), (3, "e2")],
            "after=1 skips the first event"
        );
        assert_eq!(tx.release_events("a", 2, 0, 1)?.len(), 1, "limit");
        let counts = tx.group_counts("a")?;
        assert_eq!(counts.get("web"), Some(&0), "a count of 0 is remembered");
        assert_eq!(counts.get("worker"), Some(&4));
        assert!(tx.group_counts("b")?.is_empty());
        assert_eq!(tx.image("a", "sha256:ab")?.map(|i| i.size), Some(10));
        assert!(tx.image("b", "sha256:ab")?.is_none(), "images are per app");
        Ok(())
    })
    .unwrap();
    s.write(|tx| {
        let mut r = release("a", 2, "complete");
        r.body = "{}".into();
        tx.put_release(&r)?;
        assert!(tx.delete_group_count("a", "web")?);
        assert!(!tx.delete_group_count("a", "web")?);
        Ok(())
    })
    .unwrap();
    s.read(|tx| {
        let r = tx.release("a", 2)?.unwrap();
        assert_eq!((r.status.as_str(), r.body.as_str()), ("complete", "{}"));
        assert_eq!(tx.unfinished_releases()?.len(), 1);
        Ok(())
    })
    .unwrap();
    s.write(|tx| tx.delete_app("a").map(drop)).unwrap();
    s.read(|tx| {
        assert!(tx.releases("a")?.is_empty());
        assert!(tx.release_events("a", 2, 0, 100)?.is_empty());
        assert!(tx.group_counts("a")?.is_empty());
        assert!(tx.image("a", "sha256:ab")?.is_none());
        assert_eq!(tx.releases("b")?.len(), 1, "other apps keep theirs");
        Ok(())
    })
    .unwrap();
}
