#!/usr/bin/env bash
# Machines API benchmark: create→started latency (p50/p99 over N machines running `sleep`),
# agent RSS with TOTAL machines, `GET …/machines` latency at TOTAL, and, when a Docker engine is
# reachable, `docker run -d` of a tiny FROM-scratch busybox image for comparison (as a ratio).
# Prints figures; asserts nothing. Figures move with host load (check `uptime`). Usage: bench/machines.sh [N=200] [TOTAL=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
TOTAL="${2:-1000}"

echo "== build (release)"
cargo build --release -p aloft 2>"${TMPDIR:-/tmp}/aloft-bench-build.log" || { cat "${TMPDIR:-/tmp}/aloft-bench-build.log"; exit 1; }
BIN="$PWD/target/release/aloft"

WORK="$(mktemp -d)"
AGENT_PID=""
cleanup() {
  if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/image" "$WORK/data"
"$BIN" agent --listen 127.0.0.1:0 --data-dir "$WORK/data" 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 300); do [[ -s "$WORK/data/agent.addr" ]] && break; sleep 0.05; done
[[ -s "$WORK/data/agent.addr" ]] || { echo "agent did not start:"; cat "$WORK/agent.log"; exit 1; }

echo "== machines (N=$N timed, TOTAL=$TOTAL); load: $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) cores"
python3 - "$WORK" "$AGENT_PID" "$N" "$TOTAL" <<'PY'
import json, os, statistics, subprocess, sys, time, urllib.request, urllib.error
work, agent_pid, n, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
addr = open(f"{work}/data/agent.addr").read().strip()
token = open(f"{work}/data/token").read().strip()
base = f"http://{addr}"

def raw(method, path, body=None, timeout=70):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()

def call(method, path, body=None, timeout=70):
    text = raw(method, path, body, timeout)
    return json.loads(text) if text else None

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")

call("POST", "/v1/apps", {"app_name": "bench", "org_slug": "personal"})
config = {"image": f"{work}/image", "init": {"exec": ["sleep", "3600"]}, "restart": {"policy": "no"}}
lat = []
for i in range(total):
    t0 = time.perf_counter()
    m = call("POST", "/v1/apps/bench/machines", {"config": config})
    call("GET", f"/v1/apps/bench/machines/{m['id']}/wait?state=started&timeout=60")
    if i < n:
        lat.append((time.perf_counter() - t0) * 1000)
print(f"create->started  n={n}  p50={pct(lat,50):.2f} ms  p99={pct(lat,99):.2f} ms  (HTTP round trips from Python included)")
print(f"agent RSS with {total} started machines: {rss_mb(agent_pid):.1f} MB")
list_lat = []
for _ in range(50):
    t0 = time.perf_counter()
    body = raw("GET", "/v1/apps/bench/machines")
    list_lat.append((time.perf_counter() - t0) * 1000)
assert len(json.loads(body)) == total
print(f"GET /machines with {total}: p50={pct(list_lat,50):.2f} ms  p99={pct(list_lat,99):.2f} ms  ({len(body)//1024} KiB, time to last byte, JSON decoding not included)")
sum_lat = []
for _ in range(50):
    t0 = time.perf_counter()
    raw("GET", "/v1/apps/bench/machines?summary=true")
    sum_lat.append((time.perf_counter() - t0) * 1000)
print(f"GET /machines?summary=true with {total}: p50={pct(sum_lat,50):.2f} ms  p99={pct(sum_lat,99):.2f} ms")
open(f"{work}/p50", "w").write(f"{pct(lat,50)}")
t0 = time.perf_counter()
call("DELETE", "/v1/apps/bench?force=true", timeout=600)
print(f"delete app with {total} machines (force): {time.perf_counter() - t0:.2f} s")
PY

echo "== docker comparison"
if ! command -v docker >/dev/null 2>&1; then
  echo "skipped: no docker CLI on this host"
elif ! docker info >/dev/null 2>&1; then
  echo "skipped: docker CLI present but no reachable Docker engine"
else
  BB="$(command -v busybox || true)"
  if [[ -z "$BB" ]] || ! file -L "$BB" 2>/dev/null | grep -q static; then
    echo "skipped: needs a static busybox (apt-get install busybox-static) to build a FROM scratch image offline"
  else
    mkdir -p "$WORK/docker" && cp "$BB" "$WORK/docker/busybox"
    printf 'FROM scratch\nCOPY busybox /busybox\nENTRYPOINT ["/busybox"]\n' > "$WORK/docker/Dockerfile"
    docker build -q -t aloft-bench-busybox "$WORK/docker" >/dev/null
    python3 - "$WORK" <<'PY'
import subprocess, sys, time
work = sys.argv[1]
lat, ids = [], []
for _ in range(20):
    t0 = time.perf_counter()
    out = subprocess.run(["docker", "run", "-d", "aloft-bench-busybox", "sleep", "3600"], capture_output=True, text=True, timeout=60)
    lat.append((time.perf_counter() - t0) * 1000)
    ids.append(out.stdout.strip())
subprocess.run(["docker", "rm", "-f", *[i for i in ids if i]], capture_output=True, timeout=120)
lat.sort()
p50 = lat[len(lat) // 2]
ours = float(open(f"{work}/p50").read())
print(f"docker run -d p50={p50:.1f} ms; aloft create->started p50={ours:.2f} ms; ratio docker/aloft = {p50 / ours:.1f}x")
PY
  fi
fi
