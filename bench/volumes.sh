#!/usr/bin/env bash
# Volume throughput vs the host filesystem, in the same script on the same disk: a volume is
# made and mounted by the agent's own code (aloft-runtime's volumes, through its `volume`
# example: a sparse ext4 image on a loop device with direct IO), then
#   - sequential write: dd of SEQ_MIB MiB in 1 MiB blocks, conv=fsync;
#   - fsync-heavy small writes: SMALL_COUNT writes of 4 KiB, each synced (oflag=dsync);
# run RUNS times on the volume's mount and in a directory of the host filesystem next to the
# image. Prints MB/s (best of RUNS) and the volume/host ratio. Target: >= 0.9x. Root only.
set -euo pipefail
cd "$(dirname "$0")/.."
SEQ_MIB="${SEQ_MIB:-512}"
SMALL_COUNT="${SMALL_COUNT:-2000}"
RUNS="${RUNS:-3}"
[ "$(id -u)" -eq 0 ] || { echo "bench/volumes.sh needs root (loop devices)" >&2; exit 1; }
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
cargo build -q --release -p aloft-runtime --example volume
target="${CARGO_TARGET_DIR:-target}"
vol="$target/release/examples/volume"
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/aloft-volbench.XXXXXX")"
cleanup() { "$vol" "$work/volumes" destroy vol_bench >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$vol" "$work/volumes" create vol_bench $(( SEQ_MIB / 1024 + 2 ))
mnt="$("$vol" "$work/volumes" mount vol_bench)"
host="$work/host"
mkdir -p "$host"

# MB/s of one dd run (its last stderr line: "N bytes ... copied, S s, R MB/s").
rate() {
  LC_ALL=C dd "$@" 2>&1 >/dev/null | tail -1 | awk -F', ' '{split($1, b, " "); split($(NF-1), t, " "); printf "%.1f", b[1] / t[1] / 1e6}'
}

best() { # best of RUNS: best FILE_DIR dd-args...
  local dir="$1"; shift
  local top=0
  for _ in $(seq "$RUNS"); do
    rm -f "$dir/bench.out"; sync
    r="$(rate of="$dir/bench.out" "$@")"
    top="$(awk -v a="$top" -v b="$r" 'BEGIN { print (b > a) ? b : a }')"
  done
  rm -f "$dir/bench.out"
  echo "$top"
}

printf '%-34s %12s %12s %8s\n' "workload" "host MB/s" "volume MB/s" "ratio"
row() {
  local name="$1"; shift
  local h v
  h="$(best "$host" "$@")"
  v="$(best "$mnt" "$@")"
  printf '%-34s %12s %12s %7.2fx\n' "$name" "$h" "$v" "$(awk -v h="$h" -v v="$v" 'BEGIN { print v / h }')"
}
row "sequential ${SEQ_MIB} MiB, fsync at end" if=/dev/zero bs=1M count="$SEQ_MIB" conv=fsync
row "${SMALL_COUNT} x 4 KiB, each synced" if=/dev/zero bs=4k count="$SMALL_COUNT" oflag=dsync
