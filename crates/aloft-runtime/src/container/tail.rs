//! Reading a shim's `output.log` into the agent's log store, from where the last reader
//! stopped: the position (file identity + offset) is kept in `<dir>/consumed`, so lines a
//! container printed while no agent ran are read by the next agent, once.
//!
//! The shim rotates `output.log` to `output.log.1`; when the file under the name is no longer
//! the one being read, the rest of the old one is read from `output.log.1` first.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aloft_api::LogLine;
use serde::{Deserialize, Serialize};

use super::shim::{rotated_output, OUTPUT_FILE};
use crate::LogStore;

/// How often a running container's output is looked at.
const POLL: Duration = Duration::from_millis(50);
const CONSUMED_FILE: &str = "consumed";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    ino: u64,
    offset: u64,
}

/// A reader of one container's output spool.
pub struct Tailer {
    dir: PathBuf,
    logs: Arc<LogStore>,
    pos: Position,
}

impl Tailer {
    /// A reader that starts where the last one stopped.
    pub(crate) fn resume(dir: &Path, logs: Arc<LogStore>) -> Tailer {
        let pos = fs::read(dir.join(CONSUMED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Tailer {
            dir: dir.to_path_buf(),
            logs,
            pos,
        }
    }

    /// Reads every complete new line into the log store and records the position.
    pub(crate) fn drain(&mut self) {
        let current = self.dir.join(OUTPUT_FILE);
        let Ok(meta) = fs::metadata(&current) else {
            return;
        };
        let before = self.pos;
        if self.pos.ino != 0 && meta.ino() != self.pos.ino {
            // Rotated since the last read: finish the old file first if it is still there.
            let old = rotated_output(&self.dir);
            if fs::metadata(&old).is_ok_and(|m| m.ino() == self.pos.ino) {
                self.read(&old);
            }
            self.pos = Position {
                ino: meta.ino(),
                offset: 0,
            };
        }
        if self.pos.ino == 0 {
            self.pos.ino = meta.ino();
        }
        if meta.len() < self.pos.offset {
            self.pos.offset = 0;
        }
        if meta.len() > self.pos.offset {
            self.read(&current);
        }
        if self.pos != before {
            if let Ok(bytes) = serde_json::to_vec(&self.pos) {
                let tmp = self.dir.join(format!("{CONSUMED_FILE}.tmp"));
                if fs::write(&tmp, bytes).is_ok() {
                    let _ = fs::rename(tmp, self.dir.join(CONSUMED_FILE));
                }
            }
        }
    }

    fn read(&mut self, path: &Path) {
        let Ok(mut file) = File::open(path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.pos.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with(b"\n") => break, // a line being written: next time
                Ok(n) => {
                    self.pos.offset += n as u64;
                    if let Ok(parsed) = serde_json::from_slice::<LogLine>(&line) {
                        self.logs.append(parsed);
                    }
                }
            }
        }
    }
}

/// A tailer polled on a task while its container runs.
pub(crate) struct Follow {
    tailer: Arc<Mutex<Tailer>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Follow {
    pub(crate) fn start(tailer: Tailer) -> Follow {
        let tailer = Arc::new(Mutex::new(tailer));
        let t = tailer.clone();
        let task = tokio::spawn(async move {
            loop {
                let t2 = t.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    t2.lock().unwrap_or_else(|e| e.into_inner()).drain()
                })
                .await;
                tokio::time::sleep(POLL).await;
            }
        });
        Follow {
            tailer,
            task: Some(task),
        }
    }

    /// Stops polling and reads what is left.
    pub(crate) async fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let t = self.tailer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            t.lock().unwrap_or_else(|e| e.into_inner()).drain()
        })
        .await;
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
