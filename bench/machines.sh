#!/usr/bin/env bash
# Machines API benchmark: create→started latency (p50/p99 over N machines running `sleep`),
# agent RSS with TOTAL machines, `GET …/machines` latency at TOTAL, and, when a Docker engine is
# reachable, `docker run -d` of a tiny FROM-scratch busybox image for comparison (as a ratio).
# Container machines (root, with buildah and runc): create→started p50/p99 of a container machine
# from a cached image (an image built and pushed once, FROM scratch + static busybox, the same
# busybox Docker runs below), and the time and bytes of a redeploy that changes one small layer of
# a 100 MB image. Prints figures; asserts nothing. Figures move with host load (check `uptime`).
#
# Usage: bench/machines.sh [N=200] [TOTAL=1000]
#   CTR_N=50         container machines timed (0: skip the container figures)
#   DOCKER_N=50      containers timed for the Docker comparison
#   BENCH_DOCKER=    unset: compare with Docker when a `docker` CLI exists (as root, a private
#                      `dockerd` is started, with a temp data-root and no bridge/iptables changes,
#                      if none is reachable, and stopped at exit);
#                    0: skip the comparison;
#                    1: as unset, but as root also `apt-get install docker.io` when it is missing.
# The image is FROM scratch: a static busybox (from PATH, else extracted from Debian's
# busybox-static .deb via `apt-get download`, installing nothing) imported with `docker import`,
# so no registry is needed. Containers run with `--network none` (aloft machines get no network
# namespace either); timed are `docker run -d` (returns once the container is started) and, when
# the engine is on a unix socket, the bare Engine API create+start, so client start-up is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200}"
TOTAL="${2:-1000}"
DOCKER_N="${DOCKER_N:-50}"
CTR_N="${CTR_N:-50}"
BRIDGE="albench$$"
BRIDGE="${BRIDGE:0:15}"
BENCH_DOCKER="${BENCH_DOCKER:-}"

echo "== build (release)"
cargo build --release -p aloft 2>"${TMPDIR:-/tmp}/aloft-bench-build.log" || { cat "${TMPDIR:-/tmp}/aloft-bench-build.log"; exit 1; }
BIN="$PWD/target/release/aloft"

WORK="$(mktemp -d)"
AGENT_PID=""
RUN_ID="aloft-bench-$$"         # label on every container we start; the image tag
DOCKER_IMAGE=""                 # set once our image is imported
DOCKERD_PID=""                  # set if we started a private dockerd
DOCKERD_DIR=""
cleanup() {
  set +e  # best effort: one failing step must not skip the rest
  if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    kill -TERM "$AGENT_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
  fi
  if [[ -n "$DOCKER_IMAGE" ]]; then
    local ids
    ids="$(timeout 60 docker ps -aq --filter "label=$RUN_ID" 2>/dev/null || true)"
    # shellcheck disable=SC2086
    [[ -z "$ids" ]] || timeout 300 docker rm -f $ids >/dev/null 2>&1 || true
    timeout 60 docker rmi -f "$DOCKER_IMAGE" >/dev/null 2>&1 || true
  fi
  if [[ -n "$DOCKERD_PID" ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    # dockerd's own containerd (its child) outlives it by a moment: wait for both by pid
    local pids p
    pids="$DOCKERD_PID $(pgrep -P "$DOCKERD_PID" 2>/dev/null | tr '\n' ' ')"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for p in $pids; do
      for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null || true
    done
  fi
  if [[ -n "$DOCKERD_DIR" ]]; then
    # overlay mounts of an interrupted dockerd would make rm -rf fail; lazily unmount what is left
    grep -o " $DOCKERD_DIR/[^ ]*" /proc/self/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    for _ in 1 2 3 4 5; do rm -rf "$DOCKERD_DIR" 2>/dev/null && break; sleep 1; done
    [[ ! -e "$DOCKERD_DIR" ]] || echo "note: could not remove $DOCKERD_DIR" >&2
  fi
  # the container machines' bridge and NAT rules (made by the agent on the first container)
  if [[ -e "/sys/class/net/$BRIDGE" ]]; then ip link del "$BRIDGE" 2>/dev/null || true; fi
  for table in nat filter; do
    iptables -t "$table" -S 2>/dev/null | grep -F "aloft:$BRIDGE" | sed 's/^-A //' | while read -r rule; do
      eval "iptables -t $table -D $rule" 2>/dev/null || true
    done
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/image" "$WORK/data"
"$BIN" agent --listen 127.0.0.1:0 --data-dir "$WORK/data" --bridge "$BRIDGE" --subnet 100.127.0.0/22 \
  --port-map 80=0 --port-map 443=0 --proxy-bind 127.0.0.1 2>"$WORK/agent.log" &
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
t0 = time.perf_counter()
raw("GET", "/v1/apps/bench/machines")
cold = (time.perf_counter() - t0) * 1000
# 100 machines change (metadata): their cached list entries are rebuilt by the next list
ids = [m["id"] for m in call("GET", "/v1/apps/bench/machines?summary=true")]
for mid in ids[:100]:
    call("POST", f"/v1/apps/bench/machines/{mid}/metadata/touched", {"value": "yes"})
t0 = time.perf_counter()
raw("GET", "/v1/apps/bench/machines")
partial = (time.perf_counter() - t0) * 1000
list_lat = []
for _ in range(50):
    t0 = time.perf_counter()
    body = raw("GET", "/v1/apps/bench/machines")
    list_lat.append((time.perf_counter() - t0) * 1000)
assert len(json.loads(body)) == total
print(f"GET /machines with {total}: p50={pct(list_lat,50):.2f} ms  p99={pct(list_lat,99):.2f} ms  ({len(body)//1024} KiB, time to last byte, JSON decoding not included)")
print(f"  first GET after the creates (every list entry built from SQLite): {cold:.2f} ms; after 100 machines changed: {partial:.2f} ms")
sum_lat = []
for _ in range(50):
    t0 = time.perf_counter()
    raw("GET", "/v1/apps/bench/machines?summary=true")
    sum_lat.append((time.perf_counter() - t0) * 1000)
print(f"GET /machines?summary=true with {total}: p50={pct(sum_lat,50):.2f} ms  p99={pct(sum_lat,99):.2f} ms")
open(f"{work}/aloft-lat", "w").write(f"{pct(lat,50)} {pct(lat,99)}")
t0 = time.perf_counter()
call("DELETE", "/v1/apps/bench?force=true", timeout=600)
print(f"delete app with {total} machines (force): {time.perf_counter() - t0:.2f} s")
PY


# ---- Docker comparison ------------------------------------------------------------------------
# Each step either succeeds or prints why the comparison is skipped; a failure here never fails the run.
docker_skip() { echo "skipped: $*"; }

# A statically linked busybox: from PATH, else extracted from Debian's busybox-static .deb (nothing installed).
static_busybox() {
  local bb
  bb="$(command -v busybox || true)"
  if [[ -n "$bb" ]] && { file -L "$bb" 2>/dev/null | grep -q 'statically linked' \
                         || LC_ALL=C ldd "$bb" 2>&1 | grep -qE 'not a dynamic|statically linked'; }; then
    echo "$bb"; return 0
  fi
  command -v apt-get >/dev/null 2>&1 || return 1
  mkdir -p "$WORK/deb"
  (cd "$WORK/deb" && apt-get download busybox-static >/dev/null 2>&1) || return 1
  dpkg-deb -x "$WORK"/deb/busybox-static_*.deb "$WORK/deb/root" 2>/dev/null || return 1
  [[ -x "$WORK/deb/root/bin/busybox" ]] && echo "$WORK/deb/root/bin/busybox"
}

# Makes `docker` talk to an engine: the configured one if reachable, else (as root) a private dockerd.
docker_engine() {
  if ! command -v docker >/dev/null 2>&1; then
    if [[ "$BENCH_DOCKER" == 1 && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "installing Debian docker.io (BENCH_DOCKER=1) ..."
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io \
        >"$WORK/apt.log" 2>&1 || { tail -5 "$WORK/apt.log"; docker_skip "apt-get install docker.io failed"; return 1; }
    else
      docker_skip "no docker CLI on this host (to include it: as root, BENCH_DOCKER=1 $0 installs Debian's docker.io)"
      return 1
    fi
  fi
  if timeout 20 docker info >/dev/null 2>&1; then
    echo "engine: $(docker version -f '{{.Server.Version}}' 2>/dev/null) (already running)"; return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v dockerd >/dev/null 2>&1; then
    docker_skip "docker CLI present but no reachable Docker engine (and not root with dockerd to start one)"
    return 1
  fi
  # Private daemon: own data/exec roots and socket; no bridge, iptables or ip_forward changes on the host.
  DOCKERD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/aloft-bench-dockerd.XXXXXX")"
  echo '{}' >"$DOCKERD_DIR/daemon.json"
  setsid dockerd --config-file "$DOCKERD_DIR/daemon.json" --data-root "$DOCKERD_DIR/root" \
    --exec-root "$DOCKERD_DIR/exec" --pidfile "$DOCKERD_DIR/dockerd.pid" -H "unix://$DOCKERD_DIR/docker.sock" \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false >"$DOCKERD_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$DOCKERD_DIR/docker.sock"
  for _ in $(seq 120); do
    timeout 5 docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.25
  done
  if ! timeout 5 docker info >/dev/null 2>&1; then
    tail -5 "$DOCKERD_DIR/dockerd.log"; docker_skip "could not start dockerd"; return 1
  fi
  echo "engine: $(docker version -f '{{.Server.Version}}' 2>/dev/null) (private dockerd started for this run, stopped at exit)"
}

docker_bench() {
  [[ "$BENCH_DOCKER" != 0 ]] || { docker_skip "BENCH_DOCKER=0"; return 0; }
  docker_engine || return 0
  local bb
  bb="$(static_busybox)" || { docker_skip "needs a static busybox (busybox-static) to build a FROM scratch image offline"; return 0; }
  mkdir -p "$WORK/docker" && cp "$bb" "$WORK/docker/busybox"
  # FROM scratch + COPY busybox + ENTRYPOINT, without needing a builder
  DOCKER_IMAGE="$RUN_ID:latest"
  tar -C "$WORK/docker" -c busybox | docker import -c 'ENTRYPOINT ["/busybox"]' - "$DOCKER_IMAGE" >/dev/null \
    || { docker_skip "docker import failed"; return 0; }
  echo "image: FROM scratch + static busybox ($(( $(stat -c %s "$WORK/docker/busybox") / 1024 )) KiB); timing $DOCKER_N containers each way"
  python3 - "$WORK" "$DOCKER_N" "$DOCKER_IMAGE" "$RUN_ID" "${DOCKER_HOST:-}" <<'PY' || docker_skip "docker timing failed"
import http.client, json, os, socket, subprocess, sys, time
work, n, image, label, host = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def rm_all():
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=600)

def running():
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label={label}", "--filter", "status=running"],
                         capture_output=True, text=True).stdout.split()
    return len(out)

a50, a99 = map(float, open(f"{work}/aloft-lat").read().split())
ctr = open(f"{work}/aloft-ctr-lat").read().split() if os.path.exists(f"{work}/aloft-ctr-lat") else None

def report(what, lat):
    d50, d99 = pct(lat, 50), pct(lat, 99)
    print(f"{what}  n={len(lat)}  p50={d50:.2f} ms  p99={d99:.2f} ms  ({running()} running)")
    print(f"  ratio aloft process/docker: p50={a50 / d50:.3f}  p99={a99 / d99:.3f}   (docker/aloft: p50={d50 / a50:.1f}x  p99={d99 / a99:.1f}x)")
    if ctr:
        c50, c99 = map(float, ctr)
        print(f"  ratio aloft container/docker: p50={c50 / d50:.3f}  p99={c99 / d99:.3f}   (docker/aloft: p50={d50 / c50:.1f}x  p99={d99 / c99:.1f}x)")

# 1. `docker run -d` as a user would type it (CLI start-up and API round trips included)
lat = []
for i in range(n):
    t0 = time.perf_counter()
    out = subprocess.run(["docker", "run", "-d", "--network", "none", "--label", label, image, "sleep", "100000"],
                         capture_output=True, text=True, timeout=120)
    lat.append((time.perf_counter() - t0) * 1000)
    if out.returncode != 0:
        sys.exit(f"docker run failed: {out.stderr.strip()}")
report("docker run -d    ", lat)
rm_all()

# 2. Engine API create+start from Python, the same footing as the aloft figure (HTTP from Python)
sock = host[len("unix://"):] if host.startswith("unix://") else ("/var/run/docker.sock" if not host else "")
if not sock or not os.path.exists(sock):
    print("Engine API timing skipped: engine not on a local unix socket")
    sys.exit(0)

class UnixConn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sock)

def api(method, path, body=None):
    c = UnixConn("localhost", timeout=120)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else None

spec = {"Image": image, "Cmd": ["sleep", "100000"], "Labels": {label: ""}, "HostConfig": {"NetworkMode": "none"}}
lat = []
for i in range(n):
    t0 = time.perf_counter()
    cid = api("POST", "/containers/create", spec)["Id"]
    api("POST", f"/containers/{cid}/start")   # returns once the task is started
    lat.append((time.perf_counter() - t0) * 1000)
report("Engine API create+start", lat)
rm_all()
PY
}

# ---- Container machines -----------------------------------------------------------------------
container_bench() {
  [[ "$CTR_N" != 0 ]] || { echo "skipped: CTR_N=0"; return 0; }
  [[ "$(id -u)" == 0 ]] || { echo "skipped: container machines need root"; return 0; }
  for tool in buildah runc tini-static; do
    command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed (scripts/install-test-deps.sh)"; return 0; }
  done
  local bb app store
  bb="$(static_busybox)" || { echo "skipped: needs a static busybox (busybox-static)"; return 0; }
  app="$WORK/ctr-app"; store="$WORK/ctr-store"
  mkdir -p "$app" "$store"
  cp "$bb" "$app/busybox"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' "$store" "$store" >"$WORK/storage.conf"
  export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
  export ALOFT_API_URL="http://$(cat "$WORK/data/agent.addr")" ALOFT_API_TOKEN="$(cat "$WORK/data/token")"
  cat >"$app/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /busybox
COPY big /big
COPY version /version
ENTRYPOINT ["/busybox"]
CMD ["sleep", "100000"]
DOCKERFILE
  head -c 100000000 /dev/urandom >"$app/big"
  echo 1 >"$app/version"
  printf 'app = "ctrbench"\nprimary_region = "gru"\n' >"$app/fly.toml"
  "$BIN" apps create ctrbench >/dev/null
  local t0 t1 before after
  stats() { curl -sf -H "Authorization: Bearer $ALOFT_API_TOKEN" "$ALOFT_API_URL/v1/images/stats" \
    | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["blobs_received"], s["bytes_received"])'; }
  before="$(stats)"
  t0=$(date +%s.%N)
  (cd "$app" && "$BIN" deploy -c fly.toml >"$WORK/ctr-deploy1.log" 2>&1) || { tail -20 "$WORK/ctr-deploy1.log"; echo "skipped: the first deploy failed"; return 0; }
  t1=$(date +%s.%N); after="$(stats)"
  python3 - "$before" "$after" "$t0" "$t1" <<'PY'
import sys
b, a = [list(map(int, x.split())) for x in sys.argv[1:3]]
print(f"first deploy of a 100 MB image: {float(sys.argv[4]) - float(sys.argv[3]):.2f} s, {a[0]-b[0]} blobs, {(a[1]-b[1])/1e6:.1f} MB sent (build included)")
PY
  echo 2 >"$app/version"
  before="$after"
  t0=$(date +%s.%N)
  (cd "$app" && "$BIN" deploy -c fly.toml >"$WORK/ctr-deploy2.log" 2>&1) || { tail -20 "$WORK/ctr-deploy2.log"; echo "skipped: the redeploy failed"; return 0; }
  t1=$(date +%s.%N); after="$(stats)"
  python3 - "$before" "$after" "$t0" "$t1" <<'PY'
import sys
b, a = [list(map(int, x.split())) for x in sys.argv[1:3]]
print(f"redeploy changing one layer: {float(sys.argv[4]) - float(sys.argv[3]):.2f} s, {a[0]-b[0]} blobs, {(a[1]-b[1])/1e3:.1f} KB sent (build, push, rolling update of 1 machine)")
PY
  python3 - "$WORK" "$CTR_N" <<'PY'
import json, sys, time, urllib.request
work, n = sys.argv[1], int(sys.argv[2])
addr = open(f"{work}/data/agent.addr").read().strip()
token = open(f"{work}/data/token").read().strip()
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        text = r.read()
    return json.loads(text) if text else None
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
image = call("GET", "/v1/apps/ctrbench/machines")[0]["config"]["image"]
config = {"image": image, "init": {"exec": ["/busybox", "sleep", "100000"]}, "restart": {"policy": "no"}}
lat = []
for i in range(n):
    t0 = time.perf_counter()
    m = call("POST", "/v1/apps/ctrbench/machines", {"config": config})
    call("GET", f"/v1/apps/ctrbench/machines/{m['id']}/wait?state=started&timeout=60")
    lat.append((time.perf_counter() - t0) * 1000)
print(f"container create->started  n={n}  p50={pct(lat,50):.2f} ms  p99={pct(lat,99):.2f} ms  (cached image; its own network namespace and address each; HTTP round trips from Python included)")
open(f"{work}/aloft-ctr-lat", "w").write(f"{pct(lat,50)} {pct(lat,99)}")
t0 = time.perf_counter()
call("DELETE", "/v1/apps/ctrbench?force=true")
print(f"delete app with {n + 1} container machines (force): {time.perf_counter() - t0:.2f} s")
PY
}

echo "== container machines (CTR_N=$CTR_N); load: $(cut -d" " -f1-3 /proc/loadavg)"
container_bench

echo "== docker comparison (vs aloft create->started above); load: $(cut -d" " -f1-3 /proc/loadavg)"
docker_bench
