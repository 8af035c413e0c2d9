#!/usr/bin/env bash
# Proxy figures in one run on this machine: requests/s and p50/p99 latency for a small HTTP
# response (6 bytes) with wrk, direct to the app, through the aloft proxy, nginx and HAProxy
# (each: 2 worker threads, HTTP/1.1 keep-alive to the app, and the same headers aloft adds:
# X-Forwarded-For/-Proto/-Ssl/-Port, Fly-Client-IP, Fly-Forwarded-Port, Fly-Region, Via on the
# request; Fly-Request-Id, Via, Server on the response), at high load (64 connections) and
# moderate load (8 connections); "hosts" is the aloft proxy serving 50 apps on the port, routed
# by Host (next to the single-app figure: the cost of Host routing); then HTTPS next to nginx
# (ECDSA P-256 on both: keep-alive requests/s and new TLS handshakes/s); then autostart latency. "hyper" is the aloft proxy with its h1
# fast path off (ALOFT_H1_FAST_PATH=0), every request through hyper. "agent" is a running
# `aloft agent` (release build) with a deployed app whose one machine runs the same tiny server:
# what a user gets, the agent's API, store and supervisor included (its CPU is the agent process
# alone; the machine is its child and is not counted). Prints figures and ratios; never fails on
# a threshold.
# CPU time per request of each server (process + children, from /proc) is printed too: on a
# shared machine it is steadier than throughput, which swings with the neighbours' load.
# Each figure is the median of ROUNDS runs (default 3), targets interleaved, to damp the noise
# of a shared machine; the load average before the runs is printed with the figures.
# Usage: bench/proxy.sh [seconds per run, default 5] [rounds, default 3]
# SECTIONS picks what runs (default "http https autostart"), e.g. SECTIONS=https bench/proxy.sh.
# Needs wrk, nginx, haproxy (installed with apt-get when missing, as root). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
ROUNDS="${2:-3}"
SECTIONS=" ${SECTIONS:-http https autostart} "
section() { [[ "$SECTIONS" == *" $1 "* ]]; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if ((${#need[@]})); then
  echo "installing ${need[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# One build for both (separate builds unify features differently and rebuild each other's deps).
cargo build -q --release -p aloft -p aloft-proxy --bin aloft --example bench
BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples/bench"
ALOFT_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/aloft"
TMP="$(mktemp -d)"
PIDS=()
AGENT_PID=""
cleanup() {
  if [[ -n "$AGENT_PID" ]] && kill -0 "$AGENT_PID" 2>/dev/null; then
    # Destroying the app stops its machine; SIGTERM then lets the agent exit cleanly.
    "$ALOFT_BIN" apps destroy bench-proxy --yes >/dev/null 2>&1 || true
    kill -TERM "$AGENT_PID" 2>/dev/null || true
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  return 1
}

# Distinct free ports, chosen while all the sockets are held (separate calls could hand out
# the same port twice, and a peer would then silently measure another server).
read -r BACKEND ALOFT NGINX HAPROXY ALOFT_HYPER ALOFT_HOSTS ALOFT_TLS NGINX_TLS AGENT_TLS < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# The same key type on both sides of the HTTPS comparison: ECDSA P-256 (the agent's own
# self-signed certificate is P-256 too).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
# And the same protocol version: aloft offers TLS 1.3 and 1.2, nginx must too (Debian 12's nginx
# 1.22 offers at most TLS 1.2 by default, and a TLS 1.2 handshake costs both sides far less CPU
# than a TLS 1.3 one: comparing those measured the protocol, not the servers). wrk's OpenSSL
# then negotiates TLS 1.3 with both; for the TLS 1.2 row wrk offers at most TLS 1.2 (this
# OpenSSL config, WRK_CONF below).
printf '%s\n' 'openssl_conf = conf' '[conf]' 'ssl_conf = ssl' '[ssl]' 'system_default = tls12' \
  '[tls12]' 'MaxProtocol = TLSv1.2' >"$TMP/tls12.cnf"
WRK_CONF=""

"$BIN" backend "$BACKEND" >/dev/null & PIDS+=($!); BACKEND_PID=$!
"$BIN" proxy "$ALOFT" "$BACKEND" >/dev/null & PIDS+=($!); ALOFT_PID=$!
# The same proxy with its h1 fast path off (every request through hyper), for comparison.
ALOFT_H1_FAST_PATH=0 "$BIN" proxy "$ALOFT_HYPER" "$BACKEND" >/dev/null & PIDS+=($!); ALOFT_HYPER_PID=$!
# 50 apps sharing the port, routed by Host (requests name app37.localhost): the routing cost.
"$BIN" proxy "$ALOFT_HOSTS" "$BACKEND" 50 >/dev/null & PIDS+=($!); ALOFT_HOSTS_PID=$!
HOST_HEADER="Host: app37.localhost"
# HTTPS (tls + http handlers) with the P-256 certificate.
"$BIN" proxy-tls "$ALOFT_TLS" "$BACKEND" "$TMP/cert.pem" "$TMP/key.pem" >/dev/null & PIDS+=($!); ALOFT_TLS_PID=$!

mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx; fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  upstream app { server 127.0.0.1:$BACKEND; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Ssl off;
      proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header Fly-Client-IP \$remote_addr;
      proxy_set_header Fly-Forwarded-Port \$server_port;
      proxy_set_header Fly-Region local;
      proxy_set_header Via "1.1 nginx";
      add_header Fly-Request-Id \$request_id;
      add_header Via "1.1 nginx";
    }
  }
  server {
    listen 127.0.0.1:$NGINX_TLS ssl;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $TMP/cert.pem;
    ssl_certificate_key $TMP/key.pem;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Ssl on;
      proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header Fly-Client-IP \$remote_addr;
      proxy_set_header Fly-Forwarded-Port \$server_port;
      proxy_set_header Fly-Region local;
      proxy_set_header Via "1.1 nginx";
      add_header Fly-Request-Id \$request_id;
      add_header Via "1.1 nginx";
    }
  }
}
EOF
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" & PIDS+=($!); NGINX_PID=$!

cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend web
  bind 127.0.0.1:$HAPROXY
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Ssl off
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header Fly-Client-IP %[src]
  http-request set-header Fly-Forwarded-Port %[dst_port]
  http-request set-header Fly-Region local
  http-request add-header Via "1.1 haproxy"
  http-response set-header Fly-Request-Id %[uuid]
  http-response add-header Via "1.1 haproxy"
  http-response set-header Server haproxy if !{ res.hdr(server) -m found }
  default_backend app
backend app
  server app1 127.0.0.1:$BACKEND
EOF
haproxy -q -db -f "$TMP/haproxy.cfg" & PIDS+=($!); HAPROXY_PID=$!

# A running agent with a deployed app: its proxy's port 80 is mapped to $AGENT.
AGENT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$TMP/agent" "$TMP/app"
"$ALOFT_BIN" agent --listen 127.0.0.1:0 --data-dir "$TMP/agent" --proxy-bind 127.0.0.1 \
  --port-map "80=$AGENT" --port-map "443=$AGENT_TLS" 2>"$TMP/agent.log" & PIDS+=($!); AGENT_PID=$!
for _ in $(seq 300); do [[ -s "$TMP/agent/agent.addr" ]] && break; sleep 0.05; done
[[ -s "$TMP/agent/agent.addr" ]] || { echo "the agent did not start:" >&2; cat "$TMP/agent.log" >&2; exit 1; }
export ALOFT_API_URL="http://$(cat "$TMP/agent/agent.addr")" ALOFT_API_TOKEN="$(cat "$TMP/agent/token")"
cat >"$TMP/app/fly.toml" <<EOF
app = "bench-proxy"
primary_region = "gru"
[processes]
app = "sh -c 'exec $BIN backend \$PORT'"
[http_service]
internal_port = 8080
auto_stop_machines = "off"
[http_service.concurrency]
type = "requests"
soft_limit = 1000
EOF
"$ALOFT_BIN" apps create bench-proxy >/dev/null
"$ALOFT_BIN" deploy -c "$TMP/app/fly.toml" --yes >"$TMP/deploy.log" 2>&1 \
  || { echo "deploy of the bench app failed:" >&2; cat "$TMP/deploy.log" >&2; exit 1; }

for p in "$BACKEND" "$ALOFT" "$NGINX" "$HAPROXY" "$ALOFT_HYPER" "$AGENT" "$ALOFT_HOSTS" "$ALOFT_TLS" "$NGINX_TLS" "$AGENT_TLS"; do wait_port "$p"; done
# Every server must still be running (one that failed to bind would leave its port to another).
for p in "${PIDS[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a server of the bench exited at start-up (pid $p); see above" >&2; exit 1; }
done
# Sanity: every path answers the app's body; every proxy adds the same response headers.
# (The agent's machine may take a moment after the deploy to be routed: wait for its answer.)
for _ in $(seq 100); do [[ "$(curl -s "http://127.0.0.1:$AGENT/")" == hello ]] && break; sleep 0.05; done
for p in "$BACKEND" "$ALOFT" "$NGINX" "$HAPROXY" "$ALOFT_HYPER" "$AGENT"; do
  body=$(curl -s "http://127.0.0.1:$p/")
  [[ "$body" == "hello" ]] || { echo "port $p answered '$body'" >&2; exit 1; }
done
[[ "$(curl -s -H "$HOST_HEADER" "http://127.0.0.1:$ALOFT_HOSTS/")" == hello ]] \
  || { echo "the 50-app proxy does not route $HOST_HEADER" >&2; exit 1; }
for p in "$ALOFT_TLS" "$NGINX_TLS" "$AGENT_TLS"; do
  body=$(curl -sk "https://127.0.0.1:$p/")
  [[ "$body" == "hello" ]] || { echo "https port $p answered '$body'" >&2; exit 1; }
done
for p in "$ALOFT" "$NGINX" "$HAPROXY" "$ALOFT_HYPER" "$AGENT"; do
  head=$(curl -s -o /dev/null -D - "http://127.0.0.1:$p/")
  for h in fly-request-id via server; do
    grep -qi "^$h:" <<<"$head" || { echo "port $p: no $h header in the response" >&2; exit 1; }
  done
done

# CPU time (clock ticks) of a server: the process and its children (nginx's workers), or the
# process alone for the agent (its child is the machine, the app server).
cpu_ticks() {
  local pid total=0 f kids
  kids=$(pgrep -P "$1" 2>/dev/null || true)
  [[ "$1" == "$AGENT_PID" ]] && kids=""
  for pid in "$1" $kids; do
    f=$(cut -d' ' -f14,15 "/proc/$pid/stat" 2>/dev/null) || continue
    total=$((total + ${f% *} + ${f#* }))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# wrk → "rps p50_ms p99_ms cpu_us_per_request" (CPU of the server measured, not of wrk: the
# steadier figure on a shared machine, where throughput swings with the neighbours' load).
# Arguments: URL threads connections pid [more wrk arguments].
measure() {
  local url=$1 threads=$2 conns=$3 pid=$4 before after
  shift 4
  before=$(cpu_ticks "$pid")
  env ${WRK_CONF:+OPENSSL_CONF="$WRK_CONF"} wrk -t"$threads" -c"$conns" -d"${DUR}s" --latency "$@" "$url" 2>/dev/null >"$TMP/wrk.out" || true
  after=$(cpu_ticks "$pid")
  awk -v cpu_us=$(((after - before) * TICK_US)) '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    / requests in / { n=$1 }
    $1=="50%" { p50=ms($2) }
    $1=="99%" { p99=ms($2) }
    /Non-2xx|Socket errors/ { err=err" "$0 }
    END { printf "%.0f %.3f %.3f %.1f%s\n", rps, p50, p99, (n ? cpu_us/n : 0), (err ? " ERR" err : "") }' "$TMP/wrk.out"
}

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
if section http; then
declare -A RUNS R CPU
for load in high moderate; do
  if [[ $load == high ]]; then t=2; c=64; else t=1; c=8; fi
  for round in $(seq 1 "$ROUNDS"); do
    for target in direct aloft nginx haproxy hyper agent hosts; do
      extra=()
      case $target in
        direct) p=$BACKEND pid=$BACKEND_PID;; aloft) p=$ALOFT pid=$ALOFT_PID;;
        nginx) p=$NGINX pid=$NGINX_PID;; haproxy) p=$HAPROXY pid=$HAPROXY_PID;;
        hyper) p=$ALOFT_HYPER pid=$ALOFT_HYPER_PID;; agent) p=$AGENT pid=$AGENT_PID;;
        hosts) p=$ALOFT_HOSTS pid=$ALOFT_HOSTS_PID extra=(-H "$HOST_HEADER");;
      esac
      [[ $round == 1 ]] && { wrk -t1 -c4 -d1s "${extra[@]}" "http://127.0.0.1:$p/" >/dev/null 2>&1 || true; }   # warm-up
      RUNS[$load,$target]+="$(measure "http://127.0.0.1:$p/" "$t" "$c" "$pid" "${extra[@]}")"$'\n'
    done
  done
  # Median run by throughput (its own p50/p99 kept together); CPU per request: its own median.
  for target in direct aloft nginx haproxy hyper agent hosts; do
    R[$load,$target]=$(printf '%s' "${RUNS[$load,$target]}" | sort -n -k1,1 | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
    CPU[$load,$target]=$(printf '%s' "${RUNS[$load,$target]}" | awk '{print $4}' | sort -n | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
  done
done

echo
echo "small HTTP responses, median of $ROUNDS x ${DUR}s runs, $(nproc) cores shared by wrk, proxy and app; load average before: $LOADAVG"
for load in high moderate; do
  if [[ $load == high ]]; then echo "== high load: wrk -t2 -c64"; else echo "== moderate load: wrk -t1 -c8"; fi
  printf "%-8s %12s %10s %10s %14s\n" target "req/s" "p50 ms" "p99 ms" "CPU µs/req"
  for target in direct aloft nginx haproxy hyper agent hosts; do
    read -r rps p50 p99 _ rest <<<"${R[$load,$target]}"
    printf "%-8s %12s %10s %10s %14s %s\n" "$target" "$rps" "$p50" "$p99" "${CPU[$load,$target]}" "${rest:-}"
  done
  read -r a_rps _ a_p99 _ <<<"${R[$load,aloft]}"
  read -r n_rps _ n_p99 _ <<<"${R[$load,nginx]}"
  read -r h_rps _ _ _ <<<"${R[$load,haproxy]}"
  read -r d_rps _ d_p99 _ <<<"${R[$load,direct]}"
  awk -v a="$a_rps" -v n="$n_rps" -v h="$h_rps" -v d="$d_rps" -v ap="$a_p99" -v dp="$d_p99" 'BEGIN {
    printf "ratios: aloft/nginx %.2f  aloft/haproxy %.2f  aloft/direct %.2f  (throughput)\n", a/n, a/h, a/d
    printf "        aloft p99 - direct p99 = %+.3f ms\n", ap-dp }'
  awk -v a="${CPU[$load,aloft]}" -v n="${CPU[$load,nginx]}" -v h="${CPU[$load,haproxy]}" 'BEGIN {
    printf "CPU per request (the server alone): aloft/nginx %.2f  aloft/haproxy %.2f  (lower is better)\n", a/n, a/h }'
  awk -v a="${CPU[$load,aloft]}" -v y="${CPU[$load,hyper]}" 'BEGIN {
    printf "h1 fast path: CPU per request %.2f of the hyper path'"'"'s\n", a/y }'
  read -r g_rps _ _ _ <<<"${R[$load,agent]}"
  awk -v g="$g_rps" -v n="$n_rps" -v a="$a_rps" -v gc="${CPU[$load,agent]}" -v nc="${CPU[$load,nginx]}" 'BEGIN {
    printf "through a running agent: agent/nginx %.2f (throughput), %.2f (CPU per request); agent/proxy alone %.2f (throughput)\n", g/n, gc/nc, g/a }'
  read -r s_rps _ _ _ <<<"${R[$load,hosts]}"
  awk -v s="$s_rps" -v a="$a_rps" -v sc="${CPU[$load,hosts]}" -v ac="${CPU[$load,aloft]}" 'BEGIN {
    printf "Host routing over 50 apps: hosts/single app %.2f (throughput), %.2f (CPU per request)\n", s/a, sc/ac }'
done
fi

# HTTPS, the same ECDSA P-256 key on every side: keep-alive requests, and new connections with
# one request each (Connection: close; wrk resumes no TLS session, so every connection is a full
# handshake — with both servers alike, each issuing tickets wrk never uses): requests/s there =
# new TLS handshakes/s; with TLS 1.3 (what both negotiate with wrk) and with TLS 1.2 (wrk offers
# no more). Key exchange is X25519 on both (the only key share OpenSSL 3.0 clients send).
if section https; then
declare -A TRUNS TR
for mode in keepalive handshake handshake12; do
  extra=()
  [[ $mode == handshake* ]] && extra=(-H "Connection: close")
  WRK_CONF=""
  [[ $mode == handshake12 ]] && WRK_CONF=$TMP/tls12.cnf
  for round in $(seq 1 "$ROUNDS"); do
    for target in aloft nginx agent; do
      case $target in
        aloft) p=$ALOFT_TLS pid=$ALOFT_TLS_PID;; nginx) p=$NGINX_TLS pid=$NGINX_PID;;
        agent) p=$AGENT_TLS pid=$AGENT_PID;;
      esac
      [[ $round == 1 ]] && { wrk -t1 -c4 -d1s "https://127.0.0.1:$p/" >/dev/null 2>&1 || true; }
      TRUNS[$mode,$target]+="$(measure "https://127.0.0.1:$p/" 2 64 "$pid" "${extra[@]}")"$'\n'
    done
  done
  for target in aloft nginx agent; do
    TR[$mode,$target]=$(printf '%s' "${TRUNS[$mode,$target]}" | sort -n -k1,1 | awk '{a[NR]=$0} END {print a[int((NR+1)/2)]}')
  done
done
echo
echo "== HTTPS (ECDSA P-256, TLS 1.3 and 1.2 offered by both), wrk -t2 -c64, median of $ROUNDS x ${DUR}s"
printf "%-8s %16s %10s %16s %18s %16s %18s\n" target "keep-alive req/s" "p99 ms" "handshakes/s" "CPU µs/handshake" "TLS1.2 hs/s" "TLS1.2 CPU µs/hs"
for target in aloft nginx agent; do
  read -r k_rps _ k_p99 _ k_rest <<<"${TR[keepalive,$target]}"
  read -r h_rps _ _ h_cpu h_rest <<<"${TR[handshake,$target]}"
  read -r t_rps _ _ t_cpu t_rest <<<"${TR[handshake12,$target]}"
  printf "%-8s %16s %10s %16s %18s %16s %18s %s\n" "$target" "$k_rps" "$k_p99" "$h_rps" "$h_cpu" "$t_rps" "$t_cpu" "${k_rest:-}${h_rest:-}${t_rest:-}"
done
read -r ak _ _ _ <<<"${TR[keepalive,aloft]}"; read -r nk _ _ _ <<<"${TR[keepalive,nginx]}"; read -r gk _ _ _ <<<"${TR[keepalive,agent]}"
read -r ah _ _ ac <<<"${TR[handshake,aloft]}"; read -r nh _ _ nc <<<"${TR[handshake,nginx]}"; read -r gh _ _ _ <<<"${TR[handshake,agent]}"
read -r at _ _ atc <<<"${TR[handshake12,aloft]}"; read -r nt _ _ ntc <<<"${TR[handshake12,nginx]}"
awk -v ak="$ak" -v nk="$nk" -v gk="$gk" -v ah="$ah" -v nh="$nh" -v gh="$gh" -v ac="$ac" -v nc="$nc" \
  -v at="$at" -v nt="$nt" -v atc="$atc" -v ntc="$ntc" 'BEGIN {
  printf "ratios: keep-alive aloft/nginx %.2f agent/nginx %.2f; handshakes (TLS 1.3) aloft/nginx %.2f agent/nginx %.2f\n", ak/nk, gk/nk, ah/nh, gh/nh
  printf "CPU per handshake aloft/nginx (lower is better): TLS 1.3 %.2f; TLS 1.2 %.2f (handshakes aloft/nginx %.2f)\n", ac/nc, atc/ntc, at/nt }'
fi

if section autostart; then
echo
echo "== autostart (request to a stopped machine until the response, minus the app's boot time)"
"$BIN" autostart 20 100
fi
