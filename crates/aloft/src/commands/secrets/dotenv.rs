//! The dotenv form `aloft secrets import` reads: `NAME=VALUE` per line, `export ` prefixes,
//! `#` comment lines and ` #` trailing comments of unquoted values, '…' (literal) and "…"
//! (with `\n`, `\t`, `\r`, `\"`, `\\` escapes) quoting that may span lines, and flyctl's
//! `"""…"""` blocks (the lines in between, verbatim, as `fly secrets import` reads them).
//!
//! Hand-written rather than `dotenvy`: dotenvy expands `$NAME` and `${NAME}` from the process
//! environment inside unquoted and double-quoted values, which would silently change a secret
//! holding a `$` (passwords do). Nothing is expanded here.

/// The pairs of `text`, in order (a later pair of the same name wins when collected into a map).
/// Errors name the line and what to fix.
pub fn parse(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let at = n + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((name, rest)) = trimmed.split_once('=') else {
            anyhow::bail!("line {at}: expected NAME=VALUE");
        };
        let name = name.trim();
        if name.is_empty() {
            anyhow::bail!("line {at}: no name before '='");
        }
        let rest = rest.trim_start();
        let value = if let Some(first) = rest.strip_prefix("\"\"\"") {
            // flyctl's block: everything up to a line ending with """, newlines kept.
            match first.strip_suffix("\"\"\"") {
                Some(v) => v.to_string(),
                None => {
                    let mut v = format!("{first}\n");
                    loop {
                        let Some((_, l)) = lines.next() else {
                            anyhow::bail!("line {at}: the \"\"\" block of {name} is not closed");
                        };
                        if let Some(last) = l.strip_suffix("\"\"\"") {
                            v.push_str(last);
                            break v;
                        }
                        v.push_str(l);
                        v.push('\n');
                    }
                }
            }
        } else if let Some(q @ ('"' | '\'')) = rest.chars().next() {
            let mut body = rest[1..].to_string();
            loop {
                if let Some((v, after)) = close_quote(&body, q) {
                    let after = after.trim();
                    if !after.is_empty() && !after.starts_with('#') {
                        anyhow::bail!(
                            "line {at}: unexpected {after:?} after the quoted value of {name}"
                        );
                    }
                    break v;
                }
                let Some((_, l)) = lines.next() else {
                    anyhow::bail!("line {at}: the {q}quoted value of {name} is not closed");
                };
                body.push('\n');
                body.push_str(l);
            }
        } else {
            let v = match rest.find(" #") {
                Some(i) => &rest[..i],
                None => rest,
            };
            v.trim_end().to_string()
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// The value of `body` up to its closing `q` and what follows it, or `None` when `body` has no
/// closing quote yet. Double quotes take backslash escapes; single quotes are literal.
fn close_quote(body: &str, q: char) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == q => return Some((value, &body[i + 1..])),
            '\\' if q == '"' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, other)) => value.push(other),
                None => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap()
    }

    #[test]
    fn reads_comments_exports_quotes_and_blocks() {
        let text = r#"
# a comment
export A=plain value # trailing
B = "double \"quoted\"\n# not a comment"
C='single $HOME \n literal'
D="multi
line"
E="""first
second"""
F=$NOT_EXPANDED
G=
"#;
        assert_eq!(
            pairs(text),
            [
                ("A", "plain value"),
                ("B", "double \"quoted\"\n# not a comment"),
                ("C", "single $HOME \\n literal"),
                ("D", "multi\nline"),
                ("E", "first\nsecond"),
                ("F", "$NOT_EXPANDED"),
                ("G", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            ("A=1\nnot a pair", "line 2: expected NAME=VALUE"),
            ("=1", "line 1: no name"),
            ("A=\"open", "line 1: the \"quoted value of A is not closed"),
            (
                "A=\"\"\"open\nstill",
                "line 1: the \"\"\" block of A is not closed",
            ),
            ("A=\"x\" y", "unexpected \"y\""),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
