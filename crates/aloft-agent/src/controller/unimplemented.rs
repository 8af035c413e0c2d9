//! Fields of Fly's Machines API this agent does not implement, refused by name. The wire types
//! keep every field of Fly's schema (a test in `aloft-api` proves it against the openapi
//! document), so nothing a client sends is dropped unseen: what the agent cannot honour ends
//! here with an error saying what to use instead. Unset, `false` and empty values are accepted:
//! they ask for nothing.

use aloft_api::{CreateMachineRequest, MachineConfig, UpdateMachineRequest};

use super::{DomainError, DomainResult};

/// Refuses the config fields of Fly's schema the agent cannot honour.
pub(super) fn refuse_fly_only_fields(config: &MachineConfig) -> DomainResult<()> {
    if !config.processes.is_empty() {
        return Err(DomainError::invalid_config(
            "config.processes: per-process overrides (exec, env, secrets, ignore_app_secrets, \
             user) are not supported by this agent: a machine runs one command. Set the \
             command in config.init (cmd/exec/entrypoint), the environment in config.env, \
             and app secrets with `aloft secrets set`; use fly.toml [processes] for several \
             commands, one machine per group",
        ));
    }
    if config.disable_machine_autostart == Some(true) {
        return Err(DomainError::invalid_config(
            "config.disable_machine_autostart is deprecated in Fly's API and not supported by \
             this agent; set `autostart: false` on each of config.services instead",
        ));
    }
    for (i, s) in config.services.iter().enumerate() {
        let key = s.force_instance_key.as_deref().filter(|k| !k.is_empty());
        let description = s
            .force_instance_description
            .as_deref()
            .filter(|d| !d.is_empty());
        if let Some(field) = key
            .map(|_| "force_instance_key")
            .or(description.map(|_| "force_instance_description"))
        {
            return Err(DomainError::invalid_config(format!(
                "config.services[{i}].{field}: routing by instance key is not supported by \
                 this agent; a client can pin a request to a machine with the \
                 `fly-force-instance-id` header instead"
            )));
        }
    }
    Ok(())
}

/// The request-level fields of a create or update beside its config.
pub(super) trait RequestFields {
    fn lsvd(&self) -> bool;
}

impl RequestFields for CreateMachineRequest {
    fn lsvd(&self) -> bool {
        self.lsvd
    }
}

impl RequestFields for UpdateMachineRequest {
    fn lsvd(&self) -> bool {
        self.lsvd
    }
}

/// Refuses the request fields (beside `config`) the agent cannot honour.
pub(super) fn refuse_fly_only_request_fields(req: &impl RequestFields) -> DomainResult<()> {
    if req.lsvd() {
        return Err(DomainError::invalid_config(
            "lsvd: Fly's log-structured virtual disks are not supported by this agent; \
             remove `lsvd` (or set it to false)",
        ));
    }
    Ok(())
}
