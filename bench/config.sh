#!/usr/bin/env bash
# Parse + validate + flatten time of a ~200-line fly.toml with 10 process groups.
# Prints mean/p50/p99 per iteration, and the same figures for Python's tomllib parsing the
# same file (a parse-only lower bound from a C-accelerated-free, widely used peer).
# Target: well under 5 ms per iteration.
set -euo pipefail
cd "$(dirname "$0")/.."
ITER="${ITER:-2000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
f="$work/fly.toml"

{
  echo "app = 'bench'"
  echo "primary_region = 'ams'"
  echo "kill_signal = 'SIGTERM'"
  echo "kill_timeout = '30s'"
  echo
  echo "[env]"
  for i in $(seq 1 10); do echo "  VAR_$i = 'value-$i'"; done
  echo
  echo "[processes]"
  for i in $(seq 0 9); do echo "  g$i = \"bin/run --group g$i --threads $i\""; done
  echo
  echo "[http_service]"
  echo "  internal_port = 8080"
  echo "  force_https = true"
  echo "  auto_stop_machines = 'stop'"
  echo "  processes = ['g0']"
  for i in $(seq 1 9); do
    cat <<EOT

[[services]]
  internal_port = $((9000 + i))
  protocol = "tcp"
  processes = ["g$i"]
  [services.concurrency]
    type = "connections"
    soft_limit = 20
    hard_limit = 25
  [[services.ports]]
    port = $((10000 + i))
    handlers = ["tls"]
  [[services.tcp_checks]]
    interval = "15s"
    timeout = 2000
EOT
  done
  for i in $(seq 0 4); do
    cat <<EOT

[[vm]]
  size = "shared-cpu-2x"
  memory = "1gb"
  processes = ["g$i"]

[[mounts]]
  source = "data$i"
  destination = "/data"
  initial_size = "10gb"
  processes = ["g$i"]
EOT
  done
  cat <<EOT

[checks.alive]
  type = "http"
  path = "/up"
  interval = "15s"
  timeout = "2s"
  processes = ["g0"]

[[restart]]
  policy = "always"
  processes = ["g1", "g2"]

[[metrics]]
  port = 9394
  path = "/metrics"
  processes = ["g0"]
EOT
} > "$f"

echo "file: $(wc -l < "$f") lines, 10 groups"
cargo build -q --release --example config_bench -p aloft-config
ours="$(target/release/examples/config_bench "$f" "$ITER")"
echo "aloft-config parse+validate+flatten: $ours"

if command -v python3 >/dev/null && python3 -c 'import tomllib' 2>/dev/null; then
  peer="$(python3 - "$f" "$ITER" <<'PY'
import sys, time, tomllib
path, n = sys.argv[1], int(sys.argv[2])
data = open(path, 'rb').read().decode()
for _ in range(n // 10): tomllib.loads(data)
s = []
for _ in range(n):
    t = time.perf_counter(); tomllib.loads(data); s.append((time.perf_counter() - t) * 1e6)
s.sort()
print(f"mean_us={sum(s)/len(s):.1f} p50_us={s[len(s)//2]:.1f} p99_us={s[min(len(s)-1, int(len(s)*0.99))]:.1f}")
PY
)"
  echo "python3 tomllib parse only (peer):   $peer"
  ours_mean="$(sed -E 's/.*mean_us=([0-9.]+).*/\1/' <<<"$ours")"
  peer_mean="$(sed -E 's/.*mean_us=([0-9.]+).*/\1/' <<<"$peer")"
  python3 -c "print(f'ratio aloft/tomllib (mean): {float($ours_mean)/float($peer_mean):.2f}x')"
else
  echo "python3 tomllib not available: peer comparison skipped"
fi
