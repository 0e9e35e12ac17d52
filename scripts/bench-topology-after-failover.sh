#!/usr/bin/env bash
# How long after a failover ends the API's topology shows it: the new primary, and every
# reachable replica on it. Starts a 3-member sandbox (ports 24580-24582) and `dbfleet serve`
# (API 24590, 1 s probe interval, failover auto, 1 s block window), kills the primary twice,
# and prints the milliseconds from the operation's finished_ms to a current topology.
#
#   scripts/bench-topology-after-failover.sh [DBFLEET_BINARY] [KILLS]   (KILLS at most 2)
set -euo pipefail
B=${1:-target/release/dbfleet}
RUNS=${2:-2}
R=$(mktemp -d /tmp/dbfleet-topolag-XXXXXX)
$B sandbox up --name tl --base-port 24580 --dir "$R" >/dev/null
sed -i 's/^listen = "127.0.0.1:7070"/listen = "127.0.0.1:24590"/' "$R/tl/dbfleet.toml"
sed -i 's/^block_window = "10m"/block_window = "1s"/' "$R/tl/dbfleet.toml"
$B serve --config "$R/tl/dbfleet.toml" >"$R/serve.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null || true; sleep 1; $B sandbox down --name tl --dir "$R" >/dev/null; rm -rf "$R"' EXIT
sleep 4
API=http://127.0.0.1:24590
for _ in $(seq 1 "$RUNS"); do
  read -r m nops < <(python3 - "$API" <<'PY'
import json, sys, urllib.request
api = sys.argv[1]
get = lambda p: json.load(urllib.request.urlopen(api + p))
port = int(get("/api/v1/clusters/tl/topology")["primary"].rsplit(":", 1)[1])
print(f"m{port - 24580 + 1}", len(get("/api/v1/operations?cluster=tl")["operations"]))
PY
)
  $B sandbox kill tl "$m" --dir "$R" >/dev/null
  python3 - "$API" "$nops" <<'PY'
import json, sys, time, urllib.request
api, n = sys.argv[1], int(sys.argv[2])
get = lambda p: json.load(urllib.request.urlopen(api + p))
t0 = time.time()
while True:
    ops = get("/api/v1/operations?cluster=tl")["operations"]
    if len(ops) > n and ops[0]["state"] != "running":
        break
    if time.time() - t0 > 30:
        sys.exit("no failover within 30 s")
    time.sleep(0.01)
op = ops[0]
if op["state"] != "succeeded":
    sys.exit(f"failover {op['state']}: {op.get('error')}")
fin, new = op["finished_ms"], op["data"]["candidate"]
while True:
    t = get("/api/v1/clusters/tl/topology")
    others = [x for x in t["nodes"] if x["addr"] != new and x["reachable"]]
    if t["primary"] == new and all(x["source"] in (None, new) for x in others):
        break
    if time.time() - t0 > 60:
        sys.exit("the topology never showed the failover")
    time.sleep(0.01)
print(f"failover finished -> topology current: {int(time.time() * 1000) - fin} ms")
PY
  sleep 3
done
