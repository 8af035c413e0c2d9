#!/usr/bin/env bash
# Installs the system packages the test suite uses (Debian). Idempotent; needs root for apt.
# Keep this list in step with what tests spawn: it is the only place CI learns about it.
set -euo pipefail
packages=(curl python3 procps)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
