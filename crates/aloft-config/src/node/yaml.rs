//! YAML → [`Node`], through `serde_norway` but without its `Value`: the tree is built directly by
//! a visitor that counts nesting and values, so a document nested deeper than [`MAX_DEPTH`] or
//! expanding (through aliases) to more than [`MAX_YAML_VALUES`] values stops with a located
//! diagnostic instead of being built. A quick pre-scan first refuses deep flow nesting
//! (`[[[…`), which libyaml would otherwise take quadratic time to read (see `yaml_scan`).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde::de::{Error as _, VariantAccess};

use super::{line_col_span, root_table, yaml_scan, Entry, Kind, Node};
use crate::diag::Sink;
use crate::limits::{self, MAX_DEPTH, MAX_YAML_VALUES};

pub(crate) fn from_yaml(src: &str, sink: &mut Sink) -> Option<Node> {
    if let Some(at) = yaml_scan::flow_too_deep(src, MAX_DEPTH) {
        limits::too_deep(sink, &Some(at..at + 1));
        return None;
    }
    let mut budget = Budget {
        values_left: MAX_YAML_VALUES,
        exceeded: None,
    };
    let seed = NodeSeed {
        depth: 1,
        budget: &mut budget,
    };
    match seed.deserialize(serde_norway::Deserializer::from_str(src)) {
        Ok(node) => root_table(node, sink),
        Err(e) => {
            let span = e
                .location()
                .and_then(|l| line_col_span(src, l.line(), l.column()));
            match budget.exceeded {
                Some(Limit::Depth) => limits::too_deep(sink, &span),
                Some(Limit::Values) => limits::too_many_values(sink, &span),
                None => sink.error(&span, format!("YAML parse error: {e}"), None),
            }
            None
        }
    }
}

/// Which limit stopped the read; the parser's error only carries the position.
#[derive(Clone, Copy, Debug)]
enum Limit {
    Depth,
    Values,
}

struct Budget {
    values_left: usize,
    exceeded: Option<Limit>,
}

impl Budget {
    /// Counts one value; an error (for the parser to locate) once the budget is spent.
    fn take<E: de::Error>(&mut self) -> Result<(), E> {
        match self.values_left.checked_sub(1) {
            Some(left) => {
                self.values_left = left;
                Ok(())
            }
            None => Err(self.exceed(Limit::Values)),
        }
    }

    fn exceed<E: de::Error>(&mut self, limit: Limit) -> E {
        self.exceeded = Some(limit);
        E::custom(format_args!("{limit:?} limit exceeded"))
    }
}

/// Reads one value at nesting level `depth` (the document's top-level table is level 1).
struct NodeSeed<'b> {
    depth: usize,
    budget: &'b mut Budget,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl NodeSeed<'_> {
    fn child(&mut self) -> NodeSeed<'_> {
        NodeSeed {
            depth: self.depth + 1,
            budget: self.budget,
        }
    }

    /// Counts a table or list, refusing one past [`MAX_DEPTH`].
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        if self.depth > MAX_DEPTH {
            return Err(self.budget.exceed(Limit::Depth));
        }
        self.budget.take()
    }

    fn scalar<E: de::Error>(self, kind: Kind) -> Result<Node, E> {
        self.budget.take()?;
        Ok(Node::new(kind, None))
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        self.scalar(Kind::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Node, E> {
        self.scalar(Kind::Int(i))
    }

    /// Integers past `i64::MAX` become floats, as `serde_norway::Value::as_i64` would have it.
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Node, E> {
        match i64::try_from(u) {
            Ok(i) => self.scalar(Kind::Int(i)),
            Err(_) => self.scalar(Kind::Float(u as f64)),
        }
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node, E> {
        self.scalar(Kind::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        self.scalar(Kind::Str(s.to_string()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        self.scalar(Kind::Str(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.scalar(Kind::Other("null".into()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Node, A::Error> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child())? {
            items.push(item);
        }
        Ok(Node::new(Kind::Array(items), None))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Node, A::Error> {
        self.enter()?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key_seed(self.child())? {
            let key = key_text(&key);
            if !seen.insert(key.clone()) {
                return Err(A::Error::custom(format_args!(
                    "duplicate entry with key {key:?}"
                )));
            }
            let value = map.next_value_seed(self.child())?;
            entries.push(Entry {
                key,
                key_span: None,
                value,
            });
        }
        Ok(Node::new(Kind::Table(entries), None))
    }

    /// A value with a tag we do not interpret (`!custom x`): the value, tag dropped.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (_tag, value): (String, _) = data.variant()?;
        value.newtype_variant_seed(self)
    }
}

/// A mapping key as text: keys are strings in any real config, but YAML allows any value.
fn key_text(key: &Node) -> String {
    match &key.kind {
        Kind::Str(s) | Kind::Other(s) => s.clone(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Array(_) | Kind::Table(_) => key.to_json().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(src: &str) -> (Option<Node>, Vec<String>) {
        let mut sink = Sink::default();
        let node = from_yaml(src, &mut sink);
        (node, sink.raw.into_iter().map(|d| d.message).collect())
    }

    #[test]
    fn scalars_tags_and_keys_read_as_before() {
        let (node, errors) = read("a: 1\nb: 2.5\nc: true\nd: ~\ne: !custom text\n3: x\n");
        assert!(errors.is_empty(), "{errors:?}");
        let node = node.unwrap();
        assert_eq!(node.get("a").unwrap().kind, Kind::Int(1));
        assert_eq!(node.get("b").unwrap().kind, Kind::Float(2.5));
        assert_eq!(node.get("c").unwrap().kind, Kind::Bool(true));
        assert_eq!(node.get("d").unwrap().kind, Kind::Other("null".into()));
        assert_eq!(node.get("e").unwrap().kind, Kind::Str("text".into()));
        assert_eq!(node.get("3").unwrap().kind, Kind::Str("x".into()));
    }

    #[test]
    fn empty_document_is_an_empty_table() {
        let (node, errors) = read("# nothing\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(node.unwrap().entries().map(<[Entry]>::len), Some(0));
    }

    #[test]
    fn duplicate_keys_are_parse_errors() {
        let (node, errors) = read("app: a\napp: b\n");
        assert!(node.is_none());
        assert!(
            errors[0].contains("duplicate entry with key \"app\""),
            "{errors:?}"
        );
    }

    #[test]
    fn aliases_count_against_the_value_budget() {
        let (node, errors) = read("a: &x [1, 2]\nb: [*x, *x]\n");
        assert!(errors.is_empty(), "{errors:?}");
        let b = node.unwrap();
        let Kind::Array(items) = &b.get("b").unwrap().kind else {
            panic!("b is a list")
        };
        assert_eq!(items.len(), 2);
    }
}
