//! A recording fake [`Supervisor`] for the controller's unit tests: it runs nothing, records
//! every call, and reports [`RuntimeEvent`]s the way the real runtime does (a launch is followed
//! by `Started`, a stop of a running machine by `Exited { requested_stop }` before the stop
//! returns). Tests make processes exit on their own with [`FakeSupervisor::exit`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aloft_api::exec::{MachineExecResponse, ProcessStat};
use aloft_api::{ExitEvent, MachineConfig};
use aloft_runtime::{
    Adopted, ConsoleRequest, ConsoleSession, ExecRequest, LaunchSpec, LogLine, LogQuery,
    RuntimeError, RuntimeEvent,
};
use tokio::sync::{broadcast, mpsc};

use super::{BoxFuture, Supervisor};

/// One call the controller made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    ReapOrphans,
    Launch {
        machine_id: String,
        instance_id: String,
    },
    Stop {
        machine_id: String,
        signal: i32,
        timeout: Duration,
    },
    Signal {
        machine_id: String,
        signal: i32,
    },
}

/// A process the fake pretends to run.
struct Process {
    instance_id: String,
    restart_count: u32,
}

/// See the module docs.
pub struct FakeSupervisor {
    calls: Mutex<Vec<Call>>,
    running: Mutex<HashMap<String, Process>>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    /// What `reap_orphans` answers (machines a previous agent left processes of).
    orphans: Mutex<Vec<String>>,
    logs: broadcast::Sender<LogLine>,
    next_pid: Mutex<u32>,
    /// Machines whose launches fail: `true` for a failure of the host (a cgroup error),
    /// `false` for one of the machine's own (nothing to run).
    failing_launches: Mutex<HashMap<String, bool>>,
}

impl FakeSupervisor {
    /// The fake and the receiving end of its events (for `Controller::run_runtime_events`).
    pub fn new() -> (FakeSupervisor, mpsc::UnboundedReceiver<RuntimeEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let fake = FakeSupervisor {
            calls: Mutex::default(),
            running: Mutex::default(),
            events,
            orphans: Mutex::default(),
            logs: broadcast::channel(16).0,
            next_pid: Mutex::new(100),
            failing_launches: Mutex::default(),
        };
        (fake, rx)
    }

    /// From now on, launches of `machine_id` fail: for a reason of the host (`host`) or of
    /// the machine itself.
    pub fn fail_launches(&self, machine_id: &str, host: bool) {
        self.failing_launches
            .lock()
            .unwrap()
            .insert(machine_id.to_string(), host);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The calls about `machine_id`, in order.
    pub fn calls_for(&self, machine_id: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| match c {
                Call::ReapOrphans => false,
                Call::Launch { machine_id: m, .. }
                | Call::Stop { machine_id: m, .. }
                | Call::Signal { machine_id: m, .. } => m == machine_id,
            })
            .collect()
    }

    /// Whether the fake runs a process for `machine_id`.
    pub fn is_running(&self, machine_id: &str) -> bool {
        self.running.lock().unwrap().contains_key(machine_id)
    }

    /// Makes the next `reap_orphans` report these machines.
    pub fn set_orphans(&self, ids: &[&str]) {
        *self.orphans.lock().unwrap() = ids.iter().map(|s| s.to_string()).collect();
    }

    /// The process of `machine_id` exits on its own with `exit_code`. With `restart`, the restart
    /// policy runs it again: `Exited { restarting }` then `Started`, as the runtime reports it.
    pub fn exit(&self, machine_id: &str, exit_code: i32, restart: bool) {
        let mut running = self.running.lock().unwrap();
        let Some(p) = running.get_mut(machine_id) else {
            panic!("machine {machine_id} has no process to exit");
        };
        let instance_id = p.instance_id.clone();
        if restart {
            p.restart_count += 1;
        }
        let restart_count = p.restart_count;
        if !restart {
            running.remove(machine_id);
        }
        drop(running);
        self.send(RuntimeEvent::Exited {
            machine_id: machine_id.to_string(),
            instance_id: instance_id.clone(),
            exit: ExitEvent {
                exit_code,
                restarting: restart,
                ..Default::default()
            },
            restart_count,
        });
        if restart {
            let pid = self.pid();
            self.send(RuntimeEvent::Started {
                machine_id: machine_id.to_string(),
                instance_id,
                pid,
                address: None,
            });
        }
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn send(&self, event: RuntimeEvent) {
        // The controller's consumer may be gone at the end of a test.
        let _ = self.events.send(event);
    }

    fn pid(&self) -> u32 {
        let mut next = self.next_pid.lock().unwrap();
        *next += 1;
        *next
    }
}

impl Supervisor for FakeSupervisor {
    fn reap_orphans(&self) -> Vec<String> {
        self.record(Call::ReapOrphans);
        std::mem::take(&mut *self.orphans.lock().unwrap())
    }

    fn allocate_ports(&self, config: &MachineConfig) -> Result<BTreeMap<u16, u16>, RuntimeError> {
        Ok(config
            .services
            .iter()
            .map(|s| (s.internal_port, 40000 + s.internal_port % 1000))
            .collect())
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<u32, RuntimeError>> {
        Box::pin(async move {
            self.record(Call::Launch {
                machine_id: spec.machine_id.clone(),
                instance_id: spec.instance_id.clone(),
            });
            let failing = self
                .failing_launches
                .lock()
                .unwrap()
                .get(&spec.machine_id)
                .copied();
            match failing {
                Some(true) => {
                    return Err(RuntimeError::Cgroup {
                        machine_id: spec.machine_id,
                        source: std::io::Error::other("no cgroup hierarchy (fake)"),
                    })
                }
                Some(false) => return Err(RuntimeError::NoCommand(spec.machine_id)),
                None => {}
            }
            let mut running = self.running.lock().unwrap();
            if running.contains_key(&spec.machine_id) {
                return Err(RuntimeError::AlreadyRunning(spec.machine_id));
            }
            running.insert(
                spec.machine_id.clone(),
                Process {
                    instance_id: spec.instance_id.clone(),
                    restart_count: 0,
                },
            );
            drop(running);
            let pid = self.pid();
            self.send(RuntimeEvent::Started {
                machine_id: spec.machine_id,
                instance_id: spec.instance_id,
                pid,
                address: None,
            });
            Ok(pid)
        })
    }

    fn stop<'a>(
        &'a self,
        machine_id: &'a str,
        signal: i32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            self.record(Call::Stop {
                machine_id: machine_id.to_string(),
                signal,
                timeout,
            });
            let Some(p) = self.running.lock().unwrap().remove(machine_id) else {
                return Err(RuntimeError::NotRunning(machine_id.to_string()));
            };
            self.send(RuntimeEvent::Exited {
                machine_id: machine_id.to_string(),
                instance_id: p.instance_id,
                exit: ExitEvent {
                    exit_code: 128 + signal,
                    signal,
                    requested_stop: true,
                    ..Default::default()
                },
                restart_count: p.restart_count,
            });
            Ok(())
        })
    }

    fn signal(&self, machine_id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.record(Call::Signal {
            machine_id: machine_id.to_string(),
            signal,
        });
        if self.is_running(machine_id) {
            Ok(())
        } else {
            Err(RuntimeError::NotRunning(machine_id.to_string()))
        }
    }

    fn log_query(&self, _query: &LogQuery) -> Vec<LogLine> {
        Vec::new()
    }

    fn log_subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.logs.subscribe()
    }
    fn containers_left(&self) -> Vec<String> {
        Vec::new()
    }
    fn adopt(&self, _spec: LaunchSpec) -> BoxFuture<'_, Result<Adopted, RuntimeError>> {
        Box::pin(async { Ok(Adopted::NotFound) })
    }
    fn reap_container(&self, _machine_id: &str) {}
    fn release(&self, _machine_id: &str) {}
    fn keep_only(&self, _keep: &[String]) {}
    fn service_address(&self, _org: &str, _key: &str) -> Result<std::net::Ipv6Addr, String> {
        Err("the fake supervisor runs no machine network".into())
    }
    fn release_service_address(&self, _key: &str) {}
    fn machine_ipv4(&self, _machine_id: &str) -> Option<std::net::Ipv4Addr> {
        None
    }
    /// Echoes the argv on stdout, exit 0, when the machine runs.
    fn exec<'a>(
        &'a self,
        machine_id: &'a str,
        req: &'a ExecRequest,
    ) -> BoxFuture<'a, Result<MachineExecResponse, RuntimeError>> {
        let running = self.is_running(machine_id);
        let answer = if running {
            Ok(MachineExecResponse {
                stdout: req.argv.join(" "),
                ..Default::default()
            })
        } else {
            Err(RuntimeError::NotRunning(machine_id.to_string()))
        };
        Box::pin(async move { answer })
    }
    fn processes(&self, machine_id: &str) -> Result<Vec<ProcessStat>, RuntimeError> {
        if self.is_running(machine_id) {
            Ok(Vec::new())
        } else {
            Err(RuntimeError::NotRunning(machine_id.to_string()))
        }
    }
    /// Has no files: copies are refused as the runtime's failure.
    fn copy_root(&self, machine_id: &str) -> Result<aloft_runtime::copy::CopyRoot, RuntimeError> {
        Err(if self.is_running(machine_id) {
            RuntimeError::Container {
                machine_id: machine_id.to_string(),
                message: "the fake supervisor has no files".into(),
            }
        } else {
            RuntimeError::NotRunning(machine_id.to_string())
        })
    }
    /// Runs no terminal: the machine's runtime cannot start one.
    fn console<'a>(
        &'a self,
        machine_id: &'a str,
        _req: &'a ConsoleRequest,
    ) -> BoxFuture<'a, Result<ConsoleSession, RuntimeError>> {
        let err = if self.is_running(machine_id) {
            RuntimeError::Container {
                machine_id: machine_id.to_string(),
                message: "the fake supervisor runs no terminals".into(),
            }
        } else {
            RuntimeError::NotRunning(machine_id.to_string())
        };
        Box::pin(async move { Err(err) })
    }
}
