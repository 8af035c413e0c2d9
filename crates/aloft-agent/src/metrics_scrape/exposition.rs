//! The Prometheus text format of scraped machines, read and written with the
//! `prom_text_format_parser` crate (parse, then print back: names, types, HELP lines, label
//! escapes, values and timestamps stay as the machine wrote them). Each machine's samples get
//! the [`TargetLabels`]; a label of the machine's own with one of those names is kept as
//! `exported_<name>`, as Prometheus does (`honor_labels: false`).
//!
//! The families of all machines are merged by name into one exposition (a name appears once,
//! with the HELP and TYPE of the first machine that has it): a family whose type differs from
//! the one already there, or whose name is one of the agent's own, is left out for that
//! machine and reported, so the output always stays one valid exposition.
//!
//! Why this crate: it keeps the text as written (values and label escapes are not re-encoded)
//! and prints it back, which is what re-labelling needs; `prometheus-parse` splits labels on
//! commas naively and regroups histograms, `openmetrics-parser` is LGPL-3.0.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use prom_text_format_parser::{Label, Metric, ScrapeParseError, Type};

use super::targets::TargetLabels;

/// Parses a scrape body and labels every sample with `labels`. Families with HELP or TYPE but
/// no sample are dropped (they carry nothing); a line that is not the text format fails the
/// scrape, as it fails one of Prometheus.
pub fn parse(body: &str, labels: &TargetLabels) -> Result<Vec<Metric>, String> {
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    let (mut metrics, error) = prom_text_format_parser::parse_scrape(body);
    if let Some(ScrapeParseError::Parse(e)) = error {
        return Err(format!(
            "not the Prometheus text format: {}",
            first_line(&e)
        ));
    }
    for m in &mut metrics {
        for sample in &mut m.samples {
            for (name, _) in labels.pairs() {
                for l in sample.labels.iter_mut().filter(|l| l.key == name) {
                    l.key = format!("exported_{name}");
                }
            }
            for (name, value) in labels.pairs() {
                sample
                    .labels
                    .push(Label::new(name.to_string(), escape(value)));
            }
        }
    }
    Ok(metrics)
}

fn first_line(s: &str) -> &str {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s);
    let end = line
        .char_indices()
        .nth(200)
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    &line[..end]
}

/// A label value in the text format: `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The sample names a family writes (`_bucket`, `_sum`, `_count` for histograms and
/// summaries): what may not clash with the agent's own names.
fn written_names(m: &Metric) -> Vec<String> {
    let mut names = vec![m.name.clone()];
    match m.kind {
        Type::Histogram => {
            for s in ["_bucket", "_sum", "_count"] {
                names.push(format!("{}{s}", m.name));
            }
        }
        Type::Summary => {
            for s in ["_sum", "_count"] {
                names.push(format!("{}{s}", m.name));
            }
        }
        _ => {}
    }
    names
}

/// The metric and sample names in an exposition (the agent's own, which machines' families
/// may not take).
pub fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        let name = match line.strip_prefix('#') {
            Some(rest) => {
                let mut words = rest.split_whitespace();
                match words.next() {
                    Some("HELP" | "TYPE") => words.next(),
                    _ => None,
                }
            }
            None => line.split(['{', ' ', '\t']).next(),
        };
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            names.insert(n.to_string());
        }
    }
    names
}

/// A family of one machine left out of the merged output, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub machine: String,
    pub family: String,
    pub why: String,
}

/// Merges the machines' families (in the given order) into one exposition appended to `out`;
/// `reserved` are names the output already has. Returns what was left out.
pub fn merge_into<'a>(
    out: &mut String,
    machines: impl IntoIterator<Item = (&'a str, &'a [Metric])>,
    reserved: &BTreeSet<String>,
) -> Vec<Dropped> {
    let mut families: BTreeMap<&str, Metric> = BTreeMap::new();
    let mut dropped = Vec::new();
    for (machine, metrics) in machines {
        for m in metrics {
            if let Some(clash) = written_names(m).into_iter().find(|n| reserved.contains(n)) {
                dropped.push(Dropped {
                    machine: machine.to_string(),
                    family: m.name.clone(),
                    why: format!("{clash} is a metric of the agent itself"),
                });
                continue;
            }
            match families.get_mut(m.name.as_str()) {
                None => {
                    families.insert(&m.name, m.clone());
                }
                Some(f) if f.kind == m.kind => f.samples.extend(m.samples.iter().cloned()),
                Some(f) => dropped.push(Dropped {
                    machine: machine.to_string(),
                    family: m.name.clone(),
                    why: format!(
                        "it is a {} here and a {} on another machine",
                        m.kind, f.kind
                    ),
                }),
            }
        }
    }
    for f in families.values() {
        let _ = write!(out, "{f}");
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(machine: &str) -> TargetLabels {
        TargetLabels {
            app: "shop".into(),
            process_group: "web".into(),
            machine: machine.into(),
            region: "ams".into(),
        }
    }

    const BODY: &str = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="po\"st",app="theirs"} 3
# A comment
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE latency histogram
latency_bucket{le="0.5"} 1
latency_bucket{le="+Inf"} 2
latency_sum 0.7
latency_count 2
bare NaN
"#;

    #[test]
    fn labels_are_added_and_everything_else_kept() {
        let parsed = parse(BODY, &labels("m1")).unwrap();
        let mut out = String::new();
        let dropped = merge_into(&mut out, [("m1", &parsed[..])], &BTreeSet::new());
        assert!(dropped.is_empty());
        let tail = r#"app="shop",process_group="web",machine="m1",region="ams""#;
        for line in [
            "# HELP http_requests_total The total number of HTTP requests.".to_string(),
            "# TYPE http_requests_total counter".to_string(),
            format!(r#"http_requests_total{{method="post",code="200",{tail}}} 1027 1395066363000"#),
            format!(r#"http_requests_total{{method="po\"st",exported_app="theirs",{tail}}} 3"#),
            "# TYPE rpc_duration_seconds summary".to_string(),
            format!(r#"rpc_duration_seconds{{quantile="0.5",{tail}}} 4773"#),
            format!("rpc_duration_seconds_sum{{{tail}}} 1.7560473e+07"),
            format!("rpc_duration_seconds_count{{{tail}}} 2693"),
            "# TYPE latency histogram".to_string(),
            format!(r#"latency_bucket{{le="+Inf",{tail}}} 2"#),
            format!("latency_count{{{tail}}} 2"),
            format!("bare{{{tail}}} NaN"),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in:\n{out}");
        }
        assert!(!out.contains("A comment"));
    }

    #[test]
    fn machines_merge_into_one_family_and_clashes_are_left_out() {
        let a = parse(BODY, &labels("m1")).unwrap();
        let b = parse(
            "# TYPE http_requests_total gauge\nhttp_requests_total 1\n# TYPE aloft_proxy_requests_total counter\naloft_proxy_requests_total 5\nmine 2\n",
            &labels("m2"),
        )
        .unwrap();
        let c = parse("mine 3\n", &labels("m3")).unwrap();
        let reserved = names_in(
            "# HELP aloft_proxy_requests_total x\n# TYPE aloft_proxy_requests_total counter\naloft_proxy_requests_total{app=\"a\"} 1\n",
        );
        let mut out = String::new();
        let dropped = merge_into(
            &mut out,
            [("m1", &a[..]), ("m2", &b[..]), ("m3", &c[..])],
            &reserved,
        );
        let names: Vec<(&str, &str)> = dropped
            .iter()
            .map(|d| (d.machine.as_str(), d.family.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("m2", "http_requests_total"),
                ("m2", "aloft_proxy_requests_total")
            ]
        );
        assert_eq!(
            out.matches("# TYPE http_requests_total").count(),
            1,
            "{out}"
        );
        assert!(out.contains(r#"mine{app="shop",process_group="web",machine="m2",region="ams"} 2"#));
        assert!(out.contains(r#"mine{app="shop",process_group="web",machine="m3",region="ams"} 3"#));
        assert!(!out.contains("aloft_proxy_requests_total"));
        // The merged output is itself one valid exposition.
        prom_text_format_parser::Scrape::parse(&out).unwrap();
    }

    #[test]
    fn bad_bodies_fail_and_empty_ones_are_nothing() {
        assert_eq!(parse("\n  \n", &labels("m1")).unwrap().len(), 0);
        let err = parse("<html>oops</html>\n", &labels("m1")).unwrap_err();
        assert!(err.starts_with("not the Prometheus text format"), "{err}");
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
