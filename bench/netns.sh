#!/usr/bin/env bash
# Machine networking: how long attaching a machine (namespace, veth pair, addresses, routes)
# and detaching it take on this host. Needs root. Prints one line per operation.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q -p aloft-runtime --test it net::attach_and_detach_timings -- --ignored --nocapture 2>&1 \
  | grep -E '^(attach|detach)'
