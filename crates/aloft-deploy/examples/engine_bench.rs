//! Orchestration overhead of the planners and the engine, without any platform cost: a first
//! deploy of 3 groups reaching 50 + 20 + 5 machines (rolling: every machine waited on), and a
//! `scale count web=200` plan, against an in-memory target that answers at once.
//! Run by `bench/deploy.sh`; prints figures, asserts nothing about time.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aloft_api::volumes::{CreateVolumeRequest, Volume};
use aloft_api::{
    CreateMachineRequest, Machine, MachineConfig, MachineService, MachineState,
    UpdateMachineRequest,
};
use aloft_deploy::engine::CommandExit;
use aloft_deploy::engine::{run_release, DeployTarget, TargetError};
use aloft_deploy::plan::plan_deploy;
use aloft_deploy::scale::{plan_count, CountRequest, CountSpec};
use aloft_deploy::{DeployEvent, Release, ReleaseSpec, ReleaseStatus};

#[derive(Default)]
struct Instant0 {
    machines: Mutex<BTreeMap<String, Machine>>,
}

impl DeployTarget for Instant0 {
    async fn list_machines(&self) -> Result<Vec<Machine>, TargetError> {
        Ok(self.machines.lock().unwrap().values().cloned().collect())
    }
    async fn create_machine(&self, req: CreateMachineRequest) -> Result<Machine, TargetError> {
        let mut ms = self.machines.lock().unwrap();
        let id = format!("m{:05}", ms.len());
        let region = req.region.as_deref().unwrap_or("gru");
        let m = Machine {
            instance_id: "v1".into(),
            created_at: format!("2026-01-01T00:00:00.{:05}Z", ms.len()),
            ..Machine::new(&id, region, MachineState::Started, req.config)
        };
        ms.insert(id, m.clone());
        Ok(m)
    }
    async fn update_machine(
        &self,
        id: &str,
        req: UpdateMachineRequest,
    ) -> Result<Machine, TargetError> {
        let mut ms = self.machines.lock().unwrap();
        let m = ms
            .get_mut(id)
            .ok_or_else(|| TargetError::NotFound(id.into()))?;
        m.config = req.config;
        Ok(m.clone())
    }
    async fn destroy_machine(&self, id: &str, _force: bool) -> Result<(), TargetError> {
        self.machines.lock().unwrap().remove(id);
        Ok(())
    }
    async fn wait_for_state(
        &self,
        _id: &str,
        _s: MachineState,
        _t: Duration,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    async fn smoke_check(&self, _id: &str, _w: Duration) -> Result<(), TargetError> {
        Ok(())
    }
    async fn wait_for_checks(&self, _id: &str, _t: Duration) -> Result<(), TargetError> {
        Ok(())
    }
    async fn recorded(&self) -> Result<Vec<DeployEvent>, TargetError> {
        Ok(Vec::new())
    }
    async fn run_to_exit(&self, _id: &str, _t: Duration) -> Result<CommandExit, TargetError> {
        Ok(CommandExit {
            exit_code: 0,
            last_lines: Vec::new(),
        })
    }
    async fn switch_traffic(&self, _g: &[String], _b: &[String]) -> Result<(), TargetError> {
        Ok(())
    }
    async fn list_volumes(&self) -> Result<Vec<Volume>, TargetError> {
        Ok(Vec::new())
    }
    async fn create_volume(&self, _req: CreateVolumeRequest) -> Result<Volume, TargetError> {
        Err(TargetError::Other("the bench deploys no volumes".into()))
    }
    fn default_region(&self, _primary: Option<&str>) -> String {
        "gru".into()
    }
    async fn record(&self, _event: DeployEvent) -> Result<(), TargetError> {
        Ok(())
    }
}

fn spec() -> ReleaseSpec {
    let mut web = MachineConfig::default();
    web.init.cmd = Some(vec!["sleep".into(), "3600".into()]);
    web.services.push(MachineService {
        internal_port: 8080,
        protocol: "tcp".into(),
        ..Default::default()
    });
    let worker = MachineConfig {
        init: web.init.clone(),
        ..MachineConfig::default()
    };
    let groups = BTreeMap::from([
        ("web".into(), web),
        ("worker".into(), worker.clone()),
        ("cron".into(), worker),
    ]);
    ReleaseSpec {
        image: "aloft/bench@sha256:0".into(),
        groups,
        default_group: "cron".into(),
        primary_region: Some("gru".into()),
        ..ReleaseSpec::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = Instant0::default();
    let counts = BTreeMap::from([
        ("web".to_string(), 50),
        ("worker".to_string(), 20),
        ("cron".to_string(), 5),
    ]);
    let t0 = Instant::now();
    let plan = plan_deploy(&spec(), &[], &counts, None).unwrap();
    let release = Release {
        id: "r1".into(),
        version: 1,
        app: "bench".into(),
        status: ReleaseStatus::Pending,
        spec: spec(),
        plan: plan.frozen,
        desired_counts: counts,
        image_digest: None,
        created_at: String::new(),
        updated_at: String::new(),
        error: None,
        scale: None,
        group_counts: Default::default(),
        rollback_of: None,
        created_by: None,
        phase: None,
    };
    rt.block_on(run_release(&target, &release, false)).unwrap();
    let deploy = t0.elapsed();
    let n = target.machines.lock().unwrap().len();
    assert_eq!(n, 75);

    let machines: Vec<Machine> = target.machines.lock().unwrap().values().cloned().collect();
    let t1 = Instant::now();
    let req = CountRequest {
        counts: BTreeMap::from([("web".to_string(), CountSpec::Absolute(200))]),
        ..CountRequest::default()
    };
    let scale = plan_count(&req, &release.spec, &release.meta(), &machines).unwrap();
    let scale_t = t1.elapsed();
    assert_eq!(scale.create.len(), 150);

    println!(
        "engine: first deploy 50+20+5 machines, planning + orchestration: {:.1} ms",
        deploy.as_secs_f64() * 1e3
    );
    println!(
        "engine: scale count web=200 planning (150 new machines): {:.2} ms",
        scale_t.as_secs_f64() * 1e3
    );
}
