//! Running a command in a machine and listing its processes (`exec`, `ps`): queries of a
//! running machine, no state change (no event, no lease needed, as on Fly). A machine that is
//! not running is a precondition failure that says how to start it.

use std::time::Duration;

use aloft_api::exec::{MachineExecResponse, ProcessSort, ProcessStat};
use aloft_runtime::{ExecRequest, RuntimeError};

use super::machines::is_running;
use super::{Controller, DomainError, DomainResult};

impl Controller {
    /// Runs `argv` in the running machine `id` of `app` (see `aloft_runtime::Runtime::exec`).
    pub async fn exec_machine(
        &self,
        app: &str,
        id: &str,
        argv: Vec<String>,
        stdin: Option<String>,
        timeout: Duration,
    ) -> DomainResult<MachineExecResponse> {
        self.running_record(app, id, "run a command in").await?;
        let req = ExecRequest {
            argv,
            stdin: stdin.map(String::into_bytes),
            timeout,
        };
        // Its own task: a client that hangs up does not cancel it, so its timeout still
        // ends the command (a dropped exec would leave it running unbounded).
        let (sup, machine) = (self.sup.clone(), id.to_string());
        tokio::spawn(async move { sup.exec(&machine, &req).await })
            .await
            .map_err(|e| DomainError::internal(format!("exec task failed: {e}")))?
            .map_err(|e| not_running_or_failure(id, e))
    }

    /// The processes of the running machine `id` of `app`, sorted.
    pub async fn machine_processes(
        &self,
        app: &str,
        id: &str,
        sort: ProcessSort,
        descending: bool,
    ) -> DomainResult<Vec<ProcessStat>> {
        self.running_record(app, id, "list the processes of")
            .await?;
        let sup = self.sup.clone();
        let machine = id.to_string();
        let listed = tokio::task::spawn_blocking(move || sup.processes(&machine))
            .await
            .map_err(|e| DomainError::internal(format!("process listing task failed: {e}")))?;
        let mut list = listed.map_err(|e| not_running_or_failure(id, e))?;
        sort.sort(&mut list, descending);
        Ok(list)
    }

    /// Checks the machine exists (handlers call it before they check the request, so an
    /// unknown app or machine is a 404 whatever the body).
    pub async fn check_machine(&self, app: &str, id: &str) -> DomainResult<()> {
        self.record(app, id).await.map(drop)
    }

    /// Checks the machine exists and runs (`doing` names the refused action).
    pub(super) async fn running_record(
        &self,
        app: &str,
        id: &str,
        doing: &str,
    ) -> DomainResult<()> {
        let rec = self.record(app, id).await?;
        if !is_running(rec.state) {
            return Err(DomainError::precondition(format!(
                "machine {id} is {}: cannot {doing} a machine that does not run; start it \
                 first (aloft machine start {id})",
                rec.state
            )));
        }
        Ok(())
    }
}

pub(super) fn not_running_or_failure(id: &str, e: RuntimeError) -> DomainError {
    match e {
        RuntimeError::NotRunning(_) => DomainError::precondition(format!(
            "machine {id} has no running process right now (starting or restarting?); try again \
             once it is started"
        )),
        e => {
            tracing::error!(error = %e, "runtime failure");
            DomainError::internal(e.to_string())
        }
    }
}
