//! Store behaviour through its public API, on a real database file.

use std::collections::BTreeMap;

use aloft_api::{Lease, MachineConfig, MachineEvent, MachineState};
use aloft_store::{
    AppRecord, DesiredState, Durability, MachineFilter, MachineRecord, Store, StoreError,
};

fn app(name: &str) -> AppRecord {
    crate::common::app_with_status(name, "pending")
}

fn machine(id: &str, app: &str, name: &str, region: &str, group: &str) -> MachineRecord {
    let mut config = MachineConfig {
        image: "/srv".into(),
        ..Default::default()
    };
    config
        .metadata
        .insert("fly_process_group".into(), group.into());
    MachineRecord {
        id: id.into(),
        app: app.into(),
        name: name.into(),
        region: region.into(),
        state: MachineState::Created,
        desired: DesiredState::Started,
        instance_id: format!("01HV{id:0<22}"),
        private_ip: String::new(),
        config,
        image_ref: None,
        cordoned: false,
        host_ports: BTreeMap::from([(8080, 40001)]),
        restart_count: 0,
        created_at: format!("2024-01-01T00:00:0{}Z", id.len() % 10),
        updated_at: "2024-01-01T00:00:00Z".into(),
    }
}

fn event(kind: &str, ts: i64) -> MachineEvent {
    MachineEvent {
        id: format!("e{ts}"),
        kind: kind.into(),
        status: "created".into(),
        source: "user".into(),
        timestamp: ts,
        request: Some(serde_json::json!({"n": ts})),
    }
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path, Durability::default()).unwrap();
        store
            .write(|tx| {
                tx.insert_app(&app("web"))?;
                let m = machine("aaaaaaaaaaaaaa", "web", "one", "gru", "app");
                tx.insert_machine(&m)?;
                tx.add_event(&m.id, &event("launch", 1))?;
                tx.put_lease(
                    &m.id,
                    &Lease {
                        nonce: "n1".into(),
                        expires_at: 99,
                        owner: "me".into(),
                        description: "d".into(),
                        version: "v".into(),
                    },
                )
            })
            .unwrap();
    }
    let store = Store::open(&path, Durability::default()).unwrap();
    store
        .read(|tx| {
            let m = tx.machine("web", "aaaaaaaaaaaaaa")?.expect("machine kept");
            assert_eq!(m.host_ports.get(&8080), Some(&40001));
            assert_eq!(m.config.process_group(), "app");
            assert_eq!(
                tx.events(&m.id, 10)?[0].request,
                Some(serde_json::json!({"n": 1}))
            );
            assert_eq!(tx.lease(&m.id)?.unwrap().nonce, "n1");
            assert_eq!(tx.versions(&m.id)?.len(), 1);
            assert_eq!(tx.machine_count("web")?, 1);
            Ok(())
        })
        .unwrap();
}

#[test]
fn names_are_unique_and_a_failed_write_changes_nothing() {
    let store = Store::open_in_memory().unwrap();
    store.write(|tx| tx.insert_app(&app("web"))).unwrap();
    let err = store.write(|tx| tx.insert_app(&app("web"))).unwrap_err();
    assert!(matches!(err, StoreError::AppNameTaken(_)), "{err}");

    store
        .write(|tx| tx.insert_machine(&machine("aaaaaaaaaaaaaa", "web", "one", "gru", "app")))
        .unwrap();
    // Second machine inserted, then a name clash: the whole transaction rolls back.
    let err = store
        .write(|tx| {
            tx.insert_machine(&machine("bbbbbbbbbbbbbb", "web", "two", "gru", "app"))?;
            tx.insert_machine(&machine("cccccccccccccc", "web", "one", "gru", "app"))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::MachineNameTaken { .. }), "{err}");
    assert!(store
        .read(|tx| tx.machine("web", "bbbbbbbbbbbbbb"))
        .unwrap()
        .is_none());

    // A destroyed machine frees its name.
    store
        .write(|tx| {
            let mut m = tx.machine("web", "aaaaaaaaaaaaaa")?.unwrap();
            m.state = MachineState::Destroyed;
            tx.put_machine(&m)?;
            tx.insert_machine(&machine("dddddddddddddd", "web", "one", "gru", "app"))
        })
        .unwrap();
}

#[test]
fn filters_events_and_app_deletion() {
    let store = Store::open_in_memory().unwrap();
    store
        .write(|tx| {
            tx.insert_app(&app("web"))?;
            tx.insert_machine(&machine("aaaaaaaaaaaaaa", "web", "a", "gru", "app"))?;
            tx.insert_machine(&machine("bbbbbbbbbbbbbb", "web", "b", "bog", "worker"))?;
            let mut gone = machine("cccccccccccccc", "web", "c", "gru", "app");
            gone.state = MachineState::Destroyed;
            tx.insert_machine(&gone)?;
            for i in 0..(aloft_store::MIGRATIONS.len() as i64 + 250) {
                tx.add_event("aaaaaaaaaaaaaa", &event("exit", i))?;
            }
            Ok(())
        })
        .unwrap();
    let ids = |f: MachineFilter| -> Vec<String> {
        store
            .read(|tx| tx.machines("web", &f))
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(ids(MachineFilter::default()).len(), 2);
    assert_eq!(
        ids(MachineFilter {
            include_deleted: true,
            ..Default::default()
        })
        .len(),
        3
    );
    assert_eq!(
        ids(MachineFilter {
            region: Some("bog".into()),
            ..Default::default()
        }),
        vec!["bbbbbbbbbbbbbb"]
    );
    assert_eq!(
        ids(MachineFilter {
            metadata: vec![("fly_process_group".into(), "app".into())],
            ..Default::default()
        }),
        vec!["aaaaaaaaaaaaaa"]
    );
    assert_eq!(
        ids(MachineFilter {
            states: vec![MachineState::Started],
            ..Default::default()
        }),
        Vec::<String>::new()
    );

    let events = store.read(|tx| tx.events("aaaaaaaaaaaaaa", 1000)).unwrap();
    assert_eq!(events.len() as i64, aloft_store::MAX_EVENTS_PER_MACHINE);
    assert!(events[0].timestamp > events[1].timestamp, "newest first");
    let recent = store
        .read(|tx| tx.recent_events(["aaaaaaaaaaaaaa"], 3))
        .unwrap();
    assert_eq!(recent["aaaaaaaaaaaaaa"].len(), 3);

    assert!(store.write(|tx| tx.delete_app("web")).unwrap());
    assert!(store.read(|tx| tx.app("web")).unwrap().is_none());
    assert!(store
        .read(|tx| tx.machine_by_id("aaaaaaaaaaaaaa"))
        .unwrap()
        .is_none());
}

/// The list entry of each machine, as JSON turned back into a value.
fn listed(store: &Store, app: &str) -> Vec<serde_json::Value> {
    store
        .read(|tx| tx.listed_machines(app, &MachineFilter::default()))
        .unwrap()
        .iter()
        .map(|l| serde_json::from_slice(&l.json).unwrap())
        .collect()
}

#[test]
fn list_entries_follow_every_committed_change_and_ignore_rolled_back_ones() {
    let store = Store::open_in_memory().unwrap();
    let mut m = machine("aaaaaaaaaaaaaa", "web", "one", "gru", "app");
    store
        .write(|tx| {
            tx.insert_app(&app("web"))?;
            tx.insert_machine(&m)?;
            tx.add_event(&m.id, &event("launch", 1))
        })
        .unwrap();

    // Read twice: the second comes from the cache and must be the same document, which is the
    // API `Machine` with the newest LIST_EVENTS events.
    let first = listed(&store, "web");
    assert_eq!(first, listed(&store, "web"));
    let expected = serde_json::to_value(m.to_api(vec![event("launch", 1)])).unwrap();
    assert_eq!(first, vec![expected]);
    assert!(
        first[0].get("checks").is_none(),
        "no checks key: the agent adds it"
    );

    // A committed row change and an event are seen by the next list.
    m.state = MachineState::Started;
    store.write(|tx| tx.put_machine(&m)).unwrap();
    assert_eq!(listed(&store, "web")[0]["state"], "started");
    store
        .write(|tx| tx.add_event(&m.id, &event("start", 2)))
        .unwrap();
    let after = listed(&store, "web");
    assert_eq!(after[0]["events"][0]["type"], "start", "newest first");

    // A write that fails after changing the row and adding an event leaves both untouched.
    let mut stopped = m.clone();
    stopped.state = MachineState::Stopped;
    let failed: Result<(), StoreError> = store.write(|tx| {
        tx.put_machine(&stopped)?;
        tx.add_event(&m.id, &event("stop", 3))?;
        tx.insert_app(&app("web")) // name taken: rolls everything back
    });
    assert!(failed.is_err());
    assert_eq!(listed(&store, "web"), after);
    let events = store.read(|tx| tx.events(&m.id, 10)).unwrap();
    assert_eq!(events.len(), 2);

    // Many events: the cache keeps the newest, in order, like the database.
    store
        .write(|tx| {
            for ts in 10..30 {
                tx.add_event(&m.id, &event("update", ts))?;
            }
            Ok(())
        })
        .unwrap();
    let cached = store.read(|tx| tx.events(&m.id, 10)).unwrap();
    let from_db = store.read(|tx| tx.events(&m.id, 1000)).unwrap();
    assert_eq!(cached[..], from_db[..10]);
    assert_eq!(
        listed(&store, "web")[0]["events"].as_array().unwrap().len(),
        aloft_store::LIST_EVENTS
    );

    // A filter applies to cached entries too; a deleted app takes its entries with it.
    let only_stopped = MachineFilter {
        states: vec![MachineState::Stopped],
        ..Default::default()
    };
    assert!(store
        .read(|tx| tx.listed_machines("web", &only_stopped))
        .unwrap()
        .is_empty());
    store.write(|tx| tx.delete_app("web")).unwrap();
    store
        .write(|tx| {
            tx.insert_app(&app("web"))?;
            tx.insert_machine(&machine("bbbbbbbbbbbbbb", "web", "two", "gru", "app"))
        })
        .unwrap();
    let ids: Vec<_> = listed(&store, "web")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, ["bbbbbbbbbbbbbb"]);
}

#[test]
fn oci_images_are_per_app_and_live_machine_images_skip_destroyed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db"), Durability::default()).unwrap();
    let row = |app: &str, d: &str, at: &str| aloft_store::OciImageRow {
        app: app.into(),
        digest: d.into(),
        size: 7,
        created_at: at.into(),
    };
    store
        .write(|tx| {
            tx.insert_app(&app("a"))?;
            tx.insert_app(&app("b"))?;
            tx.put_oci_image(&row("a", "sha256:1", "t1"))?;
            tx.put_oci_image(&row("a", "sha256:2", "t2"))?;
            tx.put_oci_image(&row("b", "sha256:1", "t3"))?;
            // Again: the first created_at stays.
            tx.put_oci_image(&row("a", "sha256:1", "t9"))?;
            let mut live = machine("m1", "a", "one", "iad", "app");
            live.config.image = "aloft/a@sha256:1".into();
            let mut gone = machine("m2", "a", "two", "iad", "app");
            gone.config.image = "aloft/a@sha256:2".into();
            gone.state = MachineState::Destroyed;
            tx.insert_machine(&live)?;
            tx.insert_machine(&gone)?;
            Ok(())
        })
        .unwrap();
    store
        .read(|tx| {
            let a: Vec<(String, String)> = tx
                .oci_images(Some("a"))?
                .into_iter()
                .map(|r| (r.digest, r.created_at))
                .collect();
            assert_eq!(
                a,
                [
                    ("sha256:2".into(), "t2".into()),
                    ("sha256:1".into(), "t1".into())
                ]
            );
            assert_eq!(tx.oci_images(None)?.len(), 3);
            assert!(
                tx.oci_image("b", "sha256:2")?.is_none(),
                "images are per app"
            );
            assert_eq!(tx.live_machine_images()?, ["aloft/a@sha256:1"]);
            Ok(())
        })
        .unwrap();
    store
        .write(|tx| {
            assert!(tx.delete_oci_image("a", "sha256:1")?);
            tx.delete_app("b").map(drop)
        })
        .unwrap();
    store
        .read(|tx| {
            assert_eq!(tx.oci_images(None)?.len(), 1);
            Ok(())
        })
        .unwrap();
}
