//! Scraping machines' own metrics, the agent's equivalent of Fly's managed Prometheus: every
//! started machine whose config has `metrics` (`[metrics]`/`[[metrics]]` of fly.toml, flattened
//! per group: port, path, https) is scraped every [`ScrapeSettings::interval`] (15 s, as Fly;
//! `aloft agent --metrics-interval`), and its samples are served on the agent's Prometheus
//! endpoint (`GET /v1/metrics`, after the proxy's own metrics) with the labels `app`,
//! `process_group`, `machine` and `region` added ([`exposition`]).
//!
//! Where machines are reached: [`targets`]. How one is fetched: [`fetch`] (a deadline over the
//! whole exchange, a bounded body). Scrapes run in their own tasks, at most
//! [`ScrapeSettings::concurrency`] at once and never two of one machine, so a slow or huge
//! endpoint costs one task and a bounded buffer; nothing of it reaches the API or the proxy.
//!
//! A failed scrape is never fatal: the machine's `aloft_metrics_scrape_up` is 0, its samples
//! are gone until a scrape succeeds again (stale, as in Prometheus), and the agent logs the
//! error — when a machine goes down or its error changes, then at most every
//! [`LOG_EVERY`] while it stays down. A stopped or destroyed machine leaves the output at
//! once: the targets follow the controller's machine changes in memory (no SQLite on this path).

pub mod exposition;
pub mod fetch;
pub mod targets;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prom_text_format_parser::Metric;
use tokio::sync::Semaphore;

use crate::controller::Controller;
use crate::machine_map::{self, AppMachines};
use targets::{Target, TargetLabels};

/// How machines are scraped (kept with the agent's settings).
pub use crate::settings::ScrapeSettings;

/// A gauge of every scraped machine: name (after `aloft_metrics_scrape_`), help, value.
type Gauge = (&'static str, &'static str, fn(&Outcome) -> String);

/// A failing machine's error is logged again after this long.
pub const LOG_EVERY: Duration = Duration::from_secs(600);

/// The last scrape of one machine.
struct Outcome {
    /// The samples, labelled; empty after a failure.
    metrics: Vec<Metric>,
    error: Option<String>,
    duration: Duration,
    /// When the current error was last logged.
    logged: Option<Instant>,
}

#[derive(Default)]
struct State {
    targets: BTreeMap<String, Target>,
    outcomes: BTreeMap<String, Outcome>,
    in_flight: BTreeSet<String>,
}

/// The scraper: its targets, the last outcome of each, and what the endpoint renders.
pub struct Scraper {
    settings: ScrapeSettings,
    state: Mutex<State>,
    slots: Arc<Semaphore>,
}

impl Scraper {
    /// Starts scraping the machines `ctl` knows, following its changes.
    pub async fn start(ctl: Arc<Controller>, settings: ScrapeSettings) -> Arc<Scraper> {
        let scraper = Arc::new(Scraper {
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            settings,
            state: Mutex::default(),
        });
        let mut changes = ctl.subscribe();
        let all = match machine_map::load_all(&ctl).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "loading machines for metrics scraping");
                AppMachines::new()
            }
        };
        scraper.set_targets(targets::targets(&all, |id| ctl.machine_ipv4(id)));
        let weak = Arc::downgrade(&scraper);
        tokio::spawn(async move {
            let mut all = all;
            loop {
                let first = changes.recv().await;
                let window = Duration::from_millis(20);
                if !machine_map::gather(&ctl, &mut changes, &mut all, first, window, "metrics")
                    .await
                {
                    return;
                }
                let Some(scraper) = weak.upgrade() else {
                    return;
                };
                scraper.set_targets(targets::targets(&all, |id| ctl.machine_ipv4(id)));
            }
        });
        let weak = Arc::downgrade(&scraper);
        let interval = scraper.settings.interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(scraper) = weak.upgrade() else {
                    return;
                };
                scraper.scrape_all();
            }
        });
        scraper
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the targets; outcomes of machines no longer scraped are forgotten.
    fn set_targets(&self, targets: BTreeMap<String, Target>) {
        let mut st = self.lock();
        st.outcomes.retain(|id, _| targets.contains_key(id));
        st.targets = targets;
    }

    /// Starts a scrape of every target that has none running.
    fn scrape_all(self: &Arc<Self>) {
        let due: Vec<(String, Target)> = {
            let mut st = self.lock();
            let due: Vec<(String, Target)> = st
                .targets
                .iter()
                .filter(|(id, _)| !st.in_flight.contains(*id))
                .map(|(id, t)| (id.clone(), t.clone()))
                .collect();
            st.in_flight.extend(due.iter().map(|(id, _)| id.clone()));
            due
        };
        for (id, target) in due {
            let scraper = self.clone();
            tokio::spawn(async move {
                let permit = scraper.slots.clone().acquire_owned().await;
                let started = Instant::now();
                let result = scraper.scrape(&target).await;
                drop(permit);
                scraper.record(&id, &target, result, started.elapsed());
            });
        }
    }

    async fn scrape(&self, target: &Target) -> Result<Vec<Metric>, String> {
        let addr = target.endpoint.clone()?;
        let s = &self.settings;
        let body = fetch::fetch(
            addr,
            &target.path,
            target.https,
            s.timeout,
            s.max_body_bytes,
        )
        .await?;
        exposition::parse(&body, &target.labels)
    }

    fn record(
        &self,
        id: &str,
        target: &Target,
        result: Result<Vec<Metric>, String>,
        duration: Duration,
    ) {
        let mut st = self.lock();
        st.in_flight.remove(id);
        // Stopped or changed meanwhile: this scrape no longer describes the machine.
        if st.targets.get(id) != Some(target) {
            return;
        }
        let before = st.outcomes.remove(id);
        let l = &target.labels;
        let outcome = match result {
            Ok(metrics) => {
                if before.as_ref().is_some_and(|b| b.error.is_some()) {
                    tracing::info!(app = %l.app, machine = %l.machine, "metrics endpoint answers again");
                }
                Outcome {
                    metrics,
                    error: None,
                    duration,
                    logged: None,
                }
            }
            Err(error) => {
                let (same, logged) = match &before {
                    Some(b) => (b.error.as_ref() == Some(&error), b.logged),
                    None => (false, None),
                };
                let due = !same || logged.is_none_or(|at| at.elapsed() >= LOG_EVERY);
                if due {
                    tracing::warn!(app = %l.app, machine = %l.machine, group = %l.process_group, "scraping the machine's metrics ([metrics] in fly.toml) failed: {error}");
                }
                Outcome {
                    metrics: Vec::new(),
                    error: Some(error),
                    duration,
                    logged: if due { Some(Instant::now()) } else { logged },
                }
            }
        };
        st.outcomes.insert(id.to_string(), outcome);
    }

    /// The last scrape error of a machine, if its last scrape failed.
    pub fn last_error(&self, machine_id: &str) -> Option<String> {
        self.lock().outcomes.get(machine_id)?.error.clone()
    }

    /// Appends the scrape gauges and the machines' samples to `out`, which holds the agent's own
    /// metrics (their names are not given to machines' families).
    pub fn render_into(&self, out: &mut String) {
        let mut reserved = exposition::names_in(out);
        reserved.extend(
            ["up", "duration_seconds", "samples"].map(|n| format!("aloft_metrics_scrape_{n}")),
        );
        let st = self.lock();
        let scraped: Vec<(&TargetLabels, &Outcome)> = st
            .targets
            .iter()
            .filter_map(|(id, t)| Some((&t.labels, st.outcomes.get(id)?)))
            .collect();
        if scraped.is_empty() {
            return;
        }
        let gauges: [Gauge; 3] = [
            (
                "up",
                "Whether the last scrape of the machine's metrics endpoint ([metrics] in fly.toml) succeeded (1) or failed (0).",
                |o| if o.error.is_none() { "1".into() } else { "0".into() },
            ),
            (
                "duration_seconds",
                "How long the last scrape of the machine's metrics endpoint took.",
                |o| format!("{:.6}", o.duration.as_secs_f64()),
            ),
            (
                "samples",
                "Samples the last scrape of the machine's metrics endpoint returned.",
                |o| o.metrics.iter().map(|m| m.samples.len()).sum::<usize>().to_string(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP aloft_metrics_scrape_{name} {help}");
            let _ = writeln!(out, "# TYPE aloft_metrics_scrape_{name} gauge");
            for (labels, outcome) in &scraped {
                let pairs: Vec<String> = labels
                    .pairs()
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", exposition::escape(v)))
                    .collect();
                let _ = writeln!(
                    out,
                    "aloft_metrics_scrape_{name}{{{}}} {}",
                    pairs.join(","),
                    value(outcome)
                );
            }
        }
        let dropped = exposition::merge_into(
            out,
            scraped
                .iter()
                .map(|(l, o)| (l.machine.as_str(), o.metrics.as_slice())),
            &reserved,
        );
        for d in dropped {
            tracing::debug!(machine = %d.machine, family = %d.family, "metric family left out of /v1/metrics: {}", d.why);
        }
    }
}
