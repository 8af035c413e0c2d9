//! The controller's view of the process runtime, as a trait so the controller can be driven by
//! the real [`aloft_runtime::Runtime`] or by a fake in tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use aloft_api::exec::{MachineExecResponse, ProcessStat};
use aloft_api::MachineConfig;
use aloft_runtime::{
    Adopted, ConsoleRequest, ConsoleSession, ExecRequest, LaunchSpec, LogLine, LogQuery, Runtime,
    RuntimeError,
};

#[cfg(test)]
pub mod fake;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the controller asks of a process runtime (see [`aloft_runtime::Runtime`] for the
/// meaning of each call). Events come back on the channel handed to `Agent::start_with`.
pub trait Supervisor: Send + Sync + 'static {
    fn reap_orphans(&self) -> Vec<String>;
    /// Stops supervising without touching processes (the agent's handle is gone).
    fn abandon(&self) {}
    fn allocate_ports(&self, config: &MachineConfig) -> Result<BTreeMap<u16, u16>, RuntimeError>;
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<u32, RuntimeError>>;
    fn stop<'a>(
        &'a self,
        machine_id: &'a str,
        signal: i32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn signal(&self, machine_id: &str, signal: i32) -> Result<(), RuntimeError>;
    fn log_query(&self, query: &LogQuery) -> Vec<LogLine>;
    fn log_subscribe(&self) -> tokio::sync::broadcast::Receiver<LogLine>;
    /// Containers a previous agent left (see [`aloft_runtime::Runtime::containers_left`]).
    fn containers_left(&self) -> Vec<String>;
    fn adopt(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Adopted, RuntimeError>>;
    fn reap_container(&self, machine_id: &str);
    /// The machine is destroyed: free what it kept between runs (its network).
    fn release(&self, machine_id: &str);
    /// Frees what machines not in `keep` kept (start-up, after the store was read).
    fn keep_only(&self, keep: &[String]);
    /// A Flycast address of `org` on the machine network, the same for the same `key`.
    fn service_address(&self, org: &str, key: &str) -> Result<std::net::Ipv6Addr, String>;
    fn release_service_address(&self, key: &str);
    /// A container machine's IPv4 address (the proxy's way in).
    fn machine_ipv4(&self, machine_id: &str) -> Option<std::net::Ipv4Addr>;
    /// Runs a command in the running machine.
    fn exec<'a>(
        &'a self,
        machine_id: &'a str,
        req: &'a ExecRequest,
    ) -> BoxFuture<'a, Result<MachineExecResponse, RuntimeError>>;
    /// The running machine's processes (blocking: reads /proc).
    fn processes(&self, machine_id: &str) -> Result<Vec<ProcessStat>, RuntimeError>;
    /// Where the running machine's files are (`aloft machine cp`).
    fn copy_root(&self, machine_id: &str) -> Result<aloft_runtime::copy::CopyRoot, RuntimeError>;
    /// Starts a command on a terminal in the running machine.
    fn console<'a>(
        &'a self,
        machine_id: &'a str,
        req: &'a ConsoleRequest,
    ) -> BoxFuture<'a, Result<ConsoleSession, RuntimeError>>;
}

impl Supervisor for Runtime {
    fn reap_orphans(&self) -> Vec<String> {
        Runtime::reap_orphans(self)
    }
    fn abandon(&self) {
        Runtime::abandon(self)
    }
    fn allocate_ports(&self, config: &MachineConfig) -> Result<BTreeMap<u16, u16>, RuntimeError> {
        Runtime::allocate_ports(self, config)
    }
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<u32, RuntimeError>> {
        Box::pin(Runtime::launch(self, spec))
    }
    fn stop<'a>(
        &'a self,
        machine_id: &'a str,
        signal: i32,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(Runtime::stop(self, machine_id, signal, timeout))
    }
    fn signal(&self, machine_id: &str, signal: i32) -> Result<(), RuntimeError> {
        Runtime::signal(self, machine_id, signal)
    }
    fn log_query(&self, query: &LogQuery) -> Vec<LogLine> {
        self.logs().query(query)
    }
    fn log_subscribe(&self) -> tokio::sync::broadcast::Receiver<LogLine> {
        self.logs().subscribe()
    }
    fn containers_left(&self) -> Vec<String> {
        Runtime::containers_left(self)
    }
    fn adopt(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Adopted, RuntimeError>> {
        Box::pin(Runtime::adopt(self, spec))
    }
    fn reap_container(&self, machine_id: &str) {
        Runtime::reap_container(self, machine_id)
    }
    fn release(&self, machine_id: &str) {
        Runtime::release(self, machine_id)
    }
    fn keep_only(&self, keep: &[String]) {
        Runtime::keep_only(self, keep)
    }
    fn service_address(&self, org: &str, key: &str) -> Result<std::net::Ipv6Addr, String> {
        Runtime::service_address(self, org, key)
    }
    fn release_service_address(&self, key: &str) {
        Runtime::release_service_address(self, key)
    }
    fn machine_ipv4(&self, machine_id: &str) -> Option<std::net::Ipv4Addr> {
        Runtime::machine_ipv4(self, machine_id)
    }
    fn exec<'a>(
        &'a self,
        machine_id: &'a str,
        req: &'a ExecRequest,
    ) -> BoxFuture<'a, Result<MachineExecResponse, RuntimeError>> {
        Box::pin(Runtime::exec(self, machine_id, req))
    }
    fn processes(&self, machine_id: &str) -> Result<Vec<ProcessStat>, RuntimeError> {
        Runtime::processes(self, machine_id)
    }
    fn console<'a>(
        &'a self,
        machine_id: &'a str,
        req: &'a ConsoleRequest,
    ) -> BoxFuture<'a, Result<ConsoleSession, RuntimeError>> {
        Box::pin(Runtime::console(self, machine_id, req))
    }
    fn copy_root(&self, machine_id: &str) -> Result<aloft_runtime::copy::CopyRoot, RuntimeError> {
        Runtime::copy_root(self, machine_id)
    }
}
