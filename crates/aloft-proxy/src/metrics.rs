//! Request counters and latency histograms, rendered in the Prometheus text format
//! (version 0.0.4) by hand. Hot-path updates are relaxed atomics on per-machine records that the
//! balancer hands out with each lease; rendering takes a lock and sorts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counters of one machine for one service, in a few shards: each proxy worker thread counts in
/// its own (cache-line aligned) shard, so requests on different cores never write the same
/// line; rendering sums the shards.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    shards: [Shard; SHARDS],
}

/// Shards per machine and service (worker threads beyond this share them).
const SHARDS: usize = 4;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard {
    /// Responses by status class (index 1..=5 for 1xx..5xx; 0 for raw TCP connections).
    by_class: [AtomicU64; 6],
    /// Upstream failures: refused, reset, timed out (each retried attempt counts).
    errors: AtomicU64,
    /// Non-cumulative bucket counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl BackendMetrics {
    fn shard(&self) -> &Shard {
        let i = crate::pool::WORKER.with(|w| w.get()).unwrap_or(0);
        &self.shards[i % SHARDS]
    }

    /// Records one response (HTTP status) or connection (`status = 0`) and its latency
    /// (time to response headers, or to the upstream connection for raw TCP).
    pub fn record(&self, status: u16, latency: Duration) {
        let class = if status == 0 {
            0
        } else {
            (status / 100).clamp(1, 5) as usize
        };
        let secs = latency.as_secs_f64();
        let idx = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let s = self.shard();
        s.by_class[class].fetch_add(1, Relaxed);
        s.buckets[idx].fetch_add(1, Relaxed);
        s.sum_micros.fetch_add(latency.as_micros() as u64, Relaxed);
    }

    pub fn error(&self) {
        self.shard().errors.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for s in &self.shards {
            total.add(&Snapshot {
                by_class: std::array::from_fn(|i| s.by_class[i].load(Relaxed)),
                errors: s.errors.load(Relaxed),
                buckets: std::array::from_fn(|i| s.buckets[i].load(Relaxed)),
                sum_micros: s.sum_micros.load(Relaxed),
            });
        }
        total
    }
}

#[derive(Clone, Copy, Default)]
struct Snapshot {
    by_class: [u64; 6],
    errors: u64,
    buckets: [u64; BUCKETS.len() + 1],
    sum_micros: u64,
}

impl Snapshot {
    fn add(&mut self, o: &Snapshot) {
        for i in 0..6 {
            self.by_class[i] += o.by_class[i];
        }
        for i in 0..self.buckets.len() {
            self.buckets[i] += o.buckets[i];
        }
        self.errors += o.errors;
        self.sum_micros += o.sum_micros;
    }
}

/// One metrics series source: `(app, service, machine)` → counters.
pub(crate) struct MetricSource<'a> {
    pub app: &'a str,
    /// The service, named by its internal port.
    pub service: u16,
    pub machine: &'a str,
    pub metrics: &'a BackendMetrics,
}

const CLASSES: [&str; 6] = ["tcp", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Renders per-machine series, per-service aggregates and the "no machine available" counters
/// (`(app, external port) → count`).
pub(crate) fn render(
    sources: &[MetricSource<'_>],
    unavailable: &BTreeMap<(String, u16), u64>,
) -> String {
    let mut per_machine: BTreeMap<(String, u16, String), Snapshot> = BTreeMap::new();
    let mut per_service: BTreeMap<(String, u16), Snapshot> = BTreeMap::new();
    for s in sources {
        let snap = s.metrics.snapshot();
        per_machine
            .entry((s.app.to_string(), s.service, s.machine.to_string()))
            .or_default()
            .add(&snap);
        per_service
            .entry((s.app.to_string(), s.service))
            .or_default()
            .add(&snap);
    }
    let mut out = String::new();
    for (scope, rows) in [("machine", true), ("service", false)] {
        let series: Vec<(String, Snapshot)> = if rows {
            per_machine
                .iter()
                .map(|((a, svc, m), s)| {
                    (
                        format!(
                            "app=\"{}\",service=\"{svc}\",machine=\"{}\"",
                            esc(a),
                            esc(m)
                        ),
                        *s,
                    )
                })
                .collect()
        } else {
            per_service
                .iter()
                .map(|((a, svc), s)| (format!("app=\"{}\",service=\"{svc}\"", esc(a)), *s))
                .collect()
        };
        let name = format!("aloft_proxy_{scope}_requests_total");
        let _ = writeln!(out, "# HELP {name} Requests (HTTP responses by status class, or raw TCP connections) per {scope}.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, s) in &series {
            for (i, class) in CLASSES.iter().enumerate() {
                if s.by_class[i] > 0 {
                    let _ = writeln!(out, "{name}{{{labels},code=\"{class}\"}} {}", s.by_class[i]);
                }
            }
        }
        let name = format!("aloft_proxy_{scope}_errors_total");
        let _ = writeln!(out, "# HELP {name} Upstream failures (refused, reset, timeout) per {scope}, retried attempts included.");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, s) in &series {
            let _ = writeln!(out, "{name}{{{labels}}} {}", s.errors);
        }
        let name = format!("aloft_proxy_{scope}_latency_seconds");
        let _ = writeln!(out, "# HELP {name} Time to upstream response headers (HTTP) or connection (TCP) per {scope}.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (labels, s) in &series {
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += s.buckets[i];
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
            }
            cum += s.buckets[BUCKETS.len()];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.sum_micros as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
        }
    }
    let name = "aloft_proxy_unavailable_total";
    let _ = writeln!(out, "# HELP {name} Requests or connections refused because no machine could take them, per app and external port.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for ((app, port), n) in unavailable {
        let _ = writeln!(out, "{name}{{app=\"{}\",port=\"{port}\"}} {n}", esc(app));
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_aggregates() {
        let a = BackendMetrics::default();
        let b = BackendMetrics::default();
        a.record(200, Duration::from_micros(300));
        a.record(503, Duration::from_millis(30));
        b.record(204, Duration::from_secs(20));
        b.error();
        let sources = [
            MetricSource {
                app: "web",
                service: 8080,
                machine: "m1",
                metrics: &a,
            },
            MetricSource {
                app: "web",
                service: 8080,
                machine: "m2",
                metrics: &b,
            },
        ];
        let mut unavailable = BTreeMap::new();
        unavailable.insert(("web".to_string(), 80), 3);
        let text = render(&sources, &unavailable);
        assert!(text.contains("aloft_proxy_machine_requests_total{app=\"web\",service=\"8080\",machine=\"m1\",code=\"2xx\"} 1"));
        assert!(text.contains("aloft_proxy_machine_requests_total{app=\"web\",service=\"8080\",machine=\"m1\",code=\"5xx\"} 1"));
        assert!(text.contains(
            "aloft_proxy_service_requests_total{app=\"web\",service=\"8080\",code=\"2xx\"} 2"
        ));
        assert!(text.contains("aloft_proxy_service_errors_total{app=\"web\",service=\"8080\"} 1"));
        assert!(text.contains("aloft_proxy_machine_latency_seconds_bucket{app=\"web\",service=\"8080\",machine=\"m1\",le=\"0.0005\"} 1"));
        assert!(text.contains("aloft_proxy_machine_latency_seconds_bucket{app=\"web\",service=\"8080\",machine=\"m1\",le=\"0.025\"} 1"));
        assert!(text.contains("aloft_proxy_machine_latency_seconds_bucket{app=\"web\",service=\"8080\",machine=\"m1\",le=\"0.05\"} 2"));
        assert!(text.contains("aloft_proxy_machine_latency_seconds_bucket{app=\"web\",service=\"8080\",machine=\"m2\",le=\"10\"} 0"));
        assert!(text.contains("aloft_proxy_machine_latency_seconds_count{app=\"web\",service=\"8080\",machine=\"m2\"} 1"));
        assert!(text.contains("aloft_proxy_unavailable_total{app=\"web\",port=\"80\"} 3"));
    }
}
