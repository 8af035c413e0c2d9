//! Tasks and threads the proxy runs: the worker threads (one single-threaded runtime each)
//! and a handle that stops a task when dropped.

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::tls::TlsError;

/// A task handle that aborts its task when dropped, so that dropping a supervising task (or
/// the `ProxyHandle`) also stops the tasks it started.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `n` threads with a single-threaded runtime each; they run until the returned
/// sender is dropped (which drops every task on them).
pub(crate) fn start_workers(
    n: usize,
) -> Result<(Vec<tokio::runtime::Handle>, Option<watch::Sender<()>>), TlsError> {
    if n == 0 {
        return Ok((Vec::new(), None));
    }
    let (stop_tx, stop_rx) = watch::channel(());
    let mut handles = Vec::new();
    for i in 0..n {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TlsError::Runtime(e.to_string()))?;
        handles.push(rt.handle().clone());
        let mut stop = stop_rx.clone();
        std::thread::Builder::new()
            .name(format!("aloft-proxy-{i}"))
            .spawn(move || {
                crate::pool::WORKER.with(|w| w.set(Some(i)));
                rt.block_on(async move { while stop.changed().await.is_ok() {} })
            })
            .map_err(|e| TlsError::Runtime(e.to_string()))?;
    }
    Ok((handles, Some(stop_tx)))
}
