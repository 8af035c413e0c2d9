//! Times parse + validate + flatten (every group) of one config file, many iterations; prints
//! mean, p50 and p99 per iteration in microseconds. Used by `bench/config.sh`.
//!
//! Usage: `config_bench <path> [iterations]`

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: config_bench <path> [iterations]");
    let iterations: usize = args
        .next()
        .map(|n| n.parse().expect("iterations"))
        .unwrap_or(2000);
    let src = std::fs::read_to_string(&path).expect("read config");
    let format = aloft_config::Format::from_path(std::path::Path::new(&path));

    let run = || {
        let loaded = aloft_config::parse_str(&src, format, &path);
        assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
        let groups = loaded.config.process_names();
        let configs: Vec<_> = groups
            .iter()
            .map(|g| loaded.config.machine_config_for(g))
            .collect();
        std::hint::black_box(configs);
        groups.len()
    };
    let groups = run();
    for _ in 0..iterations / 10 {
        run(); // warm-up
    }
    let mut samples: Vec<f64> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "lines={} groups={groups} iterations={iterations} mean_us={mean:.1} p50_us={:.1} p99_us={:.1}",
        src.lines().count(),
        pct(0.50),
        pct(0.99)
    );
}
