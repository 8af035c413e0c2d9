//! Typed reads out of raw [`Node`]s, each reporting a located diagnostic instead of failing:
//! tables that warn about unknown keys (with "did you mean" hints), lenient scalars (real files
//! write numbers as strings), durations with Fly's per-field units, and memory/volume sizes.

use std::time::Duration;

use aloft_api::duration::parse_go_duration;
use aloft_api::GoDuration;

use crate::diag::Sink;
use crate::node::{Entry, Kind, Node};

/// Reads the keys of one table; `finish` warns about every key nobody asked for.
pub(crate) struct Tbl<'a> {
    entries: &'a [Entry],
    used: Vec<bool>,
    /// Human name of the table for messages: `[http_service]`, `[[services]] #1`.
    pub name: String,
}

static EMPTY: [Entry; 0] = [];

impl<'a> Tbl<'a> {
    /// A reader over `node`; a non-table node is reported and read as empty.
    pub fn new(node: &'a Node, name: impl Into<String>, sink: &mut Sink) -> Tbl<'a> {
        let name = name.into();
        let entries: &'a [Entry] = match &node.kind {
            Kind::Table(e) => e,
            _ => {
                sink.error(
                    &node.span,
                    format!("{name} must be a table, not {}", node.type_name()),
                    None,
                );
                &EMPTY
            }
        };
        Tbl {
            entries,
            used: vec![false; entries.len()],
            name,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        Some(&self.entries[i].value)
    }

    /// The first of several spellings that is present (aliases such as `build-target`).
    pub fn get_any(&mut self, keys: &[&str]) -> Option<&'a Node> {
        keys.iter().find_map(|k| self.get(k))
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// Marks a key as known without reading it (accepted and ignored).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.get(k);
        }
    }

    /// Keys not read, with their spans.
    pub fn unused(&self) -> impl Iterator<Item = &'a Entry> + '_ {
        self.entries
            .iter()
            .zip(&self.used)
            .filter(|(_, u)| !**u)
            .map(|(e, _)| e)
    }

    /// Warns about every key that was not read; `known` feeds the "did you mean" hint.
    pub fn finish(self, sink: &mut Sink, known: &[&str]) {
        for e in self.unused() {
            let hint = suggest(&e.key, known).map(|k| format!("did you mean `{k}`?"));
            sink.warn(
                &e.key_span.clone().or(e.value.span.clone()),
                format!("unknown key `{}` in {} (ignored)", e.key, self.name),
                hint,
            );
        }
    }
}

/// The closest known key (edit distance ≤ 2, or a known alias such as `cmd` → `command`).
pub(crate) fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    const ALIASES: &[(&str, &str)] = &[
        ("cmd", "command"),
        ("command", "cmd"),
        ("port", "internal_port"),
        ("memory", "memory_mb"),
        ("size_gb", "initial_size"),
        ("size", "initial_size"),
        ("dest", "destination"),
        ("path", "destination"),
        ("name", "source"),
    ];
    for (from, to) in ALIASES {
        if key == *from {
            if let Some(k) = known.iter().find(|k| *k == to) {
                return Some(k);
            }
        }
    }
    let lower = key.to_ascii_lowercase().replace('-', "_");
    let len = lower.chars().count();
    known
        .iter()
        // The distance is at least the difference in length: skip hopeless (or huge) keys.
        .filter(|k| k.chars().count().abs_diff(len) <= 2)
        .map(|k| (levenshtein(&lower, k), *k))
        .filter(|(d, k)| *d <= 2.min(k.len() / 3 + 1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where in the document a value sits, for messages: `http_service.internal_port`.
pub(crate) fn field(table: &str, key: &str) -> String {
    format!("`{key}` in {table}")
}

fn type_error(sink: &mut Sink, n: &Node, what: &str, expected: &str) {
    sink.error(
        &n.span,
        format!("{what} must be {expected}, not {}", n.type_name()),
        None,
    );
}

/// A string; numbers and booleans are accepted and written as text only when `lenient`.
pub(crate) fn string(sink: &mut Sink, n: &Node, what: &str, lenient: bool) -> Option<String> {
    match &n.kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Int(i) if lenient => Some(i.to_string()),
        Kind::Float(f) if lenient => Some(f.to_string()),
        Kind::Bool(b) if lenient => Some(b.to_string()),
        Kind::Other(o) if lenient => Some(o.clone()),
        _ => {
            type_error(sink, n, what, "a string");
            None
        }
    }
}

/// Any value as text the way flyctl writes it (Go's `%v`): scalars as they are, lists as
/// `[a b]`, tables as `map[k:v]` with the keys sorted.
pub(crate) fn go_text(n: &Node) -> String {
    match &n.kind {
        Kind::Str(s) | Kind::Other(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Array(items) => {
            let items: Vec<String> = items.iter().map(go_text).collect();
            format!("[{}]", items.join(" "))
        }
        Kind::Table(entries) => {
            let mut pairs: Vec<String> = entries
                .iter()
                .map(|e| format!("{}:{}", e.key, go_text(&e.value)))
                .collect();
            pairs.sort();
            format!("map[{}]", pairs.join(" "))
        }
    }
}

/// An integer; a string of digits (real files quote numbers) and integral floats are accepted.
pub(crate) fn int(sink: &mut Sink, n: &Node, what: &str) -> Option<i64> {
    match &n.kind {
        Kind::Int(i) => Some(*i),
        Kind::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
        Kind::Str(s) => match s.trim().parse::<i64>() {
            Ok(i) => Some(i),
            Err(_) => {
                sink.error(&n.span, format!("{what} must be a number, not {s:?}"), None);
                None
            }
        },
        _ => {
            type_error(sink, n, what, "an integer");
            None
        }
    }
}

/// An integer within `min..=max`, converted to `T`.
pub(crate) fn int_in<T: TryFrom<i64>>(
    sink: &mut Sink,
    n: &Node,
    what: &str,
    min: i64,
    max: i64,
) -> Option<T> {
    let v = int(sink, n, what)?;
    if v < min || v > max {
        sink.error(
            &n.span,
            format!("{what} is {v}, but must be between {min} and {max}"),
            None,
        );
        return None;
    }
    T::try_from(v).ok()
}

pub(crate) fn port(sink: &mut Sink, n: &Node, what: &str) -> Option<u16> {
    int_in(sink, n, what, 1, 65535)
}

pub(crate) fn float(sink: &mut Sink, n: &Node, what: &str) -> Option<f64> {
    match &n.kind {
        Kind::Int(i) => Some(*i as f64),
        Kind::Float(f) if f.is_finite() => Some(*f),
        Kind::Str(s) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Some(f),
            _ => {
                sink.error(&n.span, format!("{what} must be a number, not {s:?}"), None);
                None
            }
        },
        _ => {
            type_error(sink, n, what, "a number");
            None
        }
    }
}

/// A boolean; the strings `"true"`/`"false"` are accepted.
pub(crate) fn boolean(sink: &mut Sink, n: &Node, what: &str) -> Option<bool> {
    match &n.kind {
        Kind::Bool(b) => Some(*b),
        Kind::Str(s) if s == "true" || s == "false" => Some(s == "true"),
        _ => {
            type_error(sink, n, what, "true or false");
            None
        }
    }
}

/// A list of strings; a single string is a one-element list (not shell-split), as flyctl does.
pub(crate) fn string_list(sink: &mut Sink, n: &Node, what: &str) -> Option<Vec<String>> {
    match &n.kind {
        Kind::Str(s) => Some(vec![s.clone()]),
        Kind::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(string(sink, item, &format!("each entry of {what}"), true)?);
            }
            Some(out)
        }
        _ => {
            type_error(sink, n, what, "a list of strings");
            None
        }
    }
}

/// A list of items: an array, or a single table read as a one-element list (the `[mount]`,
/// `[vm]`, `[[services]]`-as-table forms real files use).
pub(crate) fn list(n: &Node) -> Vec<&Node> {
    match &n.kind {
        Kind::Array(items) => items.iter().collect(),
        _ => vec![n],
    }
}

/// What a bare integer means for a duration field. **[quirk]** Fly reads bare integers
/// differently per field: `kill_timeout` in seconds, service and top-level check timings in
/// milliseconds, every other duration in nanoseconds. We copy that so files mean what they mean
/// on Fly, and warn when a bare integer is read as nanoseconds (almost always a mistake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BareUnit {
    Seconds,
    Millis,
    Nanos,
}

/// A duration: Go duration string (`"15s"`, `"1m30s"`) or bare integer in `unit`.
/// A string of digits is read like the bare integer (real files quote numbers).
pub(crate) fn duration(
    sink: &mut Sink,
    n: &Node,
    what: &str,
    unit: BareUnit,
) -> Option<GoDuration> {
    let bare = |v: i64, sink: &mut Sink| -> Option<GoDuration> {
        if v < 0 {
            sink.error(&n.span, format!("{what} must not be negative"), None);
            return None;
        }
        let v = v as u64;
        let d = match unit {
            BareUnit::Seconds => Duration::from_secs(v),
            BareUnit::Millis => Duration::from_millis(v),
            BareUnit::Nanos => {
                if v > 0 {
                    sink.warn(
                        &n.span,
                        format!("{what} = {v} is read as {v} nanoseconds (Fly's rule for bare numbers here)"),
                        Some(format!("write a duration with a unit, e.g. \"{v}s\"")),
                    );
                }
                Duration::from_nanos(v)
            }
        };
        Some(GoDuration(d))
    };
    match &n.kind {
        Kind::Int(i) => bare(*i, sink),
        // Go converts a float to a duration by dropping the fraction; so do we.
        Kind::Float(f) if f.is_finite() && f.abs() < 9e15 => bare(f.trunc() as i64, sink),
        Kind::Str(s) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) => {
            bare(s.trim().parse().unwrap_or(i64::MAX), sink)
        }
        Kind::Str(s) => match parse_go_duration(s) {
            Ok(d) => Some(GoDuration(d)),
            Err(e) => {
                sink.error(&n.span, format!("{what}: {e}"), None);
                None
            }
        },
        _ => {
            type_error(sink, n, what, "a duration such as \"10s\"");
            None
        }
    }
}

/// Splits a size like `"1gb"`, `"512 MB"`, `"2GiB"`, `"1.5g"` into (number, unit in lowercase).
fn split_size(s: &str) -> Option<(f64, String)> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let num: f64 = s[..end].parse().ok()?;
    let unit = s[end..].trim().to_ascii_lowercase();
    Some((num, unit))
}

/// Memory in MB from a string with binary units (`"1gb"` = 1024 MB, `"512mb"`, `"2GiB"`, `"2gi"`)
/// or a bare number meaning MB, as flyctl reads `[[vm]] memory` (docker/go-units' `RAMInBytes`:
/// a unit letter k/m/g/t/p, then an optional `i`, then an optional `b`, any case).
pub(crate) fn memory_mb(sink: &mut Sink, n: &Node, what: &str) -> Option<u32> {
    let factor = |unit: &str| match unit {
        "" | "m" | "mb" | "mi" | "mib" => Some(1.0),
        "k" | "kb" | "ki" | "kib" => Some(1.0 / 1024.0),
        "g" | "gb" | "gi" | "gib" => Some(1024.0),
        "t" | "tb" | "ti" | "tib" => Some(1024.0 * 1024.0),
        "p" | "pb" | "pi" | "pib" => Some(1024.0 * 1024.0 * 1024.0),
        "b" => Some(1.0 / (1024.0 * 1024.0)),
        _ => None,
    };
    let kind = SizeKind {
        noun: "a memory size",
        example: "a memory size such as \"1gb\" or 512",
        hint: size_hint,
    };
    let mb = scaled_size(sink, n, what, &kind, factor)?;
    if !(0.0..=u32::MAX as f64).contains(&mb) {
        sink.error(&n.span, format!("{what} is out of range"), None);
        return None;
    }
    Some(mb.round() as u32)
}

/// How a size field reads in its errors.
struct SizeKind {
    /// "a memory size", in "cannot read … as …".
    noun: &'static str,
    /// What a wrong-typed value should have been.
    example: &'static str,
    hint: fn() -> String,
}

/// A number, or a string of a number and a unit, times the unit's `factor` (None: unknown unit).
fn scaled_size(
    sink: &mut Sink,
    n: &Node,
    what: &str,
    kind: &SizeKind,
    factor: impl Fn(&str) -> Option<f64>,
) -> Option<f64> {
    let (num, unit) = match &n.kind {
        Kind::Int(i) => (*i as f64, String::new()),
        Kind::Float(f) => (*f, String::new()),
        Kind::Str(s) => match split_size(s) {
            Some(v) => v,
            None => {
                sink.error(
                    &n.span,
                    format!("{what}: cannot read {s:?} as {}", kind.noun),
                    Some((kind.hint)()),
                );
                return None;
            }
        },
        _ => {
            type_error(sink, n, what, kind.example);
            return None;
        }
    };
    let Some(factor) = factor(unit.as_str()) else {
        sink.error(
            &n.span,
            format!("{what}: unknown size unit {unit:?}"),
            Some((kind.hint)()),
        );
        return None;
    };
    Some(num * factor)
}

fn size_hint() -> String {
    "use a number of MB (512) or a size with a unit: \"512mb\", \"1gb\", \"2GB\"".into()
}

/// A volume size in whole GB: decimal units (`"10gb"`, `"500GB"`, `"1tb"` = 1000 GB; the binary
/// `"10gib"`/`"10gi"` as written), a bare number meaning GB, as flyctl reads `initial_size`
/// (go-units' unit letters k/m/g/t/p with an optional `i` and `b`). Fractions are truncated.
pub(crate) fn volume_gb(sink: &mut Sink, n: &Node, what: &str) -> Option<u64> {
    let factor = |unit: &str| match unit {
        "" | "g" | "gb" => Some(1.0),
        "gi" | "gib" => Some(1.073_741_824),
        "m" | "mb" => Some(1e-3),
        "mi" | "mib" => Some(1.048_576e-3),
        "k" | "kb" => Some(1e-6),
        "ki" | "kib" => Some(1.024e-6),
        "t" | "tb" => Some(1e3),
        "ti" | "tib" => Some(1_099.511_627_776),
        "p" | "pb" => Some(1e6),
        "pi" | "pib" => Some(1_125_899.906_842_624),
        "b" => Some(1e-9),
        _ => None,
    };
    let kind = SizeKind {
        noun: "a volume size",
        example: "a size such as \"10gb\"",
        hint: vol_hint,
    };
    let gb = scaled_size(sink, n, what, &kind, factor)?;
    if !gb.is_finite() || gb < 1.0 {
        sink.error(
            &n.span,
            format!("{what} must be at least 1 GB"),
            Some(vol_hint()),
        );
        return None;
    }
    Some(gb.min(u64::MAX as f64) as u64)
}

fn vol_hint() -> String {
    "write a size in GB, e.g. \"1gb\" or \"10GB\"".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(kind: Kind) -> Node {
        Node::new(kind, Some(0..1))
    }

    #[test]
    fn durations_follow_per_field_units() {
        let mut s = Sink::default();
        let d = |s: &mut Sink, k, u| duration(s, &n(k), "x", u).map(|d| d.0);
        assert_eq!(
            d(&mut s, Kind::Int(5), BareUnit::Seconds),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            d(&mut s, Kind::Int(10000), BareUnit::Millis),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            d(&mut s, Kind::Str("15s".into()), BareUnit::Millis),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            d(&mut s, Kind::Str("2m0s".into()), BareUnit::Seconds),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            d(&mut s, Kind::Str("30".into()), BareUnit::Seconds),
            Some(Duration::from_secs(30))
        );
        assert!(!s.has_errors());
        assert_eq!(
            d(&mut s, Kind::Int(300), BareUnit::Nanos),
            Some(Duration::from_nanos(300))
        );
        assert_eq!(s.raw.len(), 1, "bare nanoseconds warn");
        assert!(!s.has_errors());
        assert_eq!(
            d(&mut s, Kind::Str("5 minutes".into()), BareUnit::Seconds),
            None
        );
        assert_eq!(d(&mut s, Kind::Int(-1), BareUnit::Seconds), None);
        assert!(s.has_errors());
    }

    #[test]
    fn memory_is_binary_and_bare_is_mb() {
        let mut s = Sink::default();
        let m = |s: &mut Sink, k| memory_mb(s, &n(k), "memory");
        assert_eq!(m(&mut s, Kind::Str("1gb".into())), Some(1024));
        assert_eq!(m(&mut s, Kind::Str("2GB".into())), Some(2048));
        assert_eq!(m(&mut s, Kind::Str("512mb".into())), Some(512));
        assert_eq!(m(&mut s, Kind::Str("1GiB".into())), Some(1024));
        assert_eq!(m(&mut s, Kind::Str("512".into())), Some(512));
        assert_eq!(m(&mut s, Kind::Int(2048)), Some(2048));
        assert!(!s.has_errors());
        assert_eq!(m(&mut s, Kind::Str("lots".into())), None);
        assert_eq!(m(&mut s, Kind::Str("1zb".into())), None);
        assert!(s.has_errors());
    }

    #[test]
    fn volumes_are_decimal_gb() {
        let mut s = Sink::default();
        let v = |s: &mut Sink, k| volume_gb(s, &n(k), "initial_size");
        assert_eq!(v(&mut s, Kind::Str("10gb".into())), Some(10));
        assert_eq!(v(&mut s, Kind::Int(3)), Some(3));
        assert_eq!(v(&mut s, Kind::Str("1tb".into())), Some(1000));
        assert!(!s.has_errors());
        assert_eq!(v(&mut s, Kind::Str("500mb".into())), None);
        assert!(s.has_errors());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("cmd", &["name", "command"]), Some("command"));
        assert_eq!(
            suggest("internal_prot", &["internal_port", "protocol"]),
            Some("internal_port")
        );
        assert_eq!(suggest("zzz", &["internal_port"]), None);
    }

    #[test]
    fn lenient_scalars() {
        let mut s = Sink::default();
        assert_eq!(int(&mut s, &n(Kind::Str("8080".into())), "p"), Some(8080));
        assert_eq!(
            string(&mut s, &n(Kind::Int(3)), "v", true),
            Some("3".into())
        );
        assert_eq!(
            string_list(&mut s, &n(Kind::Str("a b".into())), "v"),
            Some(vec!["a b".into()])
        );
        assert!(!s.has_errors());
        assert_eq!(port(&mut s, &n(Kind::Int(70000)), "p"), None);
        assert_eq!(string(&mut s, &n(Kind::Int(3)), "v", false), None);
        assert_eq!(s.raw.len(), 2);
    }
}
