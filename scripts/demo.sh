#!/usr/bin/env bash
# The demo: installs what is missing, builds dbfleet, starts a 3-member MariaDB replication
# sandbox on loopback, and probes each member. Run it again at any time; it is idempotent.
# Remove the sandbox with: target/release/dbfleet sandbox down --name demo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
echo "==> building dbfleet (release)"
cargo build --release --quiet --bin dbfleet
DBFLEET=target/release/dbfleet
PORT="${DEMO_BASE_PORT:-23306}"

echo "==> starting sandbox 'demo' (1 primary, 2 replicas) on 127.0.0.1:${PORT}+"
up_json="$($DBFLEET sandbox up --name demo --replicas 2 --base-port "$PORT" --json)"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); $1" <<<"$up_json"; }
echo "sandbox demo $(field 'print(d["outcome"])') in $(field 'print(round(d["seconds"],2))')s"
$DBFLEET sandbox status --name demo
creds="$(field 'print(d["credentials_file"])')"

for addr in $(field 'print("\n".join(m["addr"] for m in d["members"]))'); do
  echo
  echo "==> dbfleet probe $addr --credentials $creds"
  $DBFLEET probe "$addr" --credentials "$creds"
done
