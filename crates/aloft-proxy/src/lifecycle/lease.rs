//! Choose and lease: the slot a request takes on a machine. For `concurrency.type =
//! "connections"` a client connection keeps the machine it was first given (its affinity
//! lease counts one unit of load there for the connection's life); for `requests` every
//! request takes a slot of its own, held until its response body has been passed on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::balance::Slot;
use crate::core::Core;
use crate::headers::ConnValues;
use crate::hints::Hints;
use crate::select::Unavailable;
use crate::table::{Bind, ConcurrencyKind, PortRoute};

/// Per client connection, whichever back-end serves it.
pub(crate) struct ConnCtx {
    /// The listener the client connected to.
    pub bind: Bind,
    /// Its external port.
    pub port: u16,
    pub client: SocketAddr,
    pub tls: bool,
    /// The proxy's header values that do not change during the connection, made once so
    /// that requests only clone them.
    pub values: ConnValues,
    /// With `concurrency.type = "connections"` the whole client connection sticks to the
    /// machine it was first sent to, and counts as one unit of load there.
    affinity: Mutex<Option<Arc<Slot>>>,
}

impl ConnCtx {
    pub fn new(bind: Bind, client: SocketAddr, tls: bool, region: &str) -> ConnCtx {
        let port = bind.port();
        ConnCtx {
            bind,
            port,
            client,
            tls,
            values: ConnValues::new(client, port, tls, region),
            affinity: Mutex::new(None),
        }
    }

    /// Forgets the connection's machine (it failed): the next request picks again.
    pub fn drop_affinity(&self) {
        self.affinity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// A lease owned by one request or shared by a connection.
pub(crate) enum LeaseRef {
    Owned(Slot),
    Shared(Arc<Slot>),
}

impl std::ops::Deref for LeaseRef {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        match self {
            LeaseRef::Owned(l) => l,
            LeaseRef::Shared(l) => l,
        }
    }
}

impl LeaseRef {
    /// The lease to hold until the response body is passed on: a request's own (`requests`,
    /// or a replay); a connection's affinity lease counts on its own.
    pub fn for_response(self) -> Option<LeaseRef> {
        matches!(self, LeaseRef::Owned(_)).then_some(self)
    }
}

/// The lease for this request: the connection's sticky one for `connections` (unless the
/// request's instance hints name another machine), a new one per request for `requests`.
/// `current` when the caller has just read `route` from the table.
pub(crate) async fn lease_for(
    core: &Core,
    ctx: &ConnCtx,
    route: &Arc<PortRoute>,
    exclude: &[String],
    current: bool,
    hints: &Hints,
) -> Result<LeaseRef, Unavailable> {
    if route.policy.concurrency == ConcurrencyKind::Connections {
        if let Some(l) = ctx
            .affinity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            let still = route.backends.iter().any(|b| b == &l.backend)
                && core.selector().routable(&l.backend);
            if still
                && !exclude.contains(&l.backend.machine_id)
                && hints.allows(&l.backend.machine_id)
            {
                return Ok(LeaseRef::Shared(l));
            }
        }
        let lease = Arc::new(
            core.selector()
                .acquire_from(route, exclude, current, hints)
                .await?,
        );
        *ctx.affinity.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease.clone());
        return Ok(LeaseRef::Shared(lease));
    }
    let lease = core
        .selector()
        .acquire_from(route, exclude, current, hints)
        .await?;
    Ok(LeaseRef::Owned(lease))
}
