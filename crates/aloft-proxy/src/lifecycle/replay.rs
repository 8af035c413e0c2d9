//! Retry/replay: what the lifecycle does with a machine's `fly-replay` answer (parsing is
//! `crate::replay`'s) and how a replay's target is leased.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::StatusCode;

use super::lease::LeaseRef;
use super::Answer;
use crate::core::Core;
use crate::hints::Hints;
use crate::replay::{Replay, MAX_REPLAYS, MAX_REPLAY_BODY};
use crate::select::Unavailable;
use crate::table::PortRoute;

/// A `fly-replay` being carried out.
pub(crate) struct Replaying {
    /// Where it may go (regions only, instance…).
    pub hints: Hints,
    /// `elsewhere=true`: the machine that asked, excluded.
    not: Option<String>,
    /// `timeout`: how long finding a machine may take.
    timeout: Option<Duration>,
    /// `fly-replay-src` for the target.
    pub src: Option<HeaderValue>,
    /// The header as sent, for messages.
    pub header: String,
}

impl Replaying {
    /// A slot on a machine of the replay's target. Connection affinity does not apply: the
    /// lease belongs to this request.
    pub async fn lease(
        &self,
        core: &Core,
        route: &Arc<PortRoute>,
        exclude: &[String],
    ) -> Result<LeaseRef, Unavailable> {
        let mut with_not;
        let exclude = match &self.not {
            Some(m) => {
                with_not = exclude.to_vec();
                with_not.push(m.clone());
                &with_not[..]
            }
            None => exclude,
        };
        let acquire = core
            .selector()
            .acquire_from(route, exclude, false, &self.hints);
        let lease = match self.timeout {
            Some(t) => tokio::time::timeout(t, acquire)
                .await
                .map_err(|_| Unavailable(format!("none within the replay timeout of {t:?}")))??,
            None => acquire.await?,
        };
        Ok(LeaseRef::Owned(lease))
    }
}

/// What to do about a `fly-replay` header in a response.
pub(crate) enum ReplayStep {
    /// Not acted on (logged): the response goes to the client.
    Ignore,
    /// The client gets this instead.
    Answer(Answer),
    /// Send the request again, there.
    Replay(Replaying),
}

/// Decides on a `fly-replay` header from `machine` (of `region`); `replayable` when the
/// request can be sent again, `replays` how many it has had.
pub(crate) fn replay_step(
    value: &HeaderValue,
    route: &PortRoute,
    machine: &str,
    region: &str,
    replayable: bool,
    replays: usize,
) -> ReplayStep {
    let header = String::from_utf8_lossy(value.as_bytes()).into_owned();
    match Replay::parse(value) {
        Err(why) => {
            tracing::warn!(
                app = %route.app, machine,
                "fly-replay `{header}` ignored ({why}): the response goes to the client"
            );
            ReplayStep::Ignore
        }
        Ok(_) if !replayable => {
            tracing::warn!(
                app = %route.app, machine,
                "fly-replay `{header}` ignored: the request body was streamed \
                 (over {MAX_REPLAY_BODY} bytes or of unknown length), so the request \
                 cannot be sent again; the response goes to the client"
            );
            ReplayStep::Ignore
        }
        Ok(_) if replays >= MAX_REPLAYS => ReplayStep::Answer(Answer::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "too many replays: the request was replayed {MAX_REPLAYS} \
                 times and machine {machine} asked again (fly-replay `{header}`)\n"
            ),
        )),
        Ok(r) => {
            if let Some(app) = r.app.as_deref().filter(|a| *a != route.app) {
                return ReplayStep::Answer(Answer::new(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "fly-replay `{header}` from machine {machine}: replaying to \
                         another app (app={app}) is not supported by aloft\n"
                    ),
                ));
            }
            tracing::debug!(app = %route.app, machine, "fly-replay `{header}`");
            ReplayStep::Replay(Replaying {
                hints: Hints::from_replay(&r),
                not: r.elsewhere.then(|| machine.to_string()),
                timeout: r.timeout,
                src: r.source(machine, region),
                header,
            })
        }
    }
}
