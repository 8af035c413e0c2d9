//! The module rules of ARCHITECTURE.md (aloft-proxy section), checked on the sources: no
//! import cycle between the crate's modules, and the boundaries of the request lifecycle and
//! its two HTTP back-ends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the crate modules its files name (`crate::x`), comments left out.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = out.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Code of the files of `module` (comments left out).
fn code_of(module: &str) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = rust_files(&src.join(module));
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        files.push(single);
    }
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn modules_import_each_other_without_cycles() {
    let g = graph();
    // Depth-first search for a path back to the start.
    fn reaches(
        g: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        g.get(from)
            .into_iter()
            .flatten()
            .any(|d| d == to || (seen.insert(d.clone()) && reaches(g, d, to, seen)))
    }
    let cycles: Vec<&String> = g
        .keys()
        .filter(|m| reaches(&g, m, m, &mut BTreeSet::new()))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules in an import cycle: {cycles:?}\n{g:#?}"
    );
}

#[test]
fn the_lifecycle_and_its_back_ends_keep_their_boundaries() {
    let g = graph();
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    for back_end in ["h1", "hyper_path"] {
        assert!(
            deps(back_end).contains("lifecycle") && deps(back_end).contains("headers"),
            "{back_end} must go through the lifecycle and the header policy: {:?}",
            deps(back_end)
        );
    }
    assert!(!deps("h1").contains("hyper_path"), "{:?}", deps("h1"));
    assert!(
        !deps("hyper_path").contains("h1"),
        "{:?}",
        deps("hyper_path")
    );
    for neutral in [
        "lifecycle",
        "headers",
        "select",
        "health",
        "machines",
        "core",
    ] {
        let d = deps(neutral);
        assert!(
            !d.contains("h1") && !d.contains("hyper_path") && !d.contains("http"),
            "{neutral} must not know an HTTP back-end: {d:?}"
        );
    }
    assert!(
        !code_of("lifecycle").contains("hyper::"),
        "the lifecycle names hyper"
    );
    assert!(deps("compress").is_empty(), "{:?}", deps("compress"));
}
