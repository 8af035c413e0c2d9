//! Unit tests of the controller's state transitions, over a temp-dir store and the recording
//! [`FakeSupervisor`]: what each action does to a machine, what it asks of the runtime, which
//! transitions it refuses, and how start-up reconciliation settles what a killed agent left.

use std::sync::Arc;
use std::time::Duration;

use aloft_api::{CreateAppRequest, CreateMachineRequest, Init, MachineConfig, MachineState};
use aloft_store::{DesiredState, Durability, Store};
use tokio::sync::broadcast::error::RecvError;

use super::actions::{CreateMachine, DeleteMachine, StopHow, UpdateMachine, WaitFor, WaitMachine};
use super::{Controller, DomainError, DomainResult};
use crate::regions::Regions;
use crate::settings::Limits;
use crate::supervisor::fake::{Call, FakeSupervisor};

const APP: &str = "ctl-test";
/// Longest a test waits for a machine to reach a state.
const WAIT: Duration = Duration::from_secs(10);

/// A controller over a store in a temp dir, driving a fake runtime.
struct World {
    ctl: Arc<Controller>,
    fake: Arc<FakeSupervisor>,
    store: Arc<Store>,
    image: tempfile::TempDir,
    _data: tempfile::TempDir,
}

/// A controller over `store` with a fresh fake runtime, its events consumed.
fn controller(store: Arc<Store>) -> (Arc<Controller>, Arc<FakeSupervisor>) {
    let (fake, events) = FakeSupervisor::new();
    let fake = Arc::new(fake);
    let ctl = Arc::new(Controller::new(
        store,
        fake.clone(),
        Regions::new(&[]).unwrap(),
        Limits::default(),
    ));
    tokio::spawn(ctl.clone().run_runtime_events(events));
    (ctl, fake)
}

fn stop_default() -> StopHow {
    StopHow {
        signal: None,
        timeout: None,
    }
}

impl World {
    async fn new() -> World {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().join("state.db");
        let store = tokio::task::spawn_blocking(move || Store::open(&path, Durability::default()))
            .await
            .unwrap()
            .unwrap();
        let store = Arc::new(store);
        let (ctl, fake) = controller(store.clone());
        ctl.create_app(CreateAppRequest {
            app_name: Some(APP.into()),
            ..Default::default()
        })
        .await
        .unwrap();
        World {
            ctl,
            fake,
            store,
            image: tempfile::tempdir().unwrap(),
            _data: data,
        }
    }

    /// What a new agent over the same store sees: another controller, another (empty) runtime.
    fn restarted(&self) -> (Arc<Controller>, Arc<FakeSupervisor>) {
        controller(self.store.clone())
    }

    /// A config the agent accepts (the fake runs nothing).
    fn config(&self) -> MachineConfig {
        MachineConfig {
            image: format!("dir://{}", self.image.path().display()),
            init: Init {
                exec: Some(vec!["/bin/sleep".into(), "600".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Creates a machine (launched unless `skip_launch`) and returns its id.
    async fn create(&self, skip_launch: bool) -> String {
        let request = CreateMachineRequest {
            config: self.config(),
            skip_launch,
            ..Default::default()
        };
        let m = self
            .ctl
            .create_machine(APP, CreateMachine { request })
            .await
            .unwrap();
        assert_eq!(m.state, MachineState::Created);
        m.id
    }

    /// `DELETE` of machine `id`, with or without `force`.
    async fn destroy(&self, id: &str, force: bool) -> DomainResult<()> {
        let action = DeleteMachine { force, nonce: None };
        self.ctl.destroy_machine(APP, id, action).await
    }

    /// Creates a machine and waits until it is started.
    async fn started(&self) -> String {
        let id = self.create(false).await;
        wait(&self.ctl, &id, MachineState::Started).await;
        id
    }
}

async fn wait(ctl: &Controller, id: &str, state: MachineState) {
    let action = WaitMachine {
        states: vec![WaitFor::State(state)],
        timeout: WAIT,
        instance_id: None,
    };
    let got = ctl.wait_machine(APP, id, action).await.unwrap();
    assert!(
        got.is_some(),
        "machine {id} did not become {state} within {WAIT:?}: {:?}",
        state_of(ctl, id).await
    );
}

async fn state_of(ctl: &Controller, id: &str) -> MachineState {
    ctl.get_machine(APP, id).await.unwrap().state
}

async fn desired_of(ctl: &Controller, id: &str) -> DesiredState {
    ctl.record(APP, id).await.unwrap().desired
}

/// `(type, status)` of the machine's events, oldest first.
async fn events_of(ctl: &Controller, id: &str) -> Vec<(String, String)> {
    let mut events: Vec<(String, String)> = ctl
        .machine_events(APP, id, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.status))
        .collect();
    events.reverse();
    events
}

/// Waits until the machine has an event `(kind, status)` recorded.
async fn wait_for_event(ctl: &Controller, id: &str, kind: &str, status: &str) {
    let mut changes = ctl.subscribe();
    let has = |events: Vec<(String, String)>| events.iter().any(|(k, s)| k == kind && s == status);
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if has(events_of(ctl, id).await) {
                return;
            }
            match changes.recv().await {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the controller went away"),
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "machine {id} got no {kind}/{status} event: {:?}",
        events_of(ctl, id).await
    );
}

fn launch(id: &str, instance_id: &str) -> Call {
    Call::Launch {
        machine_id: id.into(),
        instance_id: instance_id.into(),
    }
}

#[tokio::test]
async fn a_created_machine_is_launched_once_and_becomes_started() {
    let w = World::new().await;
    let id = w.started().await;
    let version = w.ctl.get_machine(APP, &id).await.unwrap().instance_id;
    assert_eq!(w.fake.calls_for(&id), vec![launch(&id, &version)]);
    assert_eq!(desired_of(&w.ctl, &id).await, DesiredState::Started);
    let events = events_of(&w.ctl, &id).await;
    assert_eq!(
        events,
        vec![
            ("launch".into(), "created".into()),
            ("start".into(), "started".into())
        ]
    );
}

#[tokio::test]
async fn skip_launch_creates_without_a_process() {
    let w = World::new().await;
    let id = w.create(true).await;
    assert_eq!(state_of(&w.ctl, &id).await, MachineState::Created);
    assert_eq!(desired_of(&w.ctl, &id).await, DesiredState::Stopped);
    assert!(w.fake.calls_for(&id).is_empty());
}

#[tokio::test]
async fn stop_stops_the_process_and_start_launches_it_again() {
    let w = World::new().await;
    let id = w.started().await;
    w.ctl
        .stop_machine(APP, &id, stop_default(), None)
        .await
        .unwrap();
    // `stop` answers once the machine is stopped and its exit recorded.
    assert_eq!(state_of(&w.ctl, &id).await, MachineState::Stopped);
    assert_eq!(desired_of(&w.ctl, &id).await, DesiredState::Stopped);
    assert!(!w.fake.is_running(&id));
    let stop = Call::Stop {
        machine_id: id.clone(),
        signal: 2,
        timeout: Duration::from_secs(aloft_api::DEFAULT_STOP_TIMEOUT_SECS),
    };
    assert_eq!(w.fake.calls_for(&id).last(), Some(&stop));
    let events = events_of(&w.ctl, &id).await;
    assert!(
        events.contains(&("stop".into(), "stopped".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("exit".into(), "stopped".into())),
        "{events:?}"
    );

    // A second stop changes nothing and asks nothing of the runtime.
    let calls = w.fake.calls_for(&id).len();
    w.ctl
        .stop_machine(APP, &id, stop_default(), None)
        .await
        .unwrap();
    assert_eq!(w.fake.calls_for(&id).len(), calls);

    let previous = w.ctl.start_machine(APP, &id, None).await.unwrap();
    assert_eq!(previous, MachineState::Stopped);
    wait(&w.ctl, &id, MachineState::Started).await;
    assert!(w.fake.is_running(&id));
    let launches = w
        .fake
        .calls_for(&id)
        .into_iter()
        .filter(|c| matches!(c, Call::Launch { .. }))
        .count();
    assert_eq!(launches, 2);
}

#[tokio::test]
async fn a_stop_with_a_signal_and_timeout_passes_them_to_the_runtime() {
    let w = World::new().await;
    let id = w.started().await;
    let how = StopHow {
        signal: Some(15),
        timeout: Some(Duration::from_secs(3)),
    };
    w.ctl.stop_machine(APP, &id, how, None).await.unwrap();
    let stop = Call::Stop {
        machine_id: id.clone(),
        signal: 15,
        timeout: Duration::from_secs(3),
    };
    assert_eq!(w.fake.calls_for(&id).last(), Some(&stop));
}

#[tokio::test]
async fn an_update_of_a_started_machine_replaces_its_process_with_the_new_version() {
    let w = World::new().await;
    let id = w.started().await;
    let old = w.ctl.get_machine(APP, &id).await.unwrap().instance_id;
    let mut config = w.config();
    config.env.insert("COLOUR".into(), "blue".into());
    let request = aloft_api::UpdateMachineRequest {
        config,
        ..Default::default()
    };
    let action = UpdateMachine {
        request,
        nonce: None,
    };
    let updated = w.ctl.update_machine(APP, &id, action).await.unwrap();
    assert_eq!(updated.state, MachineState::Replacing);
    let new = updated.instance_id;
    assert_ne!(new, old);
    let wait_new = WaitMachine {
        states: vec![WaitFor::State(MachineState::Started)],
        timeout: WAIT,
        instance_id: Some(new.clone()),
    };
    let got = w.ctl.wait_machine(APP, &id, wait_new).await.unwrap();
    assert_eq!(got, Some((MachineState::Started, new.clone())));
    let stop = Call::Stop {
        machine_id: id.clone(),
        signal: 2,
        timeout: Duration::from_secs(aloft_api::DEFAULT_STOP_TIMEOUT_SECS),
    };
    assert_eq!(
        w.fake.calls_for(&id),
        vec![launch(&id, &old), stop, launch(&id, &new)]
    );
    let m = w.ctl.get_machine(APP, &id).await.unwrap();
    assert_eq!(m.config.env.get("COLOUR").map(String::as_str), Some("blue"));
}

#[tokio::test]
async fn a_started_machine_is_destroyed_only_with_force_and_then_killed() {
    let w = World::new().await;
    let id = w.started().await;
    let refused = w.destroy(&id, false).await.unwrap_err();
    assert!(
        matches!(&refused, DomainError::Precondition(m) if m.contains("force=true")),
        "{refused:?}"
    );
    assert_eq!(state_of(&w.ctl, &id).await, MachineState::Started);
    assert!(w.fake.is_running(&id));

    w.destroy(&id, true).await.unwrap();
    assert_eq!(state_of(&w.ctl, &id).await, MachineState::Destroyed);
    assert!(!w.fake.is_running(&id));
    let kill = Call::Stop {
        machine_id: id.clone(),
        signal: 9,
        timeout: Duration::from_secs(1),
    };
    assert_eq!(w.fake.calls_for(&id).last(), Some(&kill));
    // The kill's exit event may be recorded before or after the destroy.
    let events = events_of(&w.ctl, &id).await;
    assert!(
        events.contains(&("destroy".into(), "destroyed".into())),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_stopped_machine_is_destroyed_without_force_and_without_a_stop() {
    let w = World::new().await;
    let id = w.create(true).await;
    w.destroy(&id, false).await.unwrap();
    assert_eq!(state_of(&w.ctl, &id).await, MachineState::Destroyed);
    assert!(w.fake.calls_for(&id).is_empty());
}

#[tokio::test]
async fn a_destroyed_machine_refuses_every_transition() {
    let w = World::new().await;
    let id = w.create(true).await;
    let destroy = || DeleteMachine {
        force: true,
        nonce: None,
    };
    w.ctl.destroy_machine(APP, &id, destroy()).await.unwrap();
    let precondition = |r: Result<(), DomainError>, what: &str| match r {
        Err(DomainError::Precondition(m)) => assert!(m.contains(&id), "{what}: {m}"),
        other => panic!("{what} of a destroyed machine: {other:?}"),
    };
    precondition(w.ctl.start_machine(APP, &id, None).await.map(drop), "start");
    precondition(
        w.ctl.stop_machine(APP, &id, stop_default(), None).await,
        "stop",
    );
    precondition(
        w.ctl.restart_machine(APP, &id, stop_default(), None).await,
        "restart",
    );
    precondition(w.ctl.signal_machine(APP, &id, 1, None).await, "signal");
    precondition(w.ctl.destroy_machine(APP, &id, destroy()).await, "destroy");
    precondition(w.ctl.set_cordoned(APP, &id, true, None).await, "cordon");
    assert!(w.fake.calls_for(&id).is_empty(), "{:?}", w.fake.calls());
}

#[tokio::test]
async fn a_started_machine_cannot_be_started_and_an_unknown_one_is_not_found() {
    let w = World::new().await;
    let id = w.started().await;
    let again = w.ctl.start_machine(APP, &id, None).await.unwrap_err();
    assert!(matches!(again, DomainError::Precondition(_)), "{again:?}");
    let unknown = w.ctl.start_machine(APP, "nope", None).await.unwrap_err();
    assert!(matches!(unknown, DomainError::NotFound(_)), "{unknown:?}");
    let no_app = w.ctl.start_machine("other", &id, None).await.unwrap_err();
    assert!(matches!(no_app, DomainError::NotFound(m) if m.contains("other")));
}

#[tokio::test]
async fn an_exit_the_restart_policy_handles_keeps_the_machine_started() {
    let w = World::new().await;
    let id = w.started().await;
    w.fake.exit(&id, 1, true);
    wait_for_event(&w.ctl, &id, "exit", "restarting").await;
    // The runtime's `Started` of the restarted process follows the exit.
    wait_for_event(&w.ctl, &id, "start", "started").await;
    assert_eq!(state_of(&w.ctl, &id).await, MachineState::Started);
    assert_eq!(desired_of(&w.ctl, &id).await, DesiredState::Started);
    assert_eq!(w.ctl.record(APP, &id).await.unwrap().restart_count, 1);

    // When the policy gives up, the machine is down for good: stopped, and not relaunched by an
    // agent restart.
    w.fake.exit(&id, 3, false);
    wait(&w.ctl, &id, MachineState::Stopped).await;
    assert_eq!(desired_of(&w.ctl, &id).await, DesiredState::Stopped);
    let launches = w
        .fake
        .calls_for(&id)
        .into_iter()
        .filter(|c| matches!(c, Call::Launch { .. }))
        .count();
    assert_eq!(launches, 1, "restarts are the runtime's, not new launches");
}

#[tokio::test]
async fn reconcile_settles_what_a_killed_agent_left_and_relaunches_started_machines() {
    let w = World::new().await;
    let stopping = w.started().await;
    let destroying = w.started().await;
    let running = w.started().await;
    let created = w.create(true).await;
    // The agent was killed in the middle of a stop and of a destroy.
    for (id, state, desired) in [
        (&stopping, MachineState::Stopping, DesiredState::Stopped),
        (
            &destroying,
            MachineState::Destroying,
            DesiredState::Destroyed,
        ),
    ] {
        let mut rec = w.ctl.record(APP, id).await.unwrap();
        rec.state = state;
        rec.desired = desired;
        w.ctl
            .db(move |s| s.write(|tx| tx.put_machine(&rec)))
            .await
            .unwrap();
    }

    let (ctl, fake) = w.restarted();
    fake.set_orphans(&[&stopping, &destroying, &running]);
    let report = ctl.reconcile().await.unwrap();
    assert_eq!(report.reaped.len(), 3);
    assert_eq!(report.relaunched, vec![running.clone()]);
    assert!(report.failed.is_empty());
    assert_eq!(fake.calls().first(), Some(&Call::ReapOrphans));

    assert_eq!(state_of(&ctl, &stopping).await, MachineState::Stopped);
    let events = events_of(&ctl, &stopping).await;
    assert_eq!(events.last(), Some(&("exit".into(), "stopped".into())));
    let exit = &ctl.machine_events(APP, &stopping, 1).await.unwrap()[0];
    assert_eq!(
        exit.request.as_ref().unwrap()["agent_restarted"],
        serde_json::json!(true)
    );

    assert_eq!(state_of(&ctl, &destroying).await, MachineState::Destroyed);
    let events = events_of(&ctl, &destroying).await;
    assert_eq!(events.last(), Some(&("destroy".into(), "destroyed".into())));

    wait(&ctl, &running, MachineState::Started).await;
    assert_eq!(state_of(&ctl, &created).await, MachineState::Created);
    // Only the machine that should run was launched, exactly once.
    let launched: Vec<Call> = fake
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Launch { .. }))
        .collect();
    let version = ctl.get_machine(APP, &running).await.unwrap().instance_id;
    assert_eq!(launched, vec![launch(&running, &version)]);
}

/// A blue-green switch: greens uncordoned and blues cordoned in one transaction, published
/// together; unknown machines skipped.
#[tokio::test]
async fn switch_cordons_moves_traffic_in_one_step() {
    let w = World::new().await;
    let (blue, green) = (w.started().await, w.started().await);
    w.ctl.set_cordoned(APP, &green, true, None).await.unwrap();
    let mut changes = w.ctl.subscribe();
    w.ctl
        .switch_cordons(
            APP,
            std::slice::from_ref(&green),
            &[blue.clone(), "gone".into()],
        )
        .await
        .unwrap();
    let cordoned = |id: &str| {
        let (ctl, id) = (w.ctl.clone(), id.to_string());
        async move { ctl.get_machine(APP, &id).await.unwrap().cordoned }
    };
    assert!(!cordoned(&green).await && cordoned(&blue).await);
    let mut published = vec![
        changes.try_recv().unwrap().machine.id.clone(),
        changes.try_recv().unwrap().machine.id.clone(),
    ];
    published.sort();
    let mut both = vec![blue.clone(), green.clone()];
    both.sort();
    assert_eq!(published, both, "both halves published at once");
    // Idempotent: a switch again changes nothing and publishes nothing.
    w.ctl
        .switch_cordons(
            APP,
            std::slice::from_ref(&green),
            std::slice::from_ref(&blue),
        )
        .await
        .unwrap();
    assert!(changes.try_recv().is_err());
}

/// A release command's machine that ran when the agent was killed is not relaunched after the
/// restart (its release decides whether to run it again): it is stopped, desired stopped.
#[tokio::test]
async fn reconcile_never_relaunches_a_release_command_machine() {
    let w = World::new().await;
    let mut config = w.config();
    config.metadata.insert(
        aloft_api::metadata::PROCESS_GROUP.into(),
        aloft_api::metadata::RELEASE_COMMAND_GROUP.into(),
    );
    let request = CreateMachineRequest {
        config,
        ..Default::default()
    };
    let id = w
        .ctl
        .create_machine(APP, CreateMachine { request })
        .await
        .unwrap()
        .id;
    wait(&w.ctl, &id, MachineState::Started).await;
    let (ctl, fake) = w.restarted();
    fake.set_orphans(&[&id]);
    let report = ctl.reconcile().await.unwrap();
    assert!(report.relaunched.is_empty(), "{report:?}");
    assert_eq!(state_of(&ctl, &id).await, MachineState::Stopped);
    assert_eq!(desired_of(&ctl, &id).await, DesiredState::Stopped);
    assert!(!fake
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Launch { .. })));
}

#[tokio::test]
async fn exec_and_ps_need_a_running_machine_and_reach_its_runtime() {
    let w = World::new().await;
    let idle = w.create(true).await;
    let argv = vec!["echo".to_string(), "hi".to_string()];
    let refused = w
        .ctl
        .exec_machine(APP, &idle, argv.clone(), None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, DomainError::Precondition(m) if m.contains("start it first")),
        "{refused:?}"
    );
    let sort = aloft_api::exec::ProcessSort::Pid;
    assert!(matches!(
        w.ctl.machine_processes(APP, &idle, sort, false).await,
        Err(DomainError::Precondition(_))
    ));
    assert!(matches!(
        w.ctl.machine_processes(APP, "nope", sort, false).await,
        Err(DomainError::NotFound(_))
    ));
    let id = w.started().await;
    let answer = w
        .ctl
        .exec_machine(APP, &id, argv, None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.stdout, "echo hi");
    assert!(w.ctl.machine_processes(APP, &id, sort, true).await.is_ok());
}

/// A standby (flyctl-behaviour §3.3 step 6) starts when the host fails the machine it watches
/// (here: its launch fails for a reason of the host), never when that machine crashes, is
/// stopped, or cannot start because of its own config.
#[tokio::test]
async fn a_standby_takes_over_only_when_the_host_fails_its_machine() {
    let w = World::new().await;
    let primary = w.started().await;
    let mut config = w.config();
    config.set_standby_for(vec![primary.clone()]);
    let request = CreateMachineRequest {
        config,
        skip_launch: true,
        ..Default::default()
    };
    let standby = w
        .ctl
        .create_machine(APP, CreateMachine { request })
        .await
        .unwrap()
        .id;
    let launches = |id: &str| {
        w.fake
            .calls_for(id)
            .iter()
            .filter(|c| matches!(c, Call::Launch { .. }))
            .count()
    };

    // A crash handled by the restart policy, a crash for good, a stop: the standby stays down.
    w.fake.exit(&primary, 1, true);
    wait_for_event(&w.ctl, &primary, "exit", "restarting").await;
    wait_for_event(&w.ctl, &primary, "start", "started").await;
    w.fake.exit(&primary, 1, false);
    wait(&w.ctl, &primary, MachineState::Stopped).await;
    w.ctl.start_machine(APP, &primary, None).await.unwrap();
    wait(&w.ctl, &primary, MachineState::Started).await;
    w.ctl
        .stop_machine(APP, &primary, stop_default(), None)
        .await
        .unwrap();
    wait(&w.ctl, &primary, MachineState::Stopped).await;
    // The machine's own fault (nothing to run): still not the host's.
    w.fake.fail_launches(&primary, false);
    assert!(w.ctl.start_machine(APP, &primary, None).await.is_err());
    wait(&w.ctl, &primary, MachineState::Failed).await;
    // Nothing may happen: give a wrongly started takeover task time to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(launches(&standby), 0, "the standby never started");
    assert_eq!(state_of(&w.ctl, &standby).await, MachineState::Created);

    // The host cannot run it (its cgroup cannot be made): the standby takes over.
    w.fake.fail_launches(&primary, true);
    assert!(w.ctl.start_machine(APP, &primary, None).await.is_err());
    wait(&w.ctl, &standby, MachineState::Started).await;
    assert_eq!(launches(&standby), 1);
    let got = w.ctl.get_machine(APP, &standby).await.unwrap();
    assert_eq!(got.config.env["FLY_STANDBY_FOR"], primary);
}

#[tokio::test]
async fn volumes_are_refused_with_the_reason_when_the_host_has_none() {
    let w = World::new().await;
    w.ctl
        .set_volume_host(Err("volumes need an agent running as root".into()));
    let req = aloft_api::volumes::CreateVolumeRequest {
        name: "data".into(),
        ..Default::default()
    };
    let err = w.ctl.create_volume(APP, req).await.unwrap_err();
    assert!(
        matches!(err, DomainError::Precondition(_)) && err.message().contains("running as root"),
        "{err}"
    );
    assert!(w.ctl.list_volumes(APP).await.unwrap().is_empty());
    // A machine naming a volume that does not exist is refused before anything is written.
    let mut config = w.config();
    config.mounts = vec![aloft_api::MachineMount {
        volume: "vol_missing".into(),
        path: "/data".into(),
        ..Default::default()
    }];
    let request = CreateMachineRequest {
        config,
        ..Default::default()
    };
    let err = w
        .ctl
        .create_machine(APP, CreateMachine { request })
        .await
        .unwrap_err();
    assert!(err.message().contains("config.mounts[0]"), "{err}");
}
