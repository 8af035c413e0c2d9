//! Captured stdout/stderr: bounded JSON-lines files per machine plus a broadcast for followers.
//!
//! `<logs>/<machine_id>.log` holds one [`LogLine`] as JSON per line. When appending a line would
//! take the file past `max_log_bytes`, it is renamed to `<machine_id>.log.1` (replacing the
//! previous one) and a new file starts, so a machine never holds more than twice the bound.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

use crate::{LogLine, LogQuery, LogStore};

/// Longer lines are cut into pieces of this many bytes.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines buffered for followers that fall behind (they then see a `Lagged` error).
const FOLLOW_BUFFER: usize = 4096;
/// Read buffer per captured stream; small, since an agent holds two per machine.
const READ_CHUNK: usize = 2048;

pub(crate) struct Files {
    open: HashMap<String, OpenLog>,
}

struct OpenLog {
    file: File,
    size: u64,
}

impl LogStore {
    pub(crate) fn new(dir: PathBuf, max_bytes: u64) -> io::Result<LogStore> {
        std::fs::create_dir_all(&dir)?;
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        Ok(LogStore {
            dir,
            max_bytes: max_bytes.max(1),
            files: Mutex::new(Files {
                open: HashMap::new(),
            }),
            tx,
        })
    }

    fn path(&self, machine_id: &str) -> PathBuf {
        self.dir.join(format!("{}.log", file_safe(machine_id)))
    }

    /// Appends `line` to its machine's file and hands it to followers.
    pub(crate) fn append(&self, line: LogLine) {
        let mut json = match serde_json::to_vec(&line) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(machine_id = %line.machine_id, "cannot encode a log line: {e}");
                return;
            }
        };
        json.push(b'\n');
        if let Err(e) = self.write(&line.machine_id, &json) {
            tracing::warn!(machine_id = %line.machine_id, "cannot write its log under {}: {e}", self.dir.display());
        }
        let _ = self.tx.send(line);
    }

    fn write(&self, machine_id: &str, bytes: &[u8]) -> io::Result<()> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path(machine_id);
        let log = match files.open.entry(machine_id.to_string()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(open_append(&path)?),
        };
        if log.size > 0 && log.size + bytes.len() as u64 > self.max_bytes {
            std::fs::rename(&path, rotated(&path))?;
            *log = open_append(&path)?;
        }
        log.file.write_all(bytes)?;
        log.size += bytes.len() as u64;
        Ok(())
    }

    /// Closes the machine's file handle (it is reopened on the next line).
    pub(crate) fn close(&self, machine_id: &str) {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .remove(machine_id);
    }

    pub(crate) fn do_query(&self, query: &LogQuery) -> Vec<LogLine> {
        let files: Vec<PathBuf> = match &query.machine_id {
            Some(id) => {
                let p = self.path(id);
                vec![rotated(&p), p]
            }
            None => std::fs::read_dir(&self.dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                            name.ends_with(".log") || name.ends_with(".log.1")
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut lines: Vec<LogLine> = Vec::new();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            // A line being written concurrently, or damaged, is skipped rather than failing all.
            lines.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
                    .filter(|l| query.matches(l)),
            );
        }
        // Timestamps are fixed-width RFC 3339 UTC, so text order is time order; the sort is
        // stable, which keeps lines of one file with equal timestamps in write order.
        lines.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
        if let Some(limit) = query.limit {
            let skip = lines.len().saturating_sub(limit);
            lines.drain(..skip);
        }
        lines
    }

    pub(crate) fn do_subscribe(&self) -> broadcast::Receiver<LogLine> {
        self.tx.subscribe()
    }
}

fn open_append(path: &Path) -> io::Result<OpenLog> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(OpenLog { file, size })
}

fn rotated(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Machine ids are hex, but a file name must never climb out of the log directory.
fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The labels every line of one machine carries.
#[derive(Clone, Debug)]
pub(crate) struct Labels {
    pub app: String,
    pub machine_id: String,
    pub group: String,
    pub region: String,
}

/// Reads `stream` to its end, one [`LogLine`] per line (lines longer than
/// [`MAX_LINE_BYTES`] are split, invalid UTF-8 is replaced).
pub(crate) async fn capture(
    mut stream: impl AsyncRead + Unpin,
    stream_name: &'static str,
    labels: Labels,
    store: std::sync::Arc<LogStore>,
) {
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    let emit_one = |bytes: &[u8]| {
        store.append(LogLine {
            timestamp: crate::timestamp::now_nanos(),
            app: labels.app.clone(),
            machine_id: labels.machine_id.clone(),
            group: labels.group.clone(),
            region: labels.region.clone(),
            stream: stream_name.to_string(),
            message: String::from_utf8_lossy(bytes).into_owned(),
        });
    };
    let emit = |bytes: &[u8]| {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.is_empty() {
            emit_one(bytes);
        }
        for piece in bytes.chunks(MAX_LINE_BYTES) {
            emit_one(piece);
        }
    };
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            emit(&pending[start..start + pos]);
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE_BYTES {
            emit(&pending[..MAX_LINE_BYTES]);
            pending.drain(..MAX_LINE_BYTES);
        }
        if pending.is_empty() && pending.capacity() > READ_CHUNK {
            pending = Vec::new();
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(machine: &str, app: &str, ts: &str, msg: &str) -> LogLine {
        LogLine {
            timestamp: ts.into(),
            app: app.into(),
            machine_id: machine.into(),
            group: "app".into(),
            region: "gru".into(),
            stream: "stdout".into(),
            message: msg.into(),
        }
    }

    #[test]
    fn query_merges_by_time_filters_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().join("logs"), 1 << 20).unwrap();
        store.append(line("m1", "a", "2024-01-01T00:00:00.000000001Z", "one"));
        store.append(line("m2", "b", "2024-01-01T00:00:00.000000002Z", "two"));
        store.append(line("m1", "a", "2024-01-01T00:00:00.000000003Z", "three"));
        let all = store.do_query(&LogQuery::default());
        assert_eq!(
            all.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            ["one", "two", "three"]
        );
        let a = store.do_query(&LogQuery {
            app: Some("a".into()),
            ..LogQuery::default()
        });
        assert_eq!(a.len(), 2);
        let last = store.do_query(&LogQuery {
            limit: Some(2),
            ..LogQuery::default()
        });
        assert_eq!(
            last.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
            ["two", "three"]
        );
        let m2 = store.do_query(&LogQuery {
            machine_id: Some("m2".into()),
            ..LogQuery::default()
        });
        assert_eq!(m2.len(), 1);
        assert!(store
            .do_query(&LogQuery {
                machine_id: Some("../x".into()),
                ..LogQuery::default()
            })
            .is_empty());
    }

    #[test]
    fn files_rotate_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path().to_path_buf(), 1000).unwrap();
        for i in 0..100 {
            store.append(line(
                "m1",
                "a",
                &format!("2024-01-01T00:00:00.{i:09}Z"),
                &"x".repeat(40),
            ));
        }
        let cur = std::fs::metadata(dir.path().join("m1.log")).unwrap().len();
        let old = std::fs::metadata(dir.path().join("m1.log.1"))
            .unwrap()
            .len();
        assert!(
            cur <= 1000 && old <= 1000,
            "each file stays within the bound: {cur} {old}"
        );
        let kept = store.do_query(&LogQuery::default());
        assert!(
            kept.len() < 100 && kept.len() >= 10,
            "old lines dropped, recent kept: {}",
            kept.len()
        );
        assert_eq!(
            kept.last().unwrap().timestamp,
            "2024-01-01T00:00:00.000000099Z"
        );
    }

    #[tokio::test]
    async fn capture_splits_lines_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LogStore::new(dir.path().to_path_buf(), 1 << 20).unwrap());
        let labels = Labels {
            app: "a".into(),
            machine_id: "m1".into(),
            group: "g".into(),
            region: "r".into(),
        };
        let mut input = b"hello\r\nworld\n".to_vec();
        input.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 10));
        input.extend(b"\nlast");
        capture(&input[..], "stderr", labels, store.clone()).await;
        let lines = store.do_query(&LogQuery::default());
        let sizes: Vec<usize> = lines.iter().map(|l| l.message.len()).collect();
        assert_eq!(lines[0].message, "hello");
        assert_eq!(lines[1].message, "world");
        assert_eq!(sizes[2..], [MAX_LINE_BYTES, 10, 4]);
        assert!(lines.iter().all(|l| l.stream == "stderr" && l.group == "g"));
    }
}
