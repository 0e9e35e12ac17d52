#!/usr/bin/env bash
# The demo: installs what is missing, builds dbfleet, starts a 3-member MariaDB replication
# semi-sync sandbox on loopback, probes each member, then runs the daemon on the sandbox's
# config and shows the topology, a killed primary failed over automatically, the old primary
# fenced when it returns and rejoined by hand, a planned switchover back, the Prometheus
# metrics and alerts, and a disaster-recovery test (kill the primary under a write load).
# Run it again at any time: each run starts a fresh sandbox. DEMO_KEEP=1 leaves the daemon
# running.
# Remove the sandbox with: target/release/dbfleet sandbox down --name demo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
echo "==> building dbfleet (release)"
cargo build --release --quiet --bin dbfleet
DBFLEET=target/release/dbfleet
PORT="${DEMO_BASE_PORT:-23306}"

# Each run starts from a fresh sandbox and daemon state: an earlier run's failover would
# otherwise still hold the anti-flapping window.
$DBFLEET sandbox down --name demo >/dev/null 2>&1 || true
echo "==> starting sandbox 'demo' (1 primary, 2 replicas, semi-sync) on 127.0.0.1:${PORT}+"
up_json="$($DBFLEET sandbox up --name demo --replicas 2 --semi-sync --base-port "$PORT" --json)"
field() { python3 -c "import json,sys; d=json.load(sys.stdin); $1" <<<"$up_json"; }
echo "sandbox demo $(field 'print(d["outcome"])') in $(field 'print(round(d["seconds"],2))')s"
$DBFLEET sandbox status --name demo
creds="$(field 'print(d["credentials_file"])')"

for addr in $(field 'print("\n".join(m["addr"] for m in d["members"]))'); do
  echo
  echo "==> dbfleet probe $addr --credentials $creds"
  $DBFLEET probe "$addr" --credentials "$creds"
done

config="$(field 'print(d["config_file"])')"
api_port="${DEMO_API_PORT:-7070}"
sed -i "s/^listen = .*/listen = \"127.0.0.1:${api_port}\"/" "$config"
export DBFLEET_API="http://127.0.0.1:${api_port}"
# Mutating API calls (failover, switchover, rejoin) need a token.
tokens="$(dirname "$config")/tokens.txt"
[ -s "$tokens" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$tokens"
chmod 600 "$tokens"
grep -q '^tokens_file' "$config" || sed -i "/^listen = /a tokens_file = \"$tokens\"" "$config"
export DBFLEET_TOKEN_FILE="$tokens"
echo
echo "==> dbfleet serve --config $config   (log: $(dirname "$config")/serve.log)"
$DBFLEET serve --config "$config" >"$(dirname "$config")/serve.log" 2>&1 &
serve_pid=$!
stop_daemon() { kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true; }
if [ "${DEMO_KEEP:-0}" != 1 ]; then trap stop_daemon EXIT; fi
for _ in $(seq 1 100); do
  $DBFLEET clusters >/dev/null 2>&1 && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$(dirname "$config")/serve.log"; exit 1; }
  sleep 0.1
done
sleep 2
echo; echo "==> dbfleet topology demo"; $DBFLEET topology demo
echo; echo "==> dbfleet problems"; $DBFLEET problems

echo; echo "==> dbfleet sandbox kill demo m1   (SIGKILL the primary; failover mode is auto)"
$DBFLEET sandbox kill demo m1
for _ in $(seq 1 100); do
  $DBFLEET operations --cluster demo --json | grep -q '"state": "succeeded"' && break
  sleep 0.1
done
echo; echo "==> dbfleet operations"; $DBFLEET operations --cluster demo
op_id="$($DBFLEET operations --cluster demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["operations"][0]["id"])')"
echo; echo "==> dbfleet operation $op_id"; $DBFLEET operation "$op_id"
sleep 0.5   # the daemon probes the cluster again as soon as an operation ends
echo; echo "==> dbfleet topology demo"; $DBFLEET topology demo

m1="$(field 'print(d["members"][0]["addr"])')"
echo; echo "==> dbfleet sandbox start demo m1   (m2 is writable now, so the old primary returns"
echo "    read-only; dbfleet keeps it fenced out until it rejoins)"
$DBFLEET sandbox start demo m1
sleep 2
echo; echo "==> dbfleet recoveries status"; $DBFLEET recoveries status
echo; echo "==> dbfleet rejoin demo $m1   (errant-GTID check, then attach as a replica)"
$DBFLEET rejoin demo "$m1"
sleep 1
echo; echo "==> dbfleet switchover demo --to $m1   (planned: back to m1)"
$DBFLEET switchover demo --to "$m1"
sleep 0.5
echo; echo "==> dbfleet topology demo"; $DBFLEET topology demo
echo; echo "==> dbfleet events --cluster demo"; $DBFLEET events --cluster demo --limit 15

sleep 2   # the heartbeat writer follows the new primary; its first stamps reach the replicas
echo; echo "==> GET $DBFLEET_API/metrics   (Prometheus; heartbeat lag from the dbfleet.heartbeat row)"
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode())' "$DBFLEET_API" \
  | grep -E '^dbfleet_mysql_(up|heartbeat_lag_seconds|threads_running)\{' || true
echo; echo "==> dbfleet alerts"; $DBFLEET alerts

# A disaster-recovery test: the earlier failover opened the anti-flapping window, which the
# DRT's kill would hit; acknowledge it first, as an operator starting a game day would.
$DBFLEET recoveries ack demo >/dev/null
echo; echo "==> dbfleet drt run kill-primary --sandbox demo   (SIGKILL the primary under a write"
echo "    load, measure RTO, check every acknowledged write on every server, write a report)"
$DBFLEET drt run kill-primary --sandbox demo --api "$DBFLEET_API" --token-file "$tokens" \
  --duration 6s --report-dir "$(dirname "$config")/drt-report"
echo "open $(dirname "$config")/drt-report/report.html in a browser for the timeline"
echo; echo "==> dbfleet drt runs"; $DBFLEET drt runs
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo; echo "daemon left running (pid $serve_pid, API $DBFLEET_API); stop it with: kill $serve_pid"
fi
