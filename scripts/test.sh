#!/usr/bin/env bash
# Runs every test of the workspace: installs the system packages tests use, then cargo test.
# Needs ../shared (the spec and the fly.toml corpus) beside the checkout, as CI has it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
exec cargo test --workspace --all-targets "$@"
