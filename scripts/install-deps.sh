#!/usr/bin/env bash
# Installs the system packages dbfleet's demo and tests need, when any is missing.
# Runs `apt-get update` once, then one `apt-get install`. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  mariadb-server   # mariadbd, mariadb-install-db: the sandbox's servers
  mariadb-client   # mariadb, mariadb-binlog
  mariadb-backup   # mariabackup
  protobuf-compiler  # protoc: etcd-client compiles etcd's protocol at build time
  libprotobuf-dev  # protoc's well-known types (google/protobuf/*.proto): only a Recommends of protobuf-compiler
  etcd-server      # etcd: the multi-node control plane's store, started by the tests
  iptables         # firewall rules that cut the control plane from a server in tests
  prometheus       # promtool: the /metrics test runs `promtool check metrics`
  prometheus-mysqld-exporter  # `dbfleet bench monitor --compare-exporter`: the CPU baseline
)

# The first word of each entry is the package name; the rest is its comment.
mapfile -t names < <(printf '%s\n' "${PACKAGES[@]}" | awk '{print $1}')

missing=()
for p in "${names[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Debian's maintainer scripts try to start the service; nothing needs it, and the
# sandbox starts its own servers.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
