#!/usr/bin/env bash
# Process runtime figures (no agent, no HTTP): launch latency over 200 `sleep` machines, agent
# RSS with 1000 supervised machines, stop latency. Prints figures; never fails on a threshold.
# Usage: bench/runtime.sh [N] [M]    BENCH_CGROUPS=1 bench/runtime.sh  (root: cgroup limits on)
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo run -q --release -p aloft-runtime --example bench -- "${1:-200}" "${2:-1000}"
