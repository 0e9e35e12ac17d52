#!/usr/bin/env bash
# The repair loop without a human: a 3-member semi-sync sandbox and `dbfleet serve` with
# failover `auto` and `rejoin = "auto"` (ports 24780-24782, API 24790). KILLS times: SIGKILL
# the primary, wait for the failover, start the killed member again (`sandbox start` boots it
# read-only, as a replica), and time until both replicas replicate from the new primary.
# Prints the open alerts at the end (none expected).
#
#   scripts/bench-repair-cycle.sh [DBFLEET_BINARY] [KILLS]
set -euo pipefail
B=${1:-target/release/dbfleet}; N=${2:-6}
R=$(mktemp -d /tmp/dbfleet-cycle-XXXXXX)
$B sandbox up --name cy --semi-sync --base-port 24780 --dir $R >/dev/null
sed -i 's/^listen = "127.0.0.1:7070"/listen = "127.0.0.1:24790"/' $R/cy/dbfleet.toml
sed -i 's/^block_window = "10m"/block_window = "1s"\nrejoin = "auto"/' $R/cy/dbfleet.toml
$B serve --config $R/cy/dbfleet.toml > $R/serve.log 2>&1 & SP=$!
trap "kill $SP 2>/dev/null; sleep 1; $B sandbox down --name cy --dir $R >/dev/null; rm -rf $R" EXIT
sleep 4
API=http://127.0.0.1:24790
for i in $(seq 1 $N); do
  python3 - "$API" "$B" "$R" <<'PY'
import json,sys,time,urllib.request,subprocess
api,B,R=sys.argv[1:4]
get=lambda p: json.load(urllib.request.urlopen(api+p))
t=get("/api/v1/clusters/cy/topology"); prim=t["primary"]; port=int(prim.rsplit(":",1)[1]); m=f"m{port-24780+1}"
n=len(get("/api/v1/operations?cluster=cy")["operations"])
t0=time.time()
subprocess.run([B,"sandbox","kill","cy",m,"--dir",R],check=True,capture_output=True)
while True:
    ops=get("/api/v1/operations?cluster=cy")["operations"]
    if len(ops)>n and ops[0]["kind"]=="failover" and ops[0]["state"]!="running": break
    if time.time()-t0>30: sys.exit("no failover")
    time.sleep(0.02)
fo=ops[0]
if fo["state"]!="succeeded": sys.exit(f"failover {fo['state']}: {fo.get('error')}")
t1=time.time()
out=subprocess.run([B,"sandbox","start","cy",m,"--dir",R],check=True,capture_output=True,text=True).stdout.strip()
while True:
    t=get("/api/v1/clusters/cy/topology")
    reps=[x for x in t["nodes"] if x["addr"]!=t["primary"]]
    if len(reps)==2 and all(x["reachable"] and x["source"]==t["primary"] and x["io_thread"]=="yes" and x["sql_running"] for x in reps): break
    if time.time()-t1>30:
        ops=get("/api/v1/operations?cluster=cy")["operations"][:2]
        sys.exit(f"not healed: {json.dumps(t)[:600]} ops={json.dumps(ops)[:600]}")
    time.sleep(0.05)
ops=get("/api/v1/operations?cluster=cy")["operations"]
print(f"kill {m}: failover {fo['data']['writable_ms']-fo['data']['detected_ms'] if fo['data'].get('detected_ms') else '?'} ms to writable; restart+auto rejoin healed in {time.time()-t1:.2f}s; last op {ops[0]['kind']}/{ops[0]['trigger']}/{ops[0]['state']}; start said: {out}")
PY
  sleep 2
done
curl -s "$API/api/v1/alerts"; echo
echo "alert_fired events: $(curl -s "$API/api/v1/events?kind=alert_fired&limit=1000" | python3 -c "import json,sys; print(len(json.load(sys.stdin)[\"events\"]))")"
