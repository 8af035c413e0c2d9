#!/usr/bin/env bash
# Part 4 of bench/deploy.sh (see there): a blue-green redeploy of 3 groups x 20 machines under
# load through the proxy, and the release command round trip. Prints figures; asserts nothing.
# Usage: bench/deploy_bluegreen.sh ALOFT_BINARY
set -euo pipefail
BIN="$1"
WORK="$(mktemp -d)"
AGENT_PID=""
LOAD_PID=""
cleanup() {
  [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null || true
  if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    "$BIN" apps destroy bench-bg --yes >/dev/null 2>&1 || true
    "$BIN" apps destroy bench-rc --yes >/dev/null 2>&1 || true
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/app" "$WORK/rc" "$WORK/data"
mkdir -p "$WORK/app/www" && echo ok >"$WORK/app/www/index.html"
write_config() { # $1 = label, changes every machine's command
  cat >"$WORK/app/fly.toml" <<TOML
app = "bench-bg"
primary_region = "gru"
[processes]
web = "sh -c 'exec busybox httpd -f -p \$PORT -h www' $1"
api = "sh -c 'exec busybox httpd -f -p \$PORT -h www' $1"
admin = "sh -c 'exec busybox httpd -f -p \$PORT -h www' $1"
[http_service]
internal_port = 8080
processes = ["web", "api", "admin"]
[http_service.concurrency]
type = "requests"
[[http_service.checks]]
grace_period = "0s"
interval = "500ms"
timeout = "1s"
method = "GET"
path = "/"
[deploy]
strategy = "immediate"
TOML
}

"$BIN" agent --listen 127.0.0.1:0 --proxy-bind 127.0.0.1 --port-map 80=0 --port-map 443=0 \
  --data-dir "$WORK/data" 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 300); do [[ -s "$WORK/data/agent.addr" ]] && break; sleep 0.05; done
[[ -s "$WORK/data/agent.addr" ]] || { echo "agent did not start:"; cat "$WORK/agent.log"; exit 1; }
export ALOFT_API_URL="http://$(cat "$WORK/data/agent.addr")"
export ALOFT_API_TOKEN="$(cat "$WORK/data/token")"
auth=(-H "Authorization: Bearer $ALOFT_API_TOKEN")

echo "== blue-green, 3 groups x 20 machines, under load through the proxy; load: $(cut -d" " -f1-3 /proc/loadavg) on $(nproc) cores"
"$BIN" apps create bench-bg >/dev/null
for g in web api admin; do
  curl -sf -o /dev/null -X PUT "${auth[@]}" -H "content-type: application/json" \
    -d '{"count": 20}' "$ALOFT_API_URL/v1/apps/bench-bg/process_groups/$g/count"
done
write_config v1
"$BIN" deploy -c "$WORK/app/fly.toml" --yes >"$WORK/deploy1.log" 2>&1 || { tail -20 "$WORK/deploy1.log"; exit 1; }
healthy() { "$BIN" machine list -a bench-bg --json | python3 -c '
import json,sys
ms=json.load(sys.stdin)
print(sum(m["state"]=="started" and bool(m.get("checks")) and all(c["status"]=="passing" for c in m["checks"]) for m in ms))'; }
for _ in $(seq 600); do [[ "$(healthy)" -ge 60 ]] && break; sleep 0.1; done
echo "blue: $(healthy) healthy machines"
LISTEN=$(curl -sf "${auth[@]}" "$ALOFT_API_URL/v1/proxy" | python3 -c 'import json,sys; print(next(p["listen"] for p in json.load(sys.stdin) if p["port"]==80))')

# The bounded client: one request after another (keep-alive off) until told to stop.
python3 - "$LISTEN" "$WORK/load.out" "$WORK/load.stop" <<'PY' &
import http.client, os, sys
host, port = sys.argv[1].rsplit(":", 1)
ok = failed = 0
while not os.path.exists(sys.argv[3]):
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse(); r.read(); c.close()
        if r.status == 200: ok += 1
        else: failed += 1
    except Exception:
        failed += 1
open(sys.argv[2], "w").write(f"{ok} {failed}\n")
PY
LOAD_PID=$!
sleep 1

write_config v2
sed -i 's/^strategy = "immediate"/strategy = "bluegreen"/' "$WORK/app/fly.toml"
t0=$(date +%s.%N)
"$BIN" deploy -c "$WORK/app/fly.toml" --yes >"$WORK/deploy2.log" 2>&1 || { tail -30 "$WORK/deploy2.log"; exit 1; }
t1=$(date +%s.%N)
sleep 1
touch "$WORK/load.stop"; wait "$LOAD_PID"; LOAD_PID=""
read -r ok failed <"$WORK/load.out"
curl -sf "${auth[@]}" "$ALOFT_API_URL/v1/apps/bench-bg/releases/2/events" >"$WORK/events2.ndjson"
python3 - "$WORK/events2.ndjson" <<'PY'
import json, sys, datetime
ev = [json.loads(l) for l in open(sys.argv[1])]
def at(ty):
    return next(datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in ev if e["event"]["type"] == ty)
start = at("started")
healthy, switched = at("greens_healthy"), at("traffic_switched")
last = max(datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00")) for e in ev if e["event"]["type"] == "blue_destroyed")
ms = lambda a, b: (b - a).total_seconds() * 1000
print(f"greens created and healthy: {ms(start, healthy):.0f} ms; switch (greens healthy -> traffic switched, incl. 2 s drain): {ms(healthy, switched):.0f} ms; blues destroyed after: {ms(switched, last):.0f} ms")
PY
echo "bluegreen redeploy of 60 machines: $(python3 -c "print(f'{$t1-$t0:.2f}')") s; requests under load: $ok answered, $failed failed (target 0)"

echo "== release command round trip (process runtime)"
cat >"$WORK/rc/fly.toml" <<'TOML'
app = "bench-rc"
primary_region = "gru"
[processes]
app = "sleep 3600"
[deploy]
strategy = "immediate"
release_command = "true"
TOML
"$BIN" apps create bench-rc >/dev/null
for v in 1 2 3 4 5; do
  sed -i "s/^app = \"sleep .*/app = \"sleep 360$v\"/" "$WORK/rc/fly.toml"
  "$BIN" deploy -c "$WORK/rc/fly.toml" --yes >"$WORK/rc$v.log" 2>&1 || { tail -20 "$WORK/rc$v.log"; exit 1; }
  curl -sf "${auth[@]}" "$ALOFT_API_URL/v1/apps/bench-rc/releases/$v/events"
done >"$WORK/rc-events.ndjson"
python3 - "$WORK/rc-events.ndjson" <<'PY'
import json, sys, datetime
ev = [json.loads(l) for l in open(sys.argv[1])]
t = lambda e: datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
runs, start = [], None
for e in ev:
    ty = e["event"]["type"]
    if ty == "started": start = t(e)
    if ty == "release_command_finished": runs.append((t(e) - start).total_seconds() * 1000)
runs.sort()
print(f"release_command `true`, release start -> outcome recorded (create, run, output, destroy), {len(runs)} deploys: median {runs[len(runs)//2]:.0f} ms, min {runs[0]:.0f} ms, max {runs[-1]:.0f} ms")
PY
