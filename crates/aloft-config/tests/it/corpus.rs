//! Walks the real-world fly.toml corpus (`shared/corpus/fly-toml`, beside the checkout):
//! files marked `suspected_invalid = no|maybe…` in INDEX.tsv must validate (warnings are fine);
//! files marked `yes…` must fail with an error located on the line at fault, except the few
//! that fault a rule flyctl does not have, which must validate with a warning on that line
//! instead (`accepted_with_a_warning`). The directory
//! missing is a failure, not a skip: the acceptance of the config engine depends on it.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/fly-toml")
}

/// For the files known to be invalid: (lines an error may point at, text the error must contain).
/// Read from the files themselves; see INDEX.tsv notes.
fn expected_faults() -> BTreeMap<&'static str, (&'static [usize], &'static str)> {
    BTreeMap::from([
        // duplicate ZFINGER_URL in [env]
        ("032", (&[20][..], "duplicate key")),
        // [[services]] with processes but no internal_port
        ("040", (&[38][..], "internal_port")),
        // http_service.processes = ['app'] while groups are web/worker
        ("055", (&[17][..], "'app'")),
        // [[services]] without internal_port
        ("103", (&[14][..], "internal_port")),
        // [[services.http_checks]] with no [[services]] parent: a service with no internal_port
        ("137", (&[52][..], "internal_port")),
    ])
}

/// Files INDEX.tsv marks invalid for a rule that flyctl does not have, so Aloft now takes them
/// with a warning (see "Differences from flyctl" in the crate docs): (lines the warning may
/// point at, text it must contain).
fn accepted_with_a_warning() -> BTreeMap<&'static str, (&'static [usize], &'static str)> {
    BTreeMap::from([
        // [[vm]] processes = ['release_command'], no such group: flyctl does not check [[vm]]
        // references; the entry applies to no machine.
        ("035", (&[26][..], "'release_command'")),
        // legacy [[processes]] entry with `entrypoint` (and no command): flyctl drops the key.
        ("093", (&[60, 62][..], "[[processes]]")),
    ])
}

#[test]
fn corpus_validates_as_the_index_says() {
    let dir = corpus_dir();
    assert!(
        dir.is_dir(),
        "corpus directory {} is missing (CI must have shared/ beside the checkout)",
        dir.display()
    );
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).expect("INDEX.tsv");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "INDEX.tsv")
        .collect();
    let expected = expected_faults();
    let mut failures = vec![];
    let mut checked = 0;
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (nnn, verdict) = (cols[0], cols.get(5).copied().unwrap_or("no"));
        let Some(name) = files.iter().find(|f| f.starts_with(&format!("{nnn}__"))) else {
            failures.push(format!("{nnn}: listed in INDEX.tsv but no file"));
            continue;
        };
        checked += 1;
        let loaded = aloft_config::load(&dir.join(name)).expect("readable");
        let d = &loaded.diagnostics;
        if let Some((lines, text)) = accepted_with_a_warning().get(nnn) {
            let warned = d.warnings().any(|w| {
                w.location.is_some_and(|l| lines.contains(&l.line))
                    && (w.message.contains(text)
                        || w.hint.as_deref().is_some_and(|h| h.contains(text)))
            });
            if d.has_errors() || !warned {
                failures.push(format!(
                    "{name}: must validate with a warning at line(s) {lines:?} mentioning {text:?}\n{d}"
                ));
            }
        } else if verdict.starts_with("yes") {
            let errors: Vec<_> = d.errors().collect();
            if errors.is_empty() {
                failures.push(format!(
                    "{name}: marked invalid ({verdict}) but validated\n{d}"
                ));
                continue;
            }
            if errors.iter().any(|e| e.location.is_none()) {
                failures.push(format!("{name}: an error has no location\n{d}"));
            }
            if let Some((lines, text)) = expected.get(nnn) {
                let hit = errors.iter().any(|e| {
                    e.location.is_some_and(|l| lines.contains(&l.line))
                        && (e.message.contains(text)
                            || e.hint.as_deref().is_some_and(|h| h.contains(text)))
                });
                if !hit {
                    failures.push(format!(
                        "{name}: no error at line(s) {lines:?} mentioning {text:?}\n{d}"
                    ));
                }
            }
            // Every error must also render with its source line and caret.
            for e in &errors {
                let text = e.to_string();
                if !text.contains('^') {
                    failures.push(format!("{name}: error renders without caret:\n{text}"));
                }
            }
        } else if d.has_errors() {
            failures.push(format!("{name}: marked {verdict:?} but has errors\n{d}"));
        } else {
            // Valid files flatten for every group without surprises.
            for g in loaded.config.process_names() {
                let mc = loaded.config.machine_config_for(&g);
                assert_eq!(mc.env.get("FLY_PROCESS_GROUP"), Some(&g), "{name}");
            }
        }
    }
    assert!(checked >= 90, "only {checked} corpus files checked");
    assert!(
        failures.is_empty(),
        "{} corpus file(s) misjudged:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
