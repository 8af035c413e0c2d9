//! Machine logs: a query (it changes nothing) answered from the lines the runtime captured, and,
//! when following, the lines captured after them. Handlers reach the runtime only through here.

use aloft_runtime::{LogLine, LogQuery};
use futures_util::stream::BoxStream;
use tokio::sync::broadcast::error::RecvError;

use super::actions::ReadLogs;
use super::{Controller, DomainError, DomainResult};

/// What a logs query gave.
pub struct Logs {
    /// The newest matching lines, oldest first.
    pub backlog: Vec<LogLine>,
    /// With `follow`: the matching lines captured after the backlog, as they come; it ends when
    /// the runtime stops.
    pub live: Option<BoxStream<'static, LogLine>>,
}

impl Controller {
    /// The app's log lines that match `action.query` (its `app` is set to `app`); an unknown app
    /// is not found.
    pub async fn logs(&self, app: &str, action: ReadLogs) -> DomainResult<Logs> {
        self.get_app(app).await?;
        let query = LogQuery {
            app: Some(app.to_string()),
            ..action.query
        };
        // Subscribe before reading the backlog so no line falls between the two.
        let rx = action.follow.then(|| self.sup.log_subscribe());
        let backlog = self.log_lines(query.clone()).await?;
        let live = rx.map(|rx| {
            let last_ts = backlog.last().map(|l| l.timestamp.clone());
            follow(rx, query, last_ts)
        });
        Ok(Logs { backlog, live })
    }

    /// The newest lines matching `query`, oldest first, read on a blocking thread.
    pub(crate) async fn log_lines(&self, query: LogQuery) -> DomainResult<Vec<LogLine>> {
        let sup = self.sup.clone();
        tokio::task::spawn_blocking(move || sup.log_query(&query))
            .await
            .map_err(|e| DomainError::internal(format!("reading logs failed: {e}")))
    }
}

/// The lines of `rx` that match `query` and are newer than `after` (the backlog's last line).
fn follow(
    rx: tokio::sync::broadcast::Receiver<LogLine>,
    query: LogQuery,
    after: Option<String>,
) -> BoxStream<'static, LogLine> {
    Box::pin(futures_util::stream::unfold(
        (rx, query, after),
        |(mut rx, query, after)| async move {
            loop {
                match rx.recv().await {
                    Ok(line)
                        if query.matches(&line)
                            && after.as_deref().is_none_or(|t| line.timestamp.as_str() > t) =>
                    {
                        return Some((line, (rx, query, None)));
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    ))
}
