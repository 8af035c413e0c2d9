//! Diagnostics: every problem found in a config file, collected (never first-error-wins) and
//! rendered like rustc/uv: `error: message`, ` --> path:line:col`, the source line with a caret
//! under the offending text, and an optional `= hint:` line.
//!
//! Locations come from byte spans into the source. TOML always has them; JSON and YAML files are
//! parsed without spans, so their diagnostics name the field path but carry no line:col (parse
//! errors and the reader's limits excepted). Spans are resolved in one pass over the source, and
//! a long line is shown as an excerpt around the caret, so many diagnostics stay cheap.

use std::fmt;
use std::ops::Range;

use serde::Serialize;

/// How bad a diagnostic is: errors make the config invalid, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// 1-based line and column (column counted in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem, self-contained: it carries the source line it points at, so it can be printed
/// without the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// The file as the user named it.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The text of the line at `location` (without its newline); a long line is cut to an
    /// excerpt around the caret, marked with `…`.
    #[serde(skip)]
    pub source_line: Option<String>,
    /// How many characters of `source_line` come before the caret.
    #[serde(skip)]
    pub caret_offset: usize,
    /// How many characters the caret underline spans (at least 1).
    #[serde(skip)]
    pub caret_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A warning that `aloft deploy` turns into an error: the config is valid Fly config that
    /// Aloft cannot carry out (`[build] builder`…), so `config validate` accepts it and says why
    /// a deploy will refuse it.
    #[serde(skip)]
    pub refused_at_deploy: bool,
}

impl Diagnostic {
    /// `path:line:col`, or just `path` when the format has no spans.
    pub fn position(&self) -> String {
        match self.location {
            Some(l) => format!("{}:{}:{}", self.path, l.line, l.column),
            None => self.path.clone(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", self.message)?;
        let gutter = self.location.map(|l| l.line.to_string().len()).unwrap_or(1);
        let pad = " ".repeat(gutter);
        writeln!(f, "{pad}--> {}", self.position())?;
        if let (Some(loc), Some(line)) = (self.location, &self.source_line) {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", loc.line, line)?;
            let lead: String = line
                .chars()
                .take(self.caret_offset)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            writeln!(f, "{pad} | {lead}{}", "^".repeat(self.caret_len.max(1)))?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one file, in source order within each severity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }
    /// The warnings a deploy refuses (see [`Diagnostic::refused_at_deploy`]).
    pub fn deploy_refusals(&self) -> impl Iterator<Item = &Diagnostic> {
        self.warnings().filter(|d| d.refused_at_deploy)
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

/// Errors first, then warnings, each group apart, then a one-line summary.
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.errors() {
            writeln!(f, "{d}")?;
        }
        for d in self.warnings() {
            writeln!(f, "{d}")?;
        }
        let (e, w) = (self.errors().count(), self.warnings().count());
        if e > 0 || w > 0 {
            writeln!(f, "{} error(s), {} warning(s)", e, w)?;
        }
        Ok(())
    }
}

/// A diagnostic before its span is turned into a location.
#[derive(Clone, Debug)]
pub(crate) struct RawDiag {
    pub severity: Severity,
    pub message: String,
    pub span: Option<Range<usize>>,
    pub hint: Option<String>,
    pub refused_at_deploy: bool,
}

/// Collects diagnostics while the config is read; `finish` resolves spans against the source.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub raw: Vec<RawDiag>,
}

pub(crate) type Span = Option<Range<usize>>;

impl Sink {
    pub fn error(&mut self, span: &Span, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, span, message, hint);
    }
    pub fn warn(&mut self, span: &Span, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, span, message, hint);
    }
    /// A warning that deploy turns into an error (see [`Diagnostic::refused_at_deploy`]).
    pub fn refuse_at_deploy(&mut self, span: &Span, message: impl Into<String>, hint: String) {
        self.push(Severity::Warning, span, message, Some(hint));
        if let Some(last) = self.raw.last_mut() {
            last.refused_at_deploy = true;
        }
    }
    fn push(
        &mut self,
        severity: Severity,
        span: &Span,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.raw.push(RawDiag {
            severity,
            message: message.into(),
            span: span.clone(),
            hint,
            refused_at_deploy: false,
        });
    }
    #[cfg(test)]
    pub fn has_errors(&self) -> bool {
        self.raw.iter().any(|d| d.severity == Severity::Error)
    }

    /// Resolves spans against `source` and orders by (severity, position). Linear in the size
    /// of the source plus the number of diagnostics, however many share a line.
    pub fn finish(self, source: &str, path: &str) -> Diagnostics {
        let starts: Vec<Option<usize>> = self
            .raw
            .iter()
            .map(|r| {
                r.span
                    .as_ref()
                    .map(|s| floor_char_boundary(source, s.start.min(source.len())))
            })
            .collect();
        let places = locate(source, &starts);
        let mut items: Vec<(usize, Diagnostic)> = self
            .raw
            .into_iter()
            .zip(places)
            .map(|(r, place)| {
                let start = place.map(|p| p.offset).unwrap_or(usize::MAX);
                (start, resolve(r, place, source, path))
            })
            .collect();
        items.sort_by_key(|(start, d)| (d.severity, *start));
        items.dedup_by(|a, b| a.1 == b.1);
        Diagnostics {
            items: items.into_iter().map(|(_, d)| d).collect(),
        }
    }
}

/// Characters of a long source line shown before the caret, and from the caret on.
const SHOWN_BEFORE: usize = 60;
const SHOWN_FROM: usize = 100;

/// Where a span starts: byte offset, 1-based line and column, and where its line starts.
#[derive(Clone, Copy, Debug)]
struct Place {
    offset: usize,
    line: usize,
    column: usize,
    line_start: usize,
}

/// The place of each offset, found in one pass over the source (offsets visited in order).
fn locate(source: &str, offsets: &[Option<usize>]) -> Vec<Option<Place>> {
    let mut order: Vec<(usize, usize)> = offsets
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.map(|o| (o, i)))
        .collect();
    order.sort_unstable();
    let mut places = vec![None; offsets.len()];
    let mut here = Place {
        offset: 0,
        line: 1,
        column: 1,
        line_start: 0,
    };
    for (target, i) in order {
        for (j, c) in source[here.offset..target].char_indices() {
            if c == '\n' {
                here.line += 1;
                here.column = 1;
                here.line_start = here.offset + j + 1;
            } else {
                here.column += 1;
            }
        }
        here.offset = target;
        places[i] = Some(here);
    }
    places
}

fn resolve(r: RawDiag, place: Option<Place>, source: &str, path: &str) -> Diagnostic {
    let mut d = Diagnostic {
        severity: r.severity,
        message: r.message,
        path: path.to_string(),
        location: None,
        source_line: None,
        caret_offset: 0,
        caret_len: 1,
        hint: r.hint,
        refused_at_deploy: r.refused_at_deploy,
    };
    if let (Some(place), Some(span)) = (place, r.span) {
        let (before, caret_offset) = shown_before(source, place);
        let (from, from_end) = shown_from(source, place.offset);
        let end = floor_char_boundary(source, span.end.clamp(place.offset, from_end));
        d.caret_len = source[place.offset..end].trim_end().chars().count().max(1);
        d.location = Some(Location {
            line: place.line,
            column: place.column,
        });
        d.source_line = Some(before + &from);
        d.caret_offset = caret_offset;
    }
    d
}

/// The line up to the caret (its last [`SHOWN_BEFORE`] characters when longer, after `…`), and
/// how many characters that is.
fn shown_before(source: &str, place: Place) -> (String, usize) {
    let before = &source[place.line_start..place.offset];
    let count = place.column - 1;
    if count <= SHOWN_BEFORE {
        return (before.to_string(), count);
    }
    let cut = before
        .char_indices()
        .rev()
        .nth(SHOWN_BEFORE - 1)
        .map_or(0, |(i, _)| i);
    (format!("…{}", &before[cut..]), SHOWN_BEFORE + 1)
}

/// The line from the caret to its end (its first [`SHOWN_FROM`] characters when longer, then
/// `…`), and the byte offset where the shown text ends. Never reads past what it shows.
fn shown_from(source: &str, offset: usize) -> (String, usize) {
    let rest = &source[offset..];
    let mut end = rest.len();
    let mut cut = false;
    for (n, (i, c)) in rest.char_indices().enumerate() {
        if c == '\n' || n == SHOWN_FROM {
            end = i;
            cut = c != '\n';
            break;
        }
    }
    let shown = &rest[..end];
    let text = if cut {
        format!("{shown}…")
    } else {
        shown.trim_end_matches('\r').to_string()
    };
    (text, offset + end)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_caret_and_hint() {
        let src = "app = \"x\"\n[processes]\n  web = 'a'\n";
        let mut sink = Sink::default();
        let at = src.find("web").unwrap();
        sink.error(&Some(at..at + 3), "bad group", Some("try `api`".into()));
        let diags = sink.finish(src, "fly.toml");
        let text = diags.items[0].to_string();
        assert!(text.contains("error: bad group"), "{text}");
        assert!(text.contains("--> fly.toml:3:3"), "{text}");
        assert!(text.contains("3 |   web = 'a'"), "{text}");
        assert!(text.contains("  |   ^^^"), "{text}");
        assert!(text.contains("= hint: try `api`"), "{text}");
    }

    #[test]
    fn errors_before_warnings_and_positions_in_order() {
        let src = "a\nb\nc\n";
        let mut sink = Sink::default();
        sink.warn(&Some(0..1), "w", None);
        sink.error(&Some(4..5), "e2", None);
        sink.error(&Some(2..3), "e1", None);
        let d = sink.finish(src, "f");
        let msgs: Vec<_> = d.items.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(msgs, ["e1", "e2", "w"]);
        assert!(d.has_errors());
    }

    #[test]
    fn span_past_end_does_not_panic() {
        let mut sink = Sink::default();
        sink.error(&Some(100..200), "x", None);
        sink.error(&Some(1..2), "y", None);
        let d = sink.finish("é", "f");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn long_lines_are_cut_around_the_caret() {
        let src = format!("x = [{}]\n", "1, ".repeat(400));
        let at = src.len() / 2;
        let mut sink = Sink::default();
        sink.warn(&Some(at..at + 1), "here", None);
        let d = &sink.finish(&src, "f").items[0];
        let line = d.source_line.as_deref().unwrap();
        assert_eq!(line.chars().count(), 1 + SHOWN_BEFORE + SHOWN_FROM + 1);
        assert!(line.starts_with('…') && line.ends_with('…'), "{line}");
        assert_eq!(d.location.unwrap().column, at + 1);
        let shown: String = line.chars().skip(d.caret_offset).take(3).collect();
        assert_eq!(shown, src[at..at + 3]);
    }
}
