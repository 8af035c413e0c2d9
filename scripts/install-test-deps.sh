#!/usr/bin/env bash
# Installs what the test suite spawns: system packages (Debian; needs root for apt) and Python
# tools in a venv (no network needed once installed). Idempotent and quiet.
# Keep this list in step with what tests spawn: it is the only place CI learns about it.
set -euo pipefail
# iproute2 and iptables: machine networking (aloft-runtime net tests, and the agent itself);
# buildah + skopeo: image builds and prebuilt images (crates/aloft/tests/it/build.rs);
# runc + tini: container machines (runc runs them, tini-static is their init);
# busybox-static: the static busybox test images are made of (FROM scratch).
packages=(curl python3 python3-venv procps iproute2 iptables buildah skopeo runc tini busybox-static)
# nftables: the machines' isolation and NAT (aloft-runtime net).
packages+=(nftables)
# pebble (with pebble-challtestsrv): the ACME test server of crates/aloft-acme/tests.
packages+=(pebble)
# openssh-server + openssh-client: the sshd and ssh of ssh:// agent URL tests (aloft-testkit sshd).
packages+=(openssh-server openssh-client)
# e2fsprogs (mkfs.ext4, e2fsck, resize2fs) + util-linux (losetup, fsfreeze): volumes are ext4
# images on loop devices (aloft-runtime volumes, the agent itself).
packages+=(e2fsprogs util-linux)
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

# Python tools, pinned, in their own venv. crates/aloft/tests/it/schemathesis.rs looks for
# schemathesis at the same place (ALOFT_TEST_VENV, default ~/.cache/aloft-test-venv).
SCHEMATHESIS_VERSION=4.32.5
venv="${ALOFT_TEST_VENV:-${HOME:?}/.cache/aloft-test-venv}"
installed=$("$venv/bin/schemathesis" --version 2>/dev/null || true)
if [[ "$installed" != *" $SCHEMATHESIS_VERSION" ]]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    "schemathesis==$SCHEMATHESIS_VERSION"
  "$venv/bin/schemathesis" --version >/dev/null
fi
