//! The raw document: a format-independent tree of values with byte spans, built from TOML
//! (`toml_edit`, spans kept), JSON (`serde_json`) or YAML (`serde_norway`, in `yaml`). JSON and
//! YAML nodes have no spans, so their diagnostics carry no line:col — only the field path in the
//! message — except parse errors and the nesting and size limits of `limits`, which are located.
//!
//! Every format refuses tables and lists nested deeper than [`MAX_DEPTH`] before building the
//! tree, so the tree (and everything that walks it recursively) stays shallow.

mod yaml;
mod yaml_scan;

use std::ops::Range;

use toml_edit::{Item, Table, Value};

use crate::diag::{Sink, Span};
use crate::limits::{self, MAX_DEPTH};

pub(crate) use yaml::from_yaml;

/// One value of the document and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// TOML datetimes and YAML tags we do not interpret; kept as text.
    Other(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    pub fn new(kind: Kind, span: Span) -> Node {
        Node { kind, span }
    }

    /// The node as JSON, for pass-through option tables (`tls_options`, `http_options`, ...).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            Kind::Str(s) | Kind::Other(s) => J::String(s.clone()),
            Kind::Int(i) => J::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Kind::Bool(b) => J::Bool(*b),
            Kind::Array(a) => J::Array(a.iter().map(Node::to_json).collect()),
            Kind::Table(e) => J::Object(
                e.iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// What the user wrote, for messages: `a string`, `an integer`, ...
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Other(_) => "a datetime",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.kind {
            Kind::Table(e) => Some(e),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    pub fn is_table(&self) -> bool {
        matches!(self.kind, Kind::Table(_))
    }
}

// ---------------------------------------------------------------------------------------------
// TOML

/// Parses TOML keeping spans. A syntax error becomes one diagnostic at the error's position.
pub(crate) fn from_toml(src: &str, sink: &mut Sink) -> Option<Node> {
    match toml_edit::ImDocument::parse(src) {
        Ok(doc) => match table_node(doc.as_table(), None, 1) {
            Ok(root) => Some(root),
            Err(TooDeep(span)) => {
                limits::too_deep(sink, &span);
                None
            }
        },
        Err(e) => {
            let span = e.span().map(|s| {
                if s.is_empty() {
                    s.start..s.start + 1
                } else {
                    s
                }
            });
            let message = e.message().trim().to_string();
            if message.contains("recursion limit") {
                // toml_edit's own guard (80 levels of inline values or dotted key parts).
                limits::too_deep(sink, &span);
                return None;
            }
            let hint = if message.contains("duplicate key") {
                Some("each key may appear once per table; remove or rename one of them".to_string())
            } else {
                Some("this is not valid TOML; see https://toml.io for the syntax".to_string())
            };
            sink.error(&span, format!("TOML parse error: {message}"), hint);
            None
        }
    }
}

/// A table or array that would open nesting level `MAX_DEPTH + 1`, and where.
struct TooDeep(Span);

/// Refuses a table or array at nesting level `depth` (the document is level 1) past the limit.
fn check_depth(depth: usize, span: &Span) -> Result<(), TooDeep> {
    if depth > MAX_DEPTH {
        return Err(TooDeep(span.clone()));
    }
    Ok(())
}

fn table_node(t: &Table, parent_span: Span, depth: usize) -> Result<Node, TooDeep> {
    let span = t.span().or(parent_span);
    check_depth(depth, &span)?;
    let pairs = t.iter().filter_map(|(k, _)| t.get_key_value(k));
    let entries = entries(pairs, &span, depth)?;
    Ok(Node::new(Kind::Table(entries), span))
}

/// The entries of a table or inline table at nesting level `depth`; keys without a span of
/// their own fall back to the table's.
fn entries<'t>(
    pairs: impl Iterator<Item = (&'t toml_edit::Key, &'t Item)>,
    span: &Span,
    depth: usize,
) -> Result<Vec<Entry>, TooDeep> {
    let mut entries = Vec::new();
    for (key, item) in pairs {
        let key_span = key.span();
        let fallback = key_span.clone().or(span.clone());
        if let Some(value) = item_node(item, fallback, depth + 1)? {
            entries.push(Entry {
                key: key.get().to_string(),
                key_span,
                value,
            });
        }
    }
    Ok(entries)
}

fn item_node(item: &Item, fallback: Span, depth: usize) -> Result<Option<Node>, TooDeep> {
    Ok(Some(match item {
        Item::None => return Ok(None),
        Item::Value(v) => value_node(v, fallback, depth)?,
        Item::Table(t) => table_node(t, fallback, depth)?,
        Item::ArrayOfTables(a) => {
            let span = a.span().or(fallback);
            check_depth(depth, &span)?;
            let items = a
                .iter()
                .map(|t| table_node(t, span.clone(), depth + 1))
                .collect::<Result<_, _>>()?;
            Node::new(Kind::Array(items), span)
        }
    }))
}

fn value_node(v: &Value, fallback: Span, depth: usize) -> Result<Node, TooDeep> {
    let span: Option<Range<usize>> = v.span().or(fallback);
    let kind = match v {
        Value::String(s) => Kind::Str(s.value().clone()),
        Value::Integer(i) => Kind::Int(*i.value()),
        Value::Float(f) => Kind::Float(*f.value()),
        Value::Boolean(b) => Kind::Bool(*b.value()),
        Value::Datetime(d) => Kind::Other(d.value().to_string()),
        Value::Array(a) => {
            check_depth(depth, &span)?;
            let items = a
                .iter()
                .map(|v| value_node(v, span.clone(), depth + 1))
                .collect::<Result<_, _>>()?;
            Kind::Array(items)
        }
        Value::InlineTable(t) => {
            check_depth(depth, &span)?;
            let pairs = t.iter().filter_map(|(k, _)| t.get_key_value(k));
            Kind::Table(entries(pairs, &span, depth)?)
        }
    };
    Ok(Node::new(kind, span))
}

// ---------------------------------------------------------------------------------------------
// JSON (no spans; YAML is in `yaml`)

pub(crate) fn from_json(src: &str, sink: &mut Sink) -> Option<Node> {
    if let Some(at) = json_too_deep(src, MAX_DEPTH) {
        limits::too_deep(sink, &Some(at..at + 1));
        return None;
    }
    match serde_json::from_str::<serde_json::Value>(src) {
        Ok(v) => root_table(json_node(&v), sink),
        Err(e) => {
            sink.error(
                &line_col_span(src, e.line(), e.column()),
                format!("JSON parse error: {e}"),
                None,
            );
            None
        }
    }
}

/// Where a JSON text opens array or object number `limit + 1` of one nest, as a byte offset.
/// Exact for valid JSON (brackets inside strings are skipped); serde_json reports the rest.
fn json_too_deep(src: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in src.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A parsed JSON value as a node; [`json_too_deep`] has bounded its depth.
fn json_node(v: &serde_json::Value) -> Node {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::Other("null".into()),
        J::Bool(b) => Kind::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Kind::Int(i),
            None => Kind::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Kind::Str(s.clone()),
        J::Array(a) => Kind::Array(a.iter().map(json_node).collect()),
        J::Object(o) => Kind::Table(
            o.iter()
                .map(|(k, v)| Entry {
                    key: k.clone(),
                    key_span: None,
                    value: json_node(v),
                })
                .collect(),
        ),
    };
    Node::new(kind, None)
}

fn root_table(node: Node, sink: &mut Sink) -> Option<Node> {
    match node.kind {
        Kind::Table(_) => Some(node),
        Kind::Other(ref s) if s == "null" => Some(Node::new(Kind::Table(vec![]), None)),
        _ => {
            sink.error(
                &None,
                format!(
                    "the document must be a table of settings, not {}",
                    node.type_name()
                ),
                None,
            );
            None
        }
    }
}

/// A one-character span at a 1-based line/column, for parse errors that report positions.
fn line_col_span(src: &str, line: usize, column: usize) -> Span {
    if line == 0 {
        return None;
    }
    let mut offset = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let col: usize = l
                .chars()
                .take(column.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            let at = offset + col;
            return Some(at..at + 1);
        }
        offset += l.len();
    }
    Some(src.len()..src.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_keeps_spans_for_values_keys_and_headers() {
        let src = "app = 'x'\n[[services]]\n  internal_port = 8080\n";
        let mut sink = Sink::default();
        let n = from_toml(src, &mut sink).unwrap();
        let app = n.get("app").unwrap();
        assert_eq!(&src[app.span.clone().unwrap()], "'x'");
        let svc = &n.get("services").unwrap();
        let Kind::Array(items) = &svc.kind else {
            panic!()
        };
        assert!(src[items[0].span.clone().unwrap()].starts_with("[[services]]"));
        let e = &items[0].entries().unwrap()[0];
        assert_eq!(&src[e.key_span.clone().unwrap()], "internal_port");
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let mut sink = Sink::default();
        assert!(from_toml("[env]\nA = 1\nA = 2\n", &mut sink).is_none());
        let d = sink.finish("[env]\nA = 1\nA = 2\n", "f");
        assert_eq!(d.items[0].location.unwrap().line, 3);
    }

    #[test]
    fn json_and_yaml_make_the_same_tree() {
        let mut sink = Sink::default();
        let j = from_json(r#"{"app":"x","env":{"A":"1"}}"#, &mut sink).unwrap();
        let y = from_yaml("app: x\nenv:\n  A: '1'\n", &mut sink).unwrap();
        assert_eq!(j, y);
        assert!(from_yaml("- 1\n- 2\n", &mut sink).is_none());
    }

    #[test]
    fn json_depth_skips_strings_and_escapes() {
        let src = r#"{"a": "[[[\"[[", "b": [[1]]}"#;
        assert_eq!(json_too_deep(src, 3), None);
        assert_eq!(json_too_deep(src, 2), Some(src.find("[1").unwrap()));
    }

    #[test]
    fn toml_depth_is_checked_while_building_the_tree() {
        let mut sink = Sink::default();
        let src = format!("a = {}{}\n", "[".repeat(64), "]".repeat(64));
        assert!(from_toml(&src, &mut sink).is_none());
        let d = sink.finish(&src, "f");
        assert_eq!(d.items[0].location.unwrap().column, 4 + 64);
    }
}
