//! The private network's DNS server (Fly's `fdaa::3`): authoritative for `.internal` and
//! `.flycast`, answered from the agent's live machine table ([`DnsTable`], published through a
//! `tokio::sync::watch` channel), with views by source address (a machine sees its own
//! organization's apps; any other source sees all); every other name is forwarded to the
//! upstream resolvers.
//!
//! ```text
//! DnsServer::spawn(DnsConfig, watch::Receiver<Arc<DnsTable>>) → DnsHandle
//!   server   UDP/TCP listeners; per-source limits (limit); forwards in tasks (forward);
//!            encoded answers reused per table (cache)
//!   message  bytes ⇄ hickory Message: answer, forward, or drop
//!   answer   a name + view → records (pure); names: which name form a query is
//! ```
//!
//! Names answered (AAAA unless stated; TTL 5 s): `<app>.internal` (started machines),
//! `<region>.<app>.internal`, `<group>.process.<app>.internal`, `<id>.vm.<app>.internal` (the
//! machine in any state: its address is its own until it is destroyed),
//! `top<N>.nearest.of.<app>.internal` (started machines of the asker's region first, then the
//! others, by id), TXT `vms.<app>.internal`, `regions.<app>.internal`, `_apps.internal`,
//! `_instances.internal` (started machines), and `<app>.flycast` (the app's service
//! addresses). An app of another organization does not exist for the asker (NXDOMAIN). Names
//! that exist have no A records (NOERROR, empty): the private network is IPv6.

mod answer;
mod cache;
mod config;
mod error;
mod forward;
mod limit;
mod message;
mod names;
mod server;
mod table;

pub use answer::{Answer, AnswerRecord, RecordData, Status, View, TTL};
pub use config::{upstream_from_resolv_conf, DnsConfig};
pub use error::DnsError;
pub use hickory_proto::rr::RecordType;
pub use server::{DnsHandle, DnsServer};
pub use table::{DnsMachine, DnsService, DnsTable};

#[cfg(test)]
mod tests {
    /// The agent keeps the handle in shared state (`Arc`, `OnceLock`) and the table in a
    /// `watch` read from any thread.
    #[test]
    fn handle_and_table_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::DnsHandle>();
        shareable::<super::DnsTable>();
    }
}
