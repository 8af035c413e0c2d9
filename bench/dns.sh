#!/usr/bin/env bash
# DNS figures in one run on this machine: answers/s and p50/p99 latency for `.internal` names
# (AAAA of `<app>.internal`, `worker.process.<app>.internal`, `ams.<app>.internal`,
# `<id>.vm.<app>.internal`, TXT `vms.<app>.internal`; 50 apps of 4 machines) from aloft's DNS
# server (aloft-dns, the agent's default settings but the per-source rate limit, since all the
# load comes from 127.0.0.1) and from dnsmasq serving the same records (taken from aloft's own
# answers: host-record/txt-record, --no-resolv, authoritative for `internal`), each on its own
# port on 127.0.0.1.
# The load: a closed loop of CONCURRENCY queries in flight over UDP, one thread
# (crates/aloft-dns/examples/bench.rs `load`), the same for both; then dnsperf (as much as it
# can send, 100 queries outstanding) for a second opinion on throughput. CPU time per answer
# of each server (from /proc) is printed too: on a shared machine it is steadier than
# throughput. Each figure is the median of ROUNDS runs (default 3), targets interleaved.
# Prints figures and the aloft/dnsmasq ratio; never fails on a threshold.
# Usage: bench/dns.sh [seconds per run, default 5] [rounds, default 3] [concurrency, default 16]
# Needs dnsmasq and dnsperf (installed with apt-get when missing, as root). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${1:-5}"
ROUNDS="${2:-3}"
CONC="${3:-16}"
APPS=50

need=()
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v dnsperf >/dev/null || need+=(dnsperf)
if ((${#need[@]})); then
  echo "installing ${need[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build -q --release -p aloft-dns --example bench
BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/examples/bench"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

"$BIN" records "$TMP" "$APPS"

"$BIN" serve "$APPS" >"$TMP/aloft.out" & PIDS+=($!); ALOFT_PID=$!
for _ in $(seq 200); do grep -q '^listening' "$TMP/aloft.out" 2>/dev/null && break; sleep 0.05; done
ALOFT=$(sed -n 's/^listening //p' "$TMP/aloft.out")
[[ -n "$ALOFT" ]] || { echo "the aloft DNS server did not start" >&2; exit 1; }

DNSMASQ_PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dnsmasq --keep-in-foreground --conf-file="$TMP/dnsmasq.conf" --port="$DNSMASQ_PORT" \
  --listen-address=127.0.0.1 --bind-interfaces --user=root --pid-file= \
  --log-facility="$TMP/dnsmasq.log" & PIDS+=($!); DNSMASQ_PID=$!
DNSMASQ="127.0.0.1:$DNSMASQ_PORT"

# Sanity: both answer every name of the bench with the same records (order aside).
for _ in $(seq 100); do "$BIN" compare "$ALOFT" "$DNSMASQ" "$TMP/names.txt" 2>/dev/null && break; sleep 0.05; done
"$BIN" compare "$ALOFT" "$DNSMASQ" "$TMP/names.txt"
for p in "${PIDS[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "a server of the bench exited at start-up (pid $p)" >&2; exit 1; }
done

cpu_ticks() {
  local f
  f=$(cut -d' ' -f14,15 "/proc/$1/stat")
  echo $((${f% *} + ${f#* }))
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# → "answers/s p50_us p99_us cpu_us_per_answer"
measure() {
  local addr=$1 pid=$2 before after out qps
  before=$(cpu_ticks "$pid")
  out=$("$BIN" load "$addr" "$TMP/names.txt" "$DUR" "$CONC")
  after=$(cpu_ticks "$pid")
  qps=$(awk '{print $2}' <<<"$out")
  awk -v out="$out" -v cpu=$(((after - before) * TICK_US)) -v dur="$DUR" -v q="$qps" 'BEGIN {
    split(out, f, " "); printf "%s %s %s %.2f\n", f[2], f[4], f[6], (q > 0 ? cpu / (q * dur) : 0) }'
}

# dnsperf → "answers/s avg_latency_us"
dnsperf_measure() {
  local addr=$1
  dnsperf -s "${addr%:*}" -p "${addr#*:}" -d "$TMP/names.txt" -l "$DUR" -q 100 -c 1 2>/dev/null |
    awk '/Queries per second/ {q=$4} /Average Latency/ {l=$4} END {printf "%.0f %.0f\n", q, l * 1000000}'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A results
for round in $(seq "$ROUNDS"); do
  for target in aloft dnsmasq; do
    if [[ $target == aloft ]]; then addr=$ALOFT pid=$ALOFT_PID; else addr=$DNSMASQ pid=$DNSMASQ_PID; fi
    results[$target,$round]=$(measure "$addr" "$pid")
    results[$target,perf,$round]=$(dnsperf_measure "$addr")
  done
done

col() { # target field(1-based) [perf]
  for round in $(seq "$ROUNDS"); do
    if [[ -n "${3:-}" ]]; then awk -v f="$2" '{print $f}' <<<"${results[$1,perf,$round]}"
    else awk -v f="$2" '{print $f}' <<<"${results[$1,$round]}"; fi
  done | median
}

printf '\n%d apps x 4 machines, %d names; %ss per run, median of %d rounds; closed loop of %d in flight\n' \
  "$APPS" "$(wc -l <"$TMP/names.txt")" "$DUR" "$ROUNDS" "$CONC"
printf '%-8s %12s %8s %8s %12s   %16s %14s\n' server answers/s p50_us p99_us cpu_us/ans dnsperf_ans/s dnsperf_avg_us
for target in aloft dnsmasq; do
  printf '%-8s %12s %8s %8s %12s   %16s %14s\n' "$target" \
    "$(col $target 1)" "$(col $target 2)" "$(col $target 3)" "$(col $target 4)" \
    "$(col $target 1 perf)" "$(col $target 2 perf)"
done
awk -v a="$(col aloft 1)" -v d="$(col dnsmasq 1)" -v ap="$(col aloft 3)" -v dp="$(col dnsmasq 3)" \
  -v pa="$(col aloft 1 perf)" -v pd="$(col dnsmasq 1 perf)" 'BEGIN {
  printf "\naloft/dnsmasq: answers/s %.2fx, p99 %.2fx (lower is better), dnsperf answers/s %.2fx\n",
    a / d, ap / dp, pa / pd }'
