#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the workspace
# against real mariadbd servers that the tests start themselves on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
