//! Captured stdout/stderr: bounded JSON-lines files per machine plus a broadcast for followers.
//!
//! `<logs>/<machine_id>.log` holds one [`LogLine`] as JSON per line. When appending a line would
//! take the file past [`LogLimits::file_bytes`], it is renamed to `<machine_id>.log.1` (replacing
//! the previous one) and a new file starts, so a machine never holds more than twice the bound.
//!
//! The disk is shared with the state database, so logs are also bounded together: past
//! [`LogLimits::total_bytes`] the oldest files are deleted (never the file a running machine
//! writes), and
//! while the filesystem has less than [`LogLimits::min_free_bytes`] free (or the total cannot be
//! kept) lines are not written. Followers still see every line; a machine whose lines were
//! dropped gets one line saying how many, when writing resumes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

use crate::{LogLimits, LogLine, LogQuery, LogStore};

/// Longer lines are cut into pieces of this many bytes.
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;
/// Lines buffered for followers that fall behind (they then see a `Lagged` error).
const FOLLOW_BUFFER: usize = 4096;
/// Read buffer per captured stream; small, since an agent holds two per machine.
const READ_CHUNK: usize = 2048;
/// Free space is measured again after this many bytes written, or this much time.
const FREE_CHECK_BYTES: u64 = 256 * 1024;
const FREE_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Files {
    open: HashMap<String, OpenLog>,
    /// Bytes of every log file in the directory.
    total: u64,
    /// Free bytes of the log filesystem at the last measure, less what was written since.
    free: u64,
    written_since_check: u64,
    checked_at: Option<Instant>,
    /// Lines not written per machine, since its last written line.
    dropped: HashMap<String, u64>,
}

struct OpenLog {
    file: File,
    size: u64,
}

/// Why a line was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoRoom {
    LowDisk,
    Budget,
}

/// Free bytes for unprivileged writers on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Sum of the sizes of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl LogStore {
    pub(crate) fn new(dir: PathBuf, limits: LogLimits) -> io::Result<LogStore> {
        std::fs::create_dir_all(&dir)?;
        let (tx, _) = broadcast::channel(FOLLOW_BUFFER);
        let total = dir_bytes(&dir);
        Ok(LogStore {
            limits: LogLimits {
                file_bytes: limits.file_bytes.max(1),
                ..limits
            },
            files: Mutex::new(Files {
                open: HashMap::new(),
                total,
                free: free_bytes(&dir).unwrap_or(u64::MAX),
                written_since_check: 0,
                checked_at: Some(Instant::now()),
                dropped: HashMap::new(),
            }),
            dir,
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
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        match self.room_for(&mut files, &line.machine_id, json.len() as u64) {
            Ok(()) => {
                let dropped = files.dropped.remove(&line.machine_id).unwrap_or(0);
                if dropped > 0 {
                    let note = dropped_note(&line, dropped, &self.limits);
                    self.write_logged(&mut files, &note);
                }
                self.write_logged(&mut files, &(line.machine_id.clone(), json));
            }
            Err(why) => {
                let count = files.dropped.entry(line.machine_id.clone()).or_default();
                if *count == 0 {
                    tracing::warn!(machine_id = %line.machine_id, reason = ?why, dir = %self.dir.display(), "not writing this machine's log lines until there is room");
                }
                *count += 1;
            }
        }
        drop(files);
        let _ = self.tx.send(line);
    }

    fn write_logged(&self, files: &mut Files, (machine_id, bytes): &(String, Vec<u8>)) {
        if let Err(e) = self.write(files, machine_id, bytes) {
            tracing::warn!(machine_id = %machine_id, "cannot write its log under {}: {e}", self.dir.display());
        }
    }

    /// Whether `len` more bytes of `machine_id`'s log fit the limits; makes room by deleting the
    /// oldest files of machines that are not running when the total is over its bound.
    fn room_for(&self, files: &mut Files, machine_id: &str, len: u64) -> Result<(), NoRoom> {
        let stale = files.written_since_check >= FREE_CHECK_BYTES
            || files
                .checked_at
                .is_none_or(|t| t.elapsed() >= FREE_CHECK_EVERY);
        if stale {
            files.free = free_bytes(&self.dir).unwrap_or(u64::MAX);
            files.written_since_check = 0;
            files.checked_at = Some(Instant::now());
        }
        // Room for the line and the note about dropped lines that may precede it.
        let need = len + 512;
        if files.total + need > self.limits.total_bytes {
            self.evict(
                files,
                machine_id,
                files.total + need - self.limits.total_bytes,
            );
        }
        if files.total + need > self.limits.total_bytes {
            return Err(NoRoom::Budget);
        }
        if files.free < self.limits.min_free_bytes.saturating_add(need) {
            return Err(NoRoom::LowDisk);
        }
        Ok(())
    }

    /// Deletes the oldest log files but the current file of running machines (rotated files
    /// and the files of machines that are not running) until `wanted` bytes are freed or none
    /// is left.
    fn evict(&self, files: &mut Files, writer: &str, wanted: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let open: Vec<PathBuf> = files
            .open
            .keys()
            .map(String::as_str)
            .chain(std::iter::once(writer))
            .map(|id| self.path(id))
            .collect();
        let mut candidates: Vec<(std::time::SystemTime, PathBuf, u64)> = entries
            .flatten()
            .filter(|e| !open.contains(&e.path()))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, e.path(), m.len()))
            })
            .collect();
        candidates.sort();
        let mut freed = 0;
        for (_, path, len) in candidates {
            if freed >= wanted {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                freed += len;
                files.total = files.total.saturating_sub(len);
                files.free = files.free.saturating_add(len);
            }
        }
    }

    fn write(&self, files: &mut Files, machine_id: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(machine_id);
        let Files {
            open, total, free, ..
        } = files;
        let log = match open.entry(machine_id.to_string()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(open_append(&path)?),
        };
        if log.size > 0 && log.size + bytes.len() as u64 > self.limits.file_bytes {
            let old = rotated(&path);
            let replaced = std::fs::metadata(&old).map(|m| m.len()).unwrap_or(0);
            std::fs::rename(&path, &old)?;
            *total = total.saturating_sub(replaced);
            *free = free.saturating_add(replaced);
            *log = open_append(&path)?;
        }
        log.file.write_all(bytes)?;
        log.size += bytes.len() as u64;
        let n = bytes.len() as u64;
        *total += n;
        *free = free.saturating_sub(n);
        files.written_since_check += n;
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

/// The line written before a machine's next line after `dropped` of its lines were not kept.
fn dropped_note(next: &LogLine, dropped: u64, limits: &LogLimits) -> (String, Vec<u8>) {
    let note = LogLine {
        stream: "stderr".into(),
        message: format!(
            "[aloft] {dropped} log line(s) of this machine were not kept: the log disk had less \
             than {} MiB free or logs reached their {} MiB budget (aloft agent --log-min-free-mb, \
             --log-budget-mb)",
            limits.min_free_bytes >> 20,
            limits.total_bytes >> 20
        ),
        ..next.clone()
    };
    let mut json = serde_json::to_vec(&note).unwrap_or_default();
    json.push(b'\n');
    (next.machine_id.clone(), json)
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

/// Cuts a byte stream into lines: `\n`-terminated, a trailing `\r` removed, lines longer than
/// [`MAX_LINE_BYTES`] split into pieces. Shared by the agent's pipe readers and the shim's.
#[derive(Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; `emit` gets every complete line.
    pub(crate) fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(&[u8])) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            emit_line(&self.pending[start..start + pos], emit);
            start += pos + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE_BYTES {
            emit_line(&self.pending[..MAX_LINE_BYTES], emit);
            self.pending.drain(..MAX_LINE_BYTES);
        }
        if self.pending.is_empty() && self.pending.capacity() > READ_CHUNK {
            self.pending = Vec::new();
        }
    }

    /// The end of the stream: what is left is the last line.
    pub(crate) fn finish(self, emit: &mut impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit_line(&self.pending, emit);
        }
    }
}

fn emit_line(bytes: &[u8], emit: &mut impl FnMut(&[u8])) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.is_empty() {
        emit(bytes);
    }
    for piece in bytes.chunks(MAX_LINE_BYTES) {
        emit(piece);
    }
}

/// Reads a blocking `stream` to its end and hands each line to `emit` (the shim's readers).
pub(crate) fn split_lines(mut stream: impl io::Read, mut emit: impl FnMut(&[u8])) {
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut lines = LineSplitter::default();
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => lines.push(&chunk[..n], &mut emit),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    lines.finish(&mut emit);
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
    let mut lines = LineSplitter::default();
    let mut emit = |bytes: &[u8]| {
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
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        lines.push(&chunk[..n], &mut emit);
    }
    lines.finish(&mut emit);
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

    fn ts(i: usize) -> String {
        format!("2024-01-01T00:00:00.{i:09}Z")
    }

    #[test]
    fn logs_stay_within_their_budget_evicting_the_oldest_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            file_bytes: 4096,
            // One running machine needs up to 2 × 4 KiB + a line: the stopped one's must go.
            total_bytes: 9 * 1024,
            min_free_bytes: 0,
        };
        let store = LogStore::new(dir.path().to_path_buf(), limits).unwrap();
        let msg = "x".repeat(150);
        for i in 0..60 {
            store.append(line("old", "a", &ts(i), &msg));
        }
        store.close("old");
        for i in 60..400 {
            store.append(line("new", "a", &ts(i), &msg));
            let on_disk = dir_bytes(dir.path());
            assert!(
                on_disk <= limits.total_bytes,
                "{on_disk} bytes after line {i}"
            );
        }
        for f in ["old.log.1", "old.log"] {
            assert!(
                !dir.path().join(f).exists(),
                "the stopped machine's {f} went first"
            );
        }
        let kept = store.do_query(&LogQuery::default());
        assert!(kept.last().is_some_and(|l| l.timestamp == ts(399)));
        assert!(
            store.files.lock().unwrap().dropped.is_empty(),
            "nothing dropped"
        );
    }

    #[test]
    fn low_disk_drops_lines_for_the_file_but_not_for_followers_and_says_so_later() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            min_free_bytes: u64::MAX / 4,
            ..LogLimits::default()
        };
        let store = LogStore::new(dir.path().to_path_buf(), limits).unwrap();
        let mut follower = store.do_subscribe();
        for i in 0..3 {
            store.append(line("m", "a", &ts(i), "lost"));
        }
        assert!(
            store.do_query(&LogQuery::default()).is_empty(),
            "nothing written"
        );
        assert_eq!(
            follower.try_recv().unwrap().message,
            "lost",
            "followers see it"
        );
        assert_eq!(store.files.lock().unwrap().dropped.get("m"), Some(&3));

        // Room again (a store over the same files without the threshold): the count comes first.
        let store = LogStore::new(dir.path().to_path_buf(), LogLimits::default()).unwrap();
        store.files.lock().unwrap().dropped.insert("m".into(), 3);
        store.append(line("m", "a", &ts(9), "back"));
        let kept = store.do_query(&LogQuery::default());
        assert_eq!(kept.len(), 2);
        assert!(
            kept[0]
                .message
                .contains("3 log line(s) of this machine were not kept"),
            "{kept:?}"
        );
        assert_eq!(kept[1].message, "back");
    }

    #[test]
    fn query_merges_by_time_filters_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            LogStore::new(dir.path().join("logs"), LogLimits::with_file_bytes(1 << 20)).unwrap();
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
        let store =
            LogStore::new(dir.path().to_path_buf(), LogLimits::with_file_bytes(1000)).unwrap();
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
        let store = std::sync::Arc::new(
            LogStore::new(
                dir.path().to_path_buf(),
                LogLimits::with_file_bytes(1 << 20),
            )
            .unwrap(),
        );
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
