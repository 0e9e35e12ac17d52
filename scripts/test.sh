#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the workspace
# against real mariadbd servers that the tests start themselves on loopback.
#
# The disk-fault tests (names containing `disk_fault`) put a member's datadir on a
# loop-mounted ext4 filesystem, and need root and a free loop device. Where the machine
# cannot give them, they are left out of the run, reported as skipped (nextest counts them),
# and the reason is printed: they never pass without running.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

search_path="$PATH:/usr/sbin:/usr/bin:/sbin"
disk_faults_reason=""
if [ "$(id -u)" -ne 0 ]; then
  disk_faults_reason="not root (uid $(id -u))"
elif ! out="$(PATH="$search_path" losetup -f 2>&1)"; then
  disk_faults_reason="no free loop device: $out"
fi

if [ -n "$disk_faults_reason" ]; then
  echo "test.sh: SKIPPED the disk_fault tests: $disk_faults_reason" >&2
  echo "test.sh: (they need root and a loop device: see README, Tests)" >&2
  export DBFLEET_DISK_FAULTS=skip
  status=0
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast -E 'not test(/disk_fault/)' "$@" || status=$?
  else
    cargo test --workspace --no-fail-fast "$@" -- --skip disk_fault || status=$?
  fi
  echo "test.sh: SKIPPED the disk_fault tests: $disk_faults_reason" >&2
  exit $status
fi

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
