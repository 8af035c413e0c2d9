#!/usr/bin/env bash
# The README's first command: installs what container machines need (Debian packages; root),
# puts Debian's static busybox beside the example's Dockerfile (its image is FROM scratch +
# busybox, so no registry is needed), then runs `aloft up` on the example app. Extra arguments
# go to `aloft up`.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(buildah runc tini busybox-static nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "container machines need root (namespaces, overlay mounts, the machines' bridge): run as root" >&2
  exit 1
fi
cp /usr/bin/busybox examples/process-groups/busybox
exec cargo run --release -- up -c examples/process-groups/fly.toml "$@"
