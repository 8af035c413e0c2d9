//! Store behaviour through its public API, on a real database file.

use std::collections::BTreeMap;

use aloft_api::{Lease, MachineConfig, MachineEvent, MachineState};
use aloft_store::{
    AppRecord, DesiredState, Durability, MachineFilter, MachineRecord, Store, StoreError,
};

fn app(name: &str) -> AppRecord {
    AppRecord {
        id: format!("{name:0<16}"),
        name: name.into(),
        org_slug: "personal".into(),
        network: "default".into(),
        status: "pending".into(),
        created_at: "2024-01-01T00:00:00Z".into(),
    }
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
    let recent = store.read(|tx| tx.recent_events_of_app("web", 3)).unwrap();
    assert_eq!(recent["aaaaaaaaaaaaaa"].len(), 3);

    assert!(store.write(|tx| tx.delete_app("web")).unwrap());
    assert!(store.read(|tx| tx.app("web")).unwrap().is_none());
    assert!(store
        .read(|tx| tx.machine_by_id("aaaaaaaaaaaaaa"))
        .unwrap()
        .is_none());
}
