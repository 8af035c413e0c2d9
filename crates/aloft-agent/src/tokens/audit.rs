//! The writer of apps' events and tokens' last use, off the request path.
//!
//! A request only puts its event on a bounded channel (or notes a token's use in a map); one
//! task takes whatever has gathered and writes it in one transaction on a blocking thread, so
//! under load many events share a commit. A full channel or a failed write drops events with a
//! warning: recording never fails nor slows the request it records. Last uses are written with
//! the next batch, or every [`TOUCH_INTERVAL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_store::AppEventRow;
use tokio::sync::{mpsc, oneshot};

use crate::controller::Controller;

/// Events waiting to be written at most; more are dropped (with a warning).
const QUEUE: usize = 10_000;

/// Events written in one transaction at most.
const BATCH: usize = 1_000;

/// How often tokens' last uses are written when no event comes.
const TOUCH_INTERVAL: Duration = Duration::from_secs(5);

enum Msg {
    Event(AppEventRow),
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// The handle requests use.
pub struct Audit {
    tx: mpsc::Sender<Msg>,
    /// Token id → newest use (Unix seconds), not yet written.
    used: Arc<Mutex<HashMap<String, i64>>>,
}

impl Audit {
    /// Starts the writer task (on the current runtime); it ends when the handle is dropped.
    pub fn start(ctl: Arc<Controller>) -> Audit {
        let (tx, rx) = mpsc::channel(QUEUE);
        let used = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(run(ctl, rx, used.clone()));
        Audit { tx, used }
    }

    pub fn event(&self, event: AppEventRow) {
        if let Err(e) = self.tx.try_send(Msg::Event(event)) {
            tracing::warn!(error = %e, "app event dropped: the event writer is behind");
        }
    }

    pub fn used(&self, token_id: &str, at: i64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        match used.get_mut(token_id) {
            Some(t) => *t = (*t).max(at),
            None => {
                used.insert(token_id.to_string(), at);
            }
        }
    }

    /// Waits until everything recorded so far is written (or the writer is gone).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    ctl: Arc<Controller>,
    mut rx: mpsc::Receiver<Msg>,
    used: Arc<Mutex<HashMap<String, i64>>>,
) {
    let mut tick = tokio::time::interval(TOUCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut events = Vec::new();
        let mut waiters = Vec::new();
        let mut closed = false;
        let mut take = |msg: Msg, events: &mut Vec<AppEventRow>| match msg {
            Msg::Event(e) => events.push(e),
            Msg::Flush(w) => waiters.push(w),
        };
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => take(msg, &mut events),
                None => closed = true,
            },
            _ = tick.tick() => {}
        }
        while events.len() < BATCH {
            match rx.try_recv() {
                Ok(msg) => take(msg, &mut events),
                Err(_) => break,
            }
        }
        let touched: Vec<(String, i64)> =
            std::mem::take(&mut *used.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if !events.is_empty() || !touched.is_empty() {
            let count = events.len();
            let written = ctl
                .db(move |store| {
                    store.write(|tx| {
                        tx.add_app_events(&events)?;
                        tx.touch_tokens(&touched)
                    })
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, events = count, "app events and token uses not recorded");
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
        if closed {
            return;
        }
    }
}
