//! A linear pre-scan that finds YAML flow collections (`[…]`, `{…}`) nested deeper than a limit,
//! before the YAML parser sees the text. The block collections around them count too, so for
//! `a: [[…` the limit falls where the tree's own depth check would put it.
//!
//! Why: libyaml (inside `serde_norway`) keeps one pending "simple key" per open flow
//! collection and walks all of them for every token it scans, and `serde_norway` reads the whole
//! document into events before its own depth limit applies. Reading time therefore grows with
//! depth × tokens: 195 KB of `[[[…` took 19 seconds (release build).
//!
//! How: this mirrors the parts of libyaml's scanner (`scanner.c`) that decide which characters
//! are tokens: where plain, quoted and block scalars end (which depends on the indentation of
//! the enclosing block collections and on "simple keys"), comments, anchors, tags and
//! directives. It only tracks state, never builds tokens. It must agree with libyaml up to
//! the first point where libyaml fails, because a `[` that libyaml scans but this pass takes for
//! text would let deep nesting through. Where libyaml certainly stops with an error, the scan
//! stops too; where libyaml might fail, the scan goes on, which at worst reports deep nesting
//! in a file that libyaml would reject for a syntax error anyway. While it was written, the
//! scan was compared with libyaml's own scanner on millions of generated documents (random
//! token soups and mutated block/flow documents): the first over-deep position always agreed.

/// Where libyaml would open a flow collection inside `limit` others (block collections
/// included), as a byte offset. Indentless sequences (`key:` then `- item` at the same column)
/// are not counted, so this can only report less nesting than the document has, never more.
pub(crate) fn flow_too_deep(src: &str, limit: usize) -> Option<usize> {
    let start = if src.starts_with('\u{feff}') { 3 } else { 0 };
    let mut scanner = Scanner::new(src.as_bytes(), start);
    match scanner.run(limit) {
        Stop::TooDeep(at) => Some(at),
        Stop::End => None,
    }
}

enum Stop {
    /// A flow collection opened past the limit, at this byte offset.
    TooDeep(usize),
    /// End of input, or a point where libyaml stops with an error.
    End,
}

/// libyaml's `yaml_simple_key_t`: where a token that may turn out to be a mapping key began.
#[derive(Clone, Copy)]
struct SimpleKey {
    possible: bool,
    pos: usize,
    line: usize,
    column: usize,
}

const NO_KEY: SimpleKey = SimpleKey {
    possible: false,
    pos: 0,
    line: 0,
    column: 0,
};

/// The scanner state of libyaml that decides tokenisation. Positions are byte offsets (libyaml's
/// `mark.index` also counts bytes); columns count characters, as libyaml's do.
struct Scanner<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
    column: usize,
    flow_level: usize,
    /// Column of the innermost block collection, -1 outside any.
    indent: i64,
    /// The columns of the enclosing block collections: one entry per open block collection.
    indents: Vec<i64>,
    simple_key_allowed: bool,
    /// One entry per flow level, plus one for block context (libyaml's `simple_keys` stack).
    simple_keys: Vec<SimpleKey>,
}

impl<'a> Scanner<'a> {
    fn new(s: &'a [u8], start: usize) -> Scanner<'a> {
        Scanner {
            s,
            pos: start,
            line: 0,
            column: 0,
            flow_level: 0,
            indent: -1,
            indents: Vec::new(),
            simple_key_allowed: true,
            simple_keys: vec![NO_KEY],
        }
    }

    /// One token per iteration, as `yaml_parser_fetch_next_token`.
    fn run(&mut self, limit: usize) -> Stop {
        loop {
            self.skip_to_next_token();
            self.unroll_indent(self.column as i64);
            if self.is_z(0) {
                return Stop::End;
            }
            let flowing = self.flow_level > 0;
            let at_line_start = self.column == 0;
            let ok = match self.byte(0) {
                b'%' if at_line_start => self.directive(),
                b'-' if at_line_start && self.document_indicator(b'-') => self.document_marker(),
                b'.' if at_line_start && self.document_indicator(b'.') => self.document_marker(),
                b'[' | b'{' => {
                    if self.open_flow() + self.indents.len() > limit {
                        return Stop::TooDeep(self.pos - 1);
                    }
                    true
                }
                b']' | b'}' => self.close_flow(),
                b',' => self.flow_entry(),
                b'-' if self.is_blankz(1) => self.block_entry(),
                b'?' if flowing || self.is_blankz(1) => self.key_indicator(),
                b':' if flowing || self.is_blankz(1) => self.value_indicator(),
                b'*' | b'&' => self.anchor(),
                b'!' => self.tag(),
                b'|' | b'>' if !flowing => self.block_scalar(),
                b'\'' | b'"' => self.quoted_scalar(),
                _ if self.can_start_plain() => self.plain_scalar(),
                _ => false, // "found character that cannot start any token"
            };
            if !ok {
                return Stop::End;
            }
        }
    }

    // -- characters ------------------------------------------------------------------------

    fn byte(&self, ahead: usize) -> u8 {
        self.s.get(self.pos + ahead).copied().unwrap_or(0)
    }

    /// End of input (libyaml also stops at a NUL byte).
    fn is_z(&self, ahead: usize) -> bool {
        self.byte(ahead) == 0
    }

    fn is_blank(&self, ahead: usize) -> bool {
        matches!(self.byte(ahead), b' ' | b'\t')
    }

    /// `\r`, `\n`, NEL (U+0085), LS (U+2028) or PS (U+2029), as libyaml's `IS_BREAK`.
    fn is_break(&self, ahead: usize) -> bool {
        match self.byte(ahead) {
            b'\r' | b'\n' => true,
            0xC2 => self.byte(ahead + 1) == 0x85,
            0xE2 => self.byte(ahead + 1) == 0x80 && matches!(self.byte(ahead + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    fn is_breakz(&self, ahead: usize) -> bool {
        self.is_break(ahead) || self.is_z(ahead)
    }

    fn is_blankz(&self, ahead: usize) -> bool {
        self.is_blank(ahead) || self.is_breakz(ahead)
    }

    /// libyaml's `IS_ALPHA`: the characters of anchor names and tag handles.
    fn is_alpha(&self) -> bool {
        let c = self.byte(0);
        c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
    }

    /// Steps over one character (not a line break).
    fn skip(&mut self) {
        let width = match self.byte(0) {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        self.pos = (self.pos + width).min(self.s.len());
        self.column += 1;
    }

    /// Steps over one line break (`\r\n` counts as one).
    fn skip_line(&mut self) {
        if self.byte(0) == b'\r' && self.byte(1) == b'\n' {
            self.pos += 2;
        } else if self.is_break(0) {
            self.skip();
        } else {
            return;
        }
        self.line += 1;
        self.column = 0;
    }

    fn skip_to_line_end(&mut self) {
        while !self.is_breakz(0) {
            self.skip();
        }
    }

    /// `---` or `...` followed by a blank or line end, at the start of a line.
    fn document_indicator(&self, c: u8) -> bool {
        self.column == 0
            && self.byte(0) == c
            && self.byte(1) == c
            && self.byte(2) == c
            && self.is_blankz(3)
    }

    // -- indentation and simple keys ---------------------------------------------------------

    /// `yaml_parser_scan_to_next_token`: blanks, comments and line breaks.
    fn skip_to_next_token(&mut self) {
        loop {
            if self.column == 0 && self.s[self.pos..].starts_with("\u{feff}".as_bytes()) {
                self.skip();
            }
            while self.byte(0) == b' '
                || ((self.flow_level > 0 || !self.simple_key_allowed) && self.byte(0) == b'\t')
            {
                self.skip();
            }
            if self.byte(0) == b'#' {
                self.skip_to_line_end();
            }
            if !self.is_break(0) {
                return;
            }
            self.skip_line();
            if self.flow_level == 0 {
                self.simple_key_allowed = true;
            }
        }
    }

    /// A block collection starts at `column` (no effect inside flow collections).
    fn roll_indent(&mut self, column: usize) {
        if self.flow_level == 0 && self.indent < column as i64 {
            self.indents.push(self.indent);
            self.indent = column as i64;
        }
    }

    /// Block collections indented deeper than `column` end.
    fn unroll_indent(&mut self, column: i64) {
        if self.flow_level > 0 {
            return;
        }
        while self.indent > column {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    fn top_key(&mut self) -> &mut SimpleKey {
        let last = self.simple_keys.len() - 1;
        &mut self.simple_keys[last]
    }

    /// `yaml_parser_save_simple_key`: the token starting here may be a key.
    fn save_simple_key(&mut self) {
        if self.simple_key_allowed {
            let key = SimpleKey {
                possible: true,
                pos: self.pos,
                line: self.line,
                column: self.column,
            };
            *self.top_key() = key;
        }
    }

    fn remove_simple_key(&mut self) {
        self.top_key().possible = false;
    }

    /// libyaml drops a pending key once the scan is on a later line or more than 1024 bytes on
    /// (`yaml_parser_stale_simple_keys`); checking when the key is used gives the same answer.
    fn key_still_possible(&mut self) -> Option<SimpleKey> {
        let (line, pos) = (self.line, self.pos);
        let key = self.top_key();
        if key.possible && (key.line < line || key.pos + 1024 < pos) {
            key.possible = false;
        }
        key.possible.then_some(*key)
    }

    // -- tokens (each returns false where libyaml certainly stops with an error) ---------------

    fn directive(&mut self) -> bool {
        self.unroll_indent(-1);
        self.remove_simple_key();
        self.simple_key_allowed = false;
        self.skip_to_line_end();
        self.skip_line();
        true
    }

    fn document_marker(&mut self) -> bool {
        self.unroll_indent(-1);
        self.remove_simple_key();
        self.simple_key_allowed = false;
        for _ in 0..3 {
            self.skip();
        }
        true
    }

    /// `[` or `{`; returns the new flow level.
    fn open_flow(&mut self) -> usize {
        self.save_simple_key();
        self.simple_keys.push(NO_KEY);
        self.flow_level += 1;
        self.simple_key_allowed = true;
        self.skip();
        self.flow_level
    }

    fn close_flow(&mut self) -> bool {
        self.remove_simple_key();
        if self.flow_level > 0 {
            self.flow_level -= 1;
            self.simple_keys.pop();
        }
        self.simple_key_allowed = false;
        self.skip();
        true
    }

    fn flow_entry(&mut self) -> bool {
        self.remove_simple_key();
        self.simple_key_allowed = true;
        self.skip();
        true
    }

    /// `- ` (in flow context libyaml leaves the error to its parser).
    fn block_entry(&mut self) -> bool {
        if self.flow_level == 0 {
            if !self.simple_key_allowed {
                return false;
            }
            self.roll_indent(self.column);
        }
        self.remove_simple_key();
        self.simple_key_allowed = true;
        self.skip();
        true
    }

    /// `? ` (complex key).
    fn key_indicator(&mut self) -> bool {
        if self.flow_level == 0 {
            if !self.simple_key_allowed {
                return false;
            }
            self.roll_indent(self.column);
        }
        self.remove_simple_key();
        self.simple_key_allowed = self.flow_level == 0;
        self.skip();
        true
    }

    /// `: `; a pending simple key becomes a mapping key, which may start a block mapping.
    fn value_indicator(&mut self) -> bool {
        if let Some(key) = self.key_still_possible() {
            self.roll_indent(key.column);
            self.top_key().possible = false;
            self.simple_key_allowed = false;
        } else {
            if self.flow_level == 0 {
                if !self.simple_key_allowed {
                    return false;
                }
                self.roll_indent(self.column);
            }
            self.simple_key_allowed = self.flow_level == 0;
        }
        self.skip();
        true
    }

    /// `&anchor` or `*alias`.
    fn anchor(&mut self) -> bool {
        self.save_simple_key();
        self.simple_key_allowed = false;
        self.skip();
        while self.is_alpha() {
            self.skip();
        }
        true
    }

    /// `!tag`, `!!tag`, `!handle!suffix` or `!<verbatim>`.
    fn tag(&mut self) -> bool {
        self.save_simple_key();
        self.simple_key_allowed = false;
        if self.byte(1) == b'<' {
            self.skip();
            self.skip();
            self.skip_uri(true);
            if self.byte(0) != b'>' {
                return false;
            }
            self.skip();
        } else {
            // Handle (`!`, alphanumerics, `!`) and suffix are both URI characters here.
            self.skip();
            self.skip_uri(false);
        }
        true
    }

    /// Characters of a tag URI (`yaml_parser_scan_tag_uri`); `,[]` only inside `!<…>`.
    fn skip_uri(&mut self, verbatim: bool) {
        loop {
            let c = self.byte(0);
            let uri = self.is_alpha()
                || b";/?:@&=+$.%!~*'()".contains(&c)
                || (verbatim && b",[]".contains(&c));
            if !uri {
                return;
            }
            self.skip();
        }
    }

    /// `|` or `>` and its content: the lines indented at least as far as the first one.
    fn block_scalar(&mut self) -> bool {
        self.remove_simple_key();
        self.simple_key_allowed = true;
        self.skip();
        let Some(increment) = self.block_scalar_header() else {
            return false;
        };
        let mut indent = match increment {
            0 => 0,
            n if self.indent >= 0 => self.indent + n,
            n => n,
        };
        if !self.block_scalar_breaks(&mut indent) {
            return false;
        }
        while self.column as i64 == indent && !self.is_z(0) {
            self.skip_to_line_end();
            self.skip_line();
            if !self.block_scalar_breaks(&mut indent) {
                return false;
            }
        }
        true
    }

    /// Chomping and indentation indicators, then a comment, up to the line break; the explicit
    /// indentation (0 when absent), or None where libyaml fails.
    fn block_scalar_header(&mut self) -> Option<i64> {
        let mut increment = 0;
        let mut chomping_seen = false;
        for _ in 0..2 {
            match self.byte(0) {
                b'+' | b'-' if !chomping_seen => chomping_seen = true,
                b'0' if increment == 0 => return None,
                c @ b'1'..=b'9' if increment == 0 => increment = i64::from(c - b'0'),
                _ => break,
            }
            self.skip();
        }
        while self.is_blank(0) {
            self.skip();
        }
        if self.byte(0) == b'#' {
            self.skip_to_line_end();
        }
        if !self.is_breakz(0) {
            return None;
        }
        self.skip_line();
        Some(increment)
    }

    /// `yaml_parser_scan_block_scalar_breaks`: blank lines and the indentation of the next
    /// line; fixes `indent` from the first non-empty line when it is still 0.
    fn block_scalar_breaks(&mut self, indent: &mut i64) -> bool {
        let mut max_indent = 0;
        loop {
            while (*indent == 0 || (self.column as i64) < *indent) && self.byte(0) == b' ' {
                self.skip();
            }
            max_indent = max_indent.max(self.column as i64);
            if (*indent == 0 || (self.column as i64) < *indent) && self.byte(0) == b'\t' {
                return false;
            }
            if !self.is_break(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
        true
    }

    /// `'…'` or `"…"`, over as many lines as it takes.
    fn quoted_scalar(&mut self) -> bool {
        self.save_simple_key();
        self.simple_key_allowed = false;
        let quote = self.byte(0);
        self.skip();
        loop {
            if self.document_indicator(b'-') || self.document_indicator(b'.') || self.is_z(0) {
                return false;
            }
            while !self.is_blankz(0) {
                let c = self.byte(0);
                if quote == b'\'' && c == b'\'' && self.byte(1) == b'\'' {
                    self.skip();
                    self.skip();
                } else if c == quote {
                    break;
                } else if quote == b'"' && c == b'\\' && self.is_break(1) {
                    self.skip();
                    self.skip_line();
                    break;
                } else if quote == b'"' && c == b'\\' {
                    if !self.escape() {
                        return false;
                    }
                } else {
                    self.skip();
                }
            }
            if self.byte(0) == quote {
                self.skip();
                return true;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                }
            }
        }
    }

    /// A backslash escape in a double-quoted scalar; false for one libyaml rejects.
    fn escape(&mut self) -> bool {
        let hex_digits = match self.byte(1) {
            b'0' | b'a' | b'b' | b't' | b'\t' | b'n' | b'v' | b'f' | b'r' | b'e' | b' ' | b'"'
            | b'/' | b'\\' | b'N' | b'_' | b'L' | b'P' => 0,
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => return false,
        };
        self.skip();
        self.skip();
        let mut value: u32 = 0;
        for i in 0..hex_digits {
            let Some(digit) = (self.byte(i) as char).to_digit(16) else {
                return false;
            };
            value = (value << 4) | digit;
        }
        if (0xD800..=0xDFFF).contains(&value) || value > 0x10FFFF {
            return false;
        }
        for _ in 0..hex_digits {
            self.skip();
        }
        true
    }

    /// The check at the end of `yaml_parser_fetch_next_token` for the first character of a
    /// plain scalar.
    fn can_start_plain(&self) -> bool {
        let c = self.byte(0);
        let indicator = self.is_blankz(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c);
        !indicator
            || (c == b'-' && !self.is_blank(1))
            || (self.flow_level == 0 && (c == b'?' || c == b':') && !self.is_blankz(1))
    }

    /// An unquoted scalar; it may go on over more-indented lines (in block context).
    fn plain_scalar(&mut self) -> bool {
        self.save_simple_key();
        self.simple_key_allowed = false;
        let indent = self.indent + 1;
        let flowing = self.flow_level > 0;
        let mut leading_blanks = false;
        loop {
            if self.document_indicator(b'-') || self.document_indicator(b'.') {
                break;
            }
            if self.byte(0) == b'#' {
                break;
            }
            while !self.is_blankz(0) {
                let c = self.byte(0);
                if flowing && c == b':' && b",?[]{}".contains(&self.byte(1)) {
                    return false;
                }
                if (c == b':' && self.is_blankz(1)) || (flowing && b",[]{}".contains(&c)) {
                    break;
                }
                leading_blanks = false;
                self.skip();
            }
            if !(self.is_blank(0) || self.is_break(0)) {
                break;
            }
            while self.is_blank(0) || self.is_break(0) {
                if self.is_blank(0) {
                    if leading_blanks && (self.column as i64) < indent && self.byte(0) == b'\t' {
                        return false;
                    }
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if !flowing && (self.column as i64) < indent {
                break;
            }
        }
        if leading_blanks {
            self.simple_key_allowed = true;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_at(src: &str, limit: usize) -> Option<usize> {
        flow_too_deep(src, limit)
    }

    /// Two levels: enough for the top-level mapping and one `[`, not for `[[`.
    const LIMIT: usize = 2;

    #[test]
    fn counts_flow_collections_and_the_block_ones_around_them() {
        assert_eq!(depth_at("[[[]]]\n", 3), None);
        assert_eq!(depth_at("[[[[]]]]\n", 3), Some(3));
        assert_eq!(depth_at("a: [[[]]]\n", 3), Some(5));
        assert_eq!(depth_at("a: {b: [{c: 1}]}\n", 3), Some(8));
        assert_eq!(depth_at("a: [1, [2], [3]]\n", 3), None);
        assert_eq!(depth_at("a:\n  - b: [x]\n", 3), Some(10));
    }

    #[test]
    fn brackets_inside_scalars_and_comments_do_not_count() {
        let src = "a: '[[[['\nb: \"{{{{\"\nc: x [[[[\n# [[[[\nd: |\n  [[[[\ne: [ab[[[[]\n";
        assert_eq!(depth_at(src, LIMIT), Some(src.rfind("[[[[]").unwrap()));
        let src = "a: '[[[['\nb: \"{{{{\"\nc: x [[[[\n# [[[[\nd: |\n  [[[[\n";
        assert_eq!(depth_at(src, LIMIT), None);
    }

    #[test]
    fn block_scalar_ends_where_indentation_drops() {
        // Two block mappings, then `[` is level 3 and `[x` level 4.
        let src = "a:\n  b: |\n    text\n  c: [[x]]\n";
        assert_eq!(depth_at(src, 3), Some(src.find("[x").unwrap()));
        // Less indented than the mapping the scalar belongs to: the scalar is empty.
        let src = "a:\n  b: |\n  [[x]]\n";
        assert_eq!(depth_at(src, 3), Some(src.find("[x").unwrap()));
    }

    #[test]
    fn plain_scalar_continues_on_deeper_lines() {
        let src = "a: x\n  [[y\nb: [[z]]\n";
        assert_eq!(depth_at(src, LIMIT), Some(src.find("[z").unwrap()));
    }

    #[test]
    fn stops_where_libyaml_fails() {
        assert_eq!(depth_at("a: @ [[[[", 1), None);
    }
}
