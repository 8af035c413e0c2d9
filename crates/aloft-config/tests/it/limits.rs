//! The reader's limits (hardening): nesting deeper than 64 levels, files over 4 MiB and YAML
//! alias bombs get one clear, located error, quickly and without a stack overflow, in every
//! format; ordinary configs are unaffected; many diagnostics on one long line stay linear.
//!
//! Before these limits, 195 KB of `a: [[[…]]]` YAML took over 20 s to read (libyaml rescans
//! one pending key per open `[` for every token), a 13 KB TOML of dotted keys inside inline
//! tables overflowed the stack, and 20 000 unknown keys on one TOML line took 12 s and 4 GB.

use std::time::Instant;

use aloft_config::{parse_str, Diagnostic, Format, Loaded};

/// Size of the adversarial inputs, as in the original report.
const SIZE: usize = 195 * 1024;

/// Parses on a thread with a 1 MiB stack (half the default for tests), timing it.
fn parse_small_stack(src: String, format: Format, name: &'static str) -> Loaded {
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || {
            let start = Instant::now();
            let loaded = parse_str(&src, format, name);
            println!("{name}: {} bytes in {:?}", src.len(), start.elapsed());
            loaded
        })
        .unwrap()
        .join()
        .unwrap()
}

/// The one error of `loaded`, which must be the nesting limit, on `line`.
fn assert_too_deep_on_line(loaded: &Loaded, line: usize) -> Diagnostic {
    let errors: Vec<_> = loaded.diagnostics.errors().collect();
    assert_eq!(errors.len(), 1, "{}", loaded.diagnostics);
    let e = errors[0].clone();
    assert!(
        e.message.contains("nested more than 64 levels"),
        "{}",
        loaded.diagnostics
    );
    assert!(e.hint.as_deref().unwrap_or("").contains("flatten"), "{e}");
    assert_eq!(e.location.expect("the error is located").line, line, "{e}");
    e
}

/// As [`assert_too_deep_on_line`], at `line:column` exactly.
fn assert_too_deep(loaded: &Loaded, line: usize, column: usize) -> Diagnostic {
    let e = assert_too_deep_on_line(loaded, line);
    assert_eq!(e.location.unwrap().column, column, "{e}");
    e
}

/// `prefix` + `open` × n + `close` × n + `suffix`, with n as large as fits in [`SIZE`].
fn nest(prefix: &str, open: &str, inner: &str, close: &str, suffix: &str) -> String {
    let n = (SIZE - prefix.len() - suffix.len() - inner.len()) / (open.len() + close.len());
    format!(
        "{prefix}{}{inner}{}{suffix}",
        open.repeat(n),
        close.repeat(n)
    )
}

// ---- YAML ----------------------------------------------------------------------------------

#[test]
fn deep_yaml_flow_sequences_are_refused_at_the_65th_level() {
    let src = nest("a: ", "[", "", "]", "\n");
    let loaded = parse_small_stack(src, Format::Yaml, "fly.yaml");
    // The top-level mapping is level 1, so the 64th `[` (column 3 + 64) opens level 65.
    let e = assert_too_deep(&loaded, 1, 67);
    assert!(e.to_string().contains("--> fly.yaml:1:67"), "{e}");
}

#[test]
fn deep_yaml_flow_mappings_are_refused() {
    let src = nest("a: ", "{a: ", "1", "}", "\n");
    let loaded = parse_small_stack(src, Format::Yaml, "fly.yaml");
    assert_too_deep(&loaded, 1, 3 + 63 * 4 + 1);
}

#[test]
fn deep_yaml_block_mappings_are_refused() {
    // `a:` indented one more space per level: 65 levels fit easily.
    let src: String = (0..200).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let loaded = parse_small_stack(src, Format::Yaml, "fly.yaml");
    assert_too_deep(&loaded, 65, 65);
}

#[test]
fn deep_compact_yaml_sequences_are_refused() {
    let src = nest("a:\n", "- ", "x", "", "\n");
    let loaded = parse_small_stack(src, Format::Yaml, "fly.yaml");
    assert_too_deep(&loaded, 2, 64 * 2 - 1);
}

#[test]
fn yaml_alias_bombs_are_refused() {
    // 40 KB that expands to 64 million values through `*a`.
    let items = vec!["1"; 8000].join(",");
    let aliases = vec!["*a"; 8000].join(",");
    let src = format!("a: &a [{items}]\nb: [{aliases}]\n");
    let loaded = parse_small_stack(src, Format::Yaml, "fly.yaml");
    let errors: Vec<_> = loaded.diagnostics.errors().collect();
    assert_eq!(errors.len(), 1, "{}", loaded.diagnostics);
    assert!(
        errors[0]
            .message
            .contains("expands to more than 1000000 values"),
        "{}",
        loaded.diagnostics
    );
}

// ---- JSON ----------------------------------------------------------------------------------

#[test]
fn deep_json_arrays_are_refused() {
    let src = nest("{\"a\": ", "[", "", "]", "}");
    let loaded = parse_small_stack(src, Format::Json, "fly.json");
    assert_too_deep(&loaded, 1, 6 + 64);
}

#[test]
fn deep_json_objects_are_refused_and_strings_do_not_count() {
    let src = nest(
        "{\"s\": \"[[[{{{\\\"[[[\", \"a\": ",
        "{\"a\": ",
        "1",
        "}",
        "}",
    );
    let loaded = parse_small_stack(src, Format::Json, "fly.json");
    let prefix = "{\"s\": \"[[[{{{\\\"[[[\", \"a\": ";
    assert_too_deep(&loaded, 1, prefix.len() + 63 * 6 + 1);
}

// ---- TOML ----------------------------------------------------------------------------------

#[test]
fn deep_toml_inline_arrays_are_refused() {
    let src = nest("a = ", "[", "", "]", "\n");
    let loaded = parse_small_stack(src, Format::Toml, "fly.toml");
    // toml_edit stops at its own guard (80 levels) before the tree is walked; the error still
    // names our limit. `the_limit_is_64_levels_in_every_format` checks the exact boundary.
    assert_too_deep_on_line(&loaded, 1);
}

#[test]
fn deep_toml_inline_tables_are_refused() {
    let src = nest("a = ", "{a = ", "1", "}", "\n");
    let loaded = parse_small_stack(src, Format::Toml, "fly.toml");
    assert_too_deep_on_line(&loaded, 1);
}

#[test]
fn deep_toml_dotted_keys_inside_inline_tables_are_refused() {
    // Each inline table holds a 79-part dotted key: 79 × 79 levels in 13 KB, which used to
    // overflow the stack.
    let key = vec!["a"; 79].join(".");
    let src = format!(
        "x = {}1{}\n",
        format!("{{{key} = ").repeat(79),
        "}".repeat(79)
    );
    let loaded = parse_small_stack(src, Format::Toml, "fly.toml");
    assert_too_deep_on_line(&loaded, 1);
}

#[test]
fn deep_toml_table_headers_are_refused() {
    let header = vec!["a"; 70].join(".");
    let src = format!("app = 'x'\n[{header}]\nk = 1\n");
    let loaded = parse_small_stack(src, Format::Toml, "fly.toml");
    assert_too_deep_on_line(&loaded, 2);
}

// ---- the limit itself, and ordinary files ---------------------------------------------------

/// 63 nested lists under a top-level key are 64 levels (accepted); one more is refused.
#[test]
fn the_limit_is_64_levels_in_every_format() {
    let cases = [
        (Format::Yaml, "a: ", "\n"),
        (Format::Json, "{\"a\": ", "}"),
        (Format::Toml, "a = ", "\n"),
    ];
    for (format, prefix, suffix) in cases {
        let at_limit = format!("{prefix}{}{}{suffix}", "[".repeat(63), "]".repeat(63));
        let d = parse_str(&at_limit, format, "f").diagnostics;
        assert!(!d.has_errors(), "{format:?} at the limit:\n{d}");
        let over = format!("{prefix}{}{}{suffix}", "[".repeat(64), "]".repeat(64));
        let loaded = parse_str(&over, format, "f");
        // Level 65 is opened by the 64th `[`.
        assert_too_deep(&loaded, 1, prefix.len() + 64);
    }
}

/// The same config, with a pass-through value ten levels deep, in each format.
#[test]
fn ordinary_nesting_still_parses() {
    let toml = "app = 'x'\n[http_service]\ninternal_port = 8080\n\
                [http_service.http_options.a.b.c.d.e.f]\ng = [1, [2]]\n";
    let json = r#"{"app": "x", "http_service": {"internal_port": 8080,
        "http_options": {"a": {"b": {"c": {"d": {"e": {"f": {"g": [1, [2]]}}}}}}}}}"#;
    let yaml = "app: x\nhttp_service:\n  internal_port: 8080\n  http_options:\n    a:\n      b:\n\
                \x20       c:\n          d:\n            e:\n              f:\n                g: [1, [2]]\n";
    for (src, format) in [
        (toml, Format::Toml),
        (json, Format::Json),
        (yaml, Format::Yaml),
    ] {
        let loaded = parse_str(src, format, "fly");
        assert!(
            !loaded.diagnostics.has_errors(),
            "{format:?}:\n{}",
            loaded.diagnostics
        );
        let options = loaded.config.http_service.unwrap().http_options.unwrap();
        assert_eq!(
            options.pointer("/a/b/c/d/e/f/g/1/0"),
            Some(&serde_json::json!(2)),
            "{format:?}"
        );
    }
}

// ---- size and diagnostics --------------------------------------------------------------------

#[test]
fn files_over_4_mib_are_refused_unread() {
    let big = format!("app = 'x'\n# {}\n", "x".repeat(4 * 1024 * 1024));
    let d = parse_str(&big, Format::Toml, "fly.toml").diagnostics;
    assert_eq!(d.len(), 1, "{d}");
    assert!(d.items[0].message.contains("larger than 4 MiB"), "{d}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fly.toml");
    std::fs::write(&path, &big).unwrap();
    let d = aloft_config::load(&path).unwrap().diagnostics;
    assert_eq!(d.len(), 1, "{d}");
    assert!(d.items[0].message.contains("larger than 4 MiB"), "{d}");
    assert!(d.to_string().contains("--> "), "{d}");
}

#[test]
fn many_diagnostics_on_one_long_line_show_an_excerpt() {
    let keys: Vec<String> = (0..2000).map(|i| format!("k{i} = 1")).collect();
    let src = format!(
        "http_service = {{internal_port = 8080, {}}}\n",
        keys.join(", ")
    );
    let start = Instant::now();
    let d = parse_str(&src, Format::Toml, "fly.toml").diagnostics;
    println!("{} diagnostics in {:?}", d.len(), start.elapsed());
    assert!(d.warnings().count() >= 2000, "{d}");
    let last = d
        .warnings()
        .find(|w| w.message.contains("`k1000`"))
        .unwrap();
    let line = last.source_line.as_deref().unwrap();
    assert!(line.chars().count() <= 170, "{line}");
    assert!(line.starts_with('…') && line.ends_with('…'), "{line}");
    // The caret still sits under the key, at its true column.
    let text = last.to_string();
    let caret_line = text.lines().find(|l| l.contains('^')).unwrap();
    let code_line = text.lines().find(|l| l.starts_with("1 | ")).unwrap();
    let chars_before = |line: &str, byte: usize| line[..byte].chars().count();
    assert_eq!(
        chars_before(caret_line, caret_line.find('^').unwrap()),
        chars_before(code_line, code_line.find("k1000").unwrap()),
        "{text}"
    );
    assert_eq!(
        last.location.unwrap().column,
        src.find("k1000").unwrap() + 1
    );
}
