#!/usr/bin/env bash
# Round-trip cost of a command over ssh:// against the same agent reached directly:
# `aloft apps list` N times each way, mean wall time and the ratio. An ssh:// command pays one
# SSH login (ControlMaster), `aloft agent connect-info` on the server and a forward before its
# request; every request and stream of the command then shares that connection.
# Needs root (a throwaway sshd on a loopback port) and openssh-server/openssh-client.
# Prints figures; asserts nothing (figures move with host load).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-10}"
[[ $(id -u) -eq 0 ]] || { echo "needs root (runs a throwaway sshd)"; exit 1; }
[[ -x /usr/sbin/sshd ]] || { echo "needs openssh-server"; exit 1; }
# ALOFT_BIN: an aloft binary to measure instead of building the release one.
BIN="${ALOFT_BIN:-}"
if [[ -z "$BIN" ]]; then
  cargo build --release -p aloft 2>"${TMPDIR:-/tmp}/aloft-bench-build.log" || { cat "${TMPDIR:-/tmp}/aloft-bench-build.log"; exit 1; }
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/aloft"
fi

WORK="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N "" -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
mkdir -p /run/sshd
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $WORK/sshd.pid
LogLevel ERROR
CONF
cat >"$WORK/ssh_config" <<CONF
Host bench
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $WORK/client_key
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile $WORK/known_hosts
  GlobalKnownHostsFile /dev/null
CONF
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
pids+=($!)
"$BIN" agent --no-proxy --listen 127.0.0.1:0 --data-dir "$WORK/data" 2>"$WORK/agent.log" &
pids+=($!)
for _ in $(seq 300); do [[ -s "$WORK/data/agent.addr" ]] && break; sleep 0.05; done
[[ -s "$WORK/data/agent.addr" ]] || { echo "agent did not start:"; cat "$WORK/agent.log"; exit 1; }

direct() { ALOFT_API_URL="http://$(cat "$WORK/data/agent.addr")" ALOFT_API_TOKEN="$(cat "$WORK/data/token")" "$BIN" apps list >/dev/null; }
remote() { ALOFT_API_URL="ssh://bench$WORK/data?aloft=$BIN" ALOFT_SSH_CONFIG="$WORK/ssh_config" ALOFT_API_TOKEN= "$BIN" apps list >/dev/null; }
bare() { ssh -F "$WORK/ssh_config" -o BatchMode=yes -o StrictHostKeyChecking=accept-new bench true; }
remote # records the host key, warms up
mean_ms() { local start end; start=$(date +%s%N); for _ in $(seq "$N"); do "$1"; done; end=$(date +%s%N); echo $(( (end - start) / N / 1000000 )); }
d=$(mean_ms direct)
r=$(mean_ms remote)
b=$(mean_ms bare)
echo "aloft apps list, mean of $N (load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores):"
echo "  direct http://   ${d} ms"
echo "  over ssh://      ${r} ms"
echo "  (a bare ssh login, ssh HOST true: ${b} ms)"
awk -v d="$d" -v r="$r" 'BEGIN { if (d > 0) printf "  ratio            %.1fx\n", r / d }'
