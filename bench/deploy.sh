#!/usr/bin/env bash
# Deploy/scale orchestration figures. Prints figures; asserts nothing (targets: < 2 s for the
# first deploy, < 3 s for the scale, on a 2-core machine; figures move with host load).
#  1. engine only (in-memory platform): planning + orchestration of a first deploy reaching
#     50 + 20 + 5 machines, and of `scale count web=200`;
#  2. end to end against a real agent: `aloft deploy` of a 3-group app (web=50, worker=20,
#     cron=5 remembered counts) until every machine is started, then `aloft scale count web=200`.
#     Part 2 needs the agent's release routes (aloft_deploy::wire); it says so and stops if absent.
#     The counts are remembered first (PUT …/process_groups/{group}/count, what `scale count`
#     writes), so the first deploy itself creates all 75 machines.
#  3. peer lower bound: the same numbers of plain `sleep` processes started by a shell loop
#     (no supervision, no state); the ratio says what orchestration costs on top.
#  4. blue-green (`bench/deploy.sh bluegreen` runs only this part): an agent *with its proxy*,
#     3 groups x 20 machines (busybox httpd, one health check each) behind one HTTP service;
#     a bounded client hits the service through the proxy during a `--strategy bluegreen`
#     redeploy: time to switch (greens healthy -> traffic switched, from the release's event
#     times), the whole deploy, and failed requests (target 0). Then the release command round
#     trip: a deploy whose release_command is `true` (target: < 100 ms from the release's start
#     to the command's recorded outcome beyond the command's own run time).
# ALOFT_BIN=path uses that aloft binary instead of building a release one.
# Usage: bench/deploy.sh [bluegreen]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PART="${1:-all}"
if [[ -n "${ALOFT_BIN:-}" ]]; then
  BIN="$ALOFT_BIN"
else
  if [[ "$PART" == all ]]; then
    echo "== engine only"
    cargo run -q --release -p aloft-deploy --example engine_bench
  fi
  echo "== build (release)"
  cargo build --release -p aloft 2>"${TMPDIR:-/tmp}/aloft-bench-build.log" || { cat "${TMPDIR:-/tmp}/aloft-bench-build.log"; exit 1; }
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/aloft"
fi
[[ "$PART" == bluegreen ]] && exec "$(dirname "$0")/deploy_bluegreen.sh" "$BIN"

WORK="$(mktemp -d)"
AGENT_PID=""
cleanup() {
  if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    "$BIN" apps destroy bench-deploy --yes >/dev/null 2>&1 || true
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/app" "$WORK/data"
cat >"$WORK/app/fly.toml" <<'TOML'
app = "bench-deploy"
primary_region = "gru"
[processes]
web = "sleep 3600"
worker = "sleep 3600"
cron = "sleep 3600"
[deploy]
strategy = "immediate"
TOML

"$BIN" agent --no-proxy --listen 127.0.0.1:0 --data-dir "$WORK/data" 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 300); do [[ -s "$WORK/data/agent.addr" ]] && break; sleep 0.05; done
[[ -s "$WORK/data/agent.addr" ]] || { echo "agent did not start:"; cat "$WORK/agent.log"; exit 1; }
export ALOFT_API_URL="http://$(cat "$WORK/data/agent.addr")"
export ALOFT_API_TOKEN="$(cat "$WORK/data/token")"
auth=(-H "Authorization: Bearer $ALOFT_API_TOKEN" -H "content-type: application/json")

echo "== end to end (agent at $ALOFT_API_URL); load: $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) cores"
"$BIN" apps create bench-deploy >/dev/null
for g in web:50 worker:20 cron:5; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "${auth[@]}" \
    -d "{\"count\": ${g#*:}}" "$ALOFT_API_URL/v1/apps/bench-deploy/process_groups/${g%%:*}/count")
  if [[ "$code" != 200 ]]; then
    echo "skipped: the agent does not serve PUT /v1/apps/{app}/process_groups/{group}/count yet (HTTP $code)"
    exit 0
  fi
done

started() { "$BIN" machine list -a bench-deploy --json | python3 -c 'import json,sys; print(sum(m["state"]=="started" for m in json.load(sys.stdin)))'; }
wait_started() {
  for _ in $(seq 6000); do [[ "$(started)" -ge "$1" ]] && return 0; sleep 0.01; done
  echo "timed out waiting for $1 started machines"; return 1
}

t0=$(date +%s.%N)
"$BIN" deploy -c "$WORK/app/fly.toml" --yes >"$WORK/deploy.log" 2>&1 || { tail -20 "$WORK/deploy.log"; exit 1; }
wait_started 75
t1=$(date +%s.%N)
deploy_s=$(python3 -c "print(f'{$t1-$t0:.2f}')")
echo "first deploy, 3 groups, 75 machines started: $deploy_s s"

t0=$(date +%s.%N)
"$BIN" scale count web=200 -a bench-deploy --yes >"$WORK/scale.log" 2>&1 || { tail -20 "$WORK/scale.log"; exit 1; }
wait_started 225
t1=$(date +%s.%N)
scale_s=$(python3 -c "print(f'{$t1-$t0:.2f}')")
echo "scale count web=200 (150 new machines started): $scale_s s"

# A rolling redeploy of all 225 machines (default strategy: batches of a third of each group,
# each waited on; the first machines of each group watched SMOKE_WINDOW = 3 s for a crash loop).
sed -i 's/^strategy = "immediate"/strategy = "rolling"/; s/^web = "sleep 3600"/web = "sleep 3601"/' "$WORK/app/fly.toml"
t0=$(date +%s.%N)
"$BIN" deploy -c "$WORK/app/fly.toml" --yes >"$WORK/rolling.log" 2>&1 || { tail -20 "$WORK/rolling.log"; exit 1; }
t1=$(date +%s.%N)
rolling_s=$(python3 -c "print(f'{$t1-$t0:.2f}')")
echo "rolling redeploy of 225 machines (3 groups, smoke checks on): $rolling_s s (of which 3 s smoke window)"

# Peer: N plain processes from a shell loop, each confirmed alive (the lower bound).
peer() {
  local n=$1 pids=() t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq "$n"); do sleep 3600 & pids+=($!); done
  for p in "${pids[@]}"; do kill -0 "$p"; done
  t1=$(date +%s.%N)
  kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
  python3 -c "print(f'{$t1-$t0:.3f}')"
}
p75=$(peer 75); p150=$(peer 150)
echo "peer: shell loop starting 75 sleeps: $p75 s (deploy is $(python3 -c "print(f'{$deploy_s/max($p75,0.001):.0f}')")x); 150 sleeps: $p150 s (scale is $(python3 -c "print(f'{$scale_s/max($p150,0.001):.0f}')")x)"
"$(dirname "$0")/deploy_bluegreen.sh" "$BIN"
