#!/usr/bin/env bash
# The hard faults of issue 13, measured: for each scenario a fresh 3-member semi-sync sandbox
# (ports 26500-26502) and `dbfleet serve` on its config (API 26510, a tokens file, failover
# auto, 1 s block window), then
#
#   dbfleet drt run SCENARIO --repeat N --stale-client --api … --token-file …
#
# and one line per scenario: runs (passed), failovers, fault→writable p50 and max,
# fault→named (the control plane's detection) p50 and max, lost acknowledged writes, writes the old primary acknowledged after the new one
# opened (stale acks), late acknowledgements (writes sent before the fault that the new
# primary holds, whose OK the old primary sent when it resumed: not stale, see
# drt::report::StaleAcks), looks that saw two writable servers able to acknowledge, with
# in brackets those that saw a second writable server that could not (mute: lossless
# semi-sync, no replica), and runs the control plane handed to a human. The reports (JSON and
# HTML) stay in OUT (default ./bench-hard-faults-TIME/); the daemon's log of each scenario
# too.
#
# Ports: BASE_PORT (default 26500) for the sandbox, API_PORT (default 26510) for the daemon,
# so that two benches can run side by side.
#
#   scripts/bench-hard-faults.sh [DBFLEET_BINARY] [REPEAT] [SCENARIO...]
#
# Default: target/release/dbfleet, 10 runs, kill-primary (the SIGKILL baseline) and the six
# hard-fault scenarios. Needs root (iptables, as every DRT that partitions). The disk
# scenarios (names ending in `-disk`: stall-primary-disk, fill-primary-disk,
# stall-replica-disk) get a sandbox made with `--loop-datadirs` (root and three free loop
# devices). BASE_PORT
# (default 26500) moves the sandbox's three ports and the API (BASE_PORT+10), so that two
# benchmarks can run side by side.
set -euo pipefail
B=${1:-target/release/dbfleet}
N=${2:-10}
shift $(($# > 2 ? 2 : $#))
if [ $# -gt 0 ]; then
  SCENARIOS=("$@")
else
  SCENARIOS=(kill-primary pause-primary-8s pause-primary-20s blackhole-primary
    kill-primary-with-delayed-replica kill-primary-with-broken-replica
    lose-primary-and-best-replica)
fi
B=$(realpath "$B")
OUT=${OUT:-bench-hard-faults-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")
BASE_PORT=${BASE_PORT:-26500}
API_PORT=${API_PORT:-$((BASE_PORT + 10))}
API=http://127.0.0.1:$API_PORT
R=""
SP=""

cleanup() {
  if [ -n "$SP" ]; then kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true; fi
  if [ -n "$R" ]; then
    "$B" sandbox down --name hf --dir "$R" >/dev/null 2>&1 || true
    rm -rf "$R"
  fi
  SP=""
  R=""
}
trap cleanup EXIT

for s in "${SCENARIOS[@]}"; do
  R=$(mktemp -d /tmp/dbfleet-hf-XXXXXX)
  loop=()
  case "$s" in *-disk) loop=(--loop-datadirs) ;; esac
  "$B" sandbox up --name hf --semi-sync --base-port "$BASE_PORT" "${loop[@]}" --dir "$R" >/dev/null
  C="$R/hf/dbfleet.toml"
  head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$R/hf/tokens.txt"
  sed -i "s|^listen = \"127.0.0.1:7070\"|listen = \"127.0.0.1:$API_PORT\"\ntokens_file = \"$R/hf/tokens.txt\"|" "$C"
  sed -i 's/^block_window = "10m"/block_window = "1s"/' "$C"
  "$B" serve --config "$C" >"$OUT/$s.serve.log" 2>&1 &
  SP=$!
  for _ in $(seq 1 100); do
    curl -sf "$API/api/v1/clusters/hf/topology" >/dev/null 2>&1 && break
    sleep 0.2
  done
  sleep 3 # a few probe rounds: the daemon knows the topology before the first fault
  echo "== $s: $N run(s) $(date -u +%H:%M:%S)" >&2
  "$B" drt run "$s" --sandbox hf --dir "$R" --api "$API" --token-file "$R/hf/tokens.txt" \
    --repeat "$N" --stale-client --report-dir "$OUT/$s" >"$OUT/$s.txt" 2>"$OUT/$s.err" || true
  tail -n 3 "$OUT/$s.err" >&2 || true
  cleanup
done

python3 - "$OUT" "${SCENARIOS[@]}" <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
def ms(v):
    return "-" if v is None else (f"{v} ms" if v < 1000 else f"{v/1000:.2f} s")
hdr = ["scenario", "runs (pass)", "failovers", "fault→writable p50", "max",
       "fault→named p50", "max", "lost acked", "stale acks", "late acks", "two writable (mute)",
       "needs_human"]
rows = []
for n in names:
    f = os.path.join(out, n, "report.json")
    if not os.path.exists(f):
        rows.append([n, "no report (see %s.err)" % n] + [""] * 10)
        continue
    r = json.load(open(f))
    a = r["aggregate"]
    w = a.get("writable") or {}
    d = a.get("detection") or {}
    passed = sum(all(v["pass"] for v in vs) for vs in r["verdicts"])
    human = sum(any(e["kind"] == "needs_human" for e in run["timeline"]) for run in r["runs"])
    sbs = [run["load"]["split_brain"] for run in r["runs"]]
    two = sum(s["rounds"] + s.get("guard_rounds", 0) for s in sbs)
    mute = sum(s.get("guard_mute_rounds", 0) + s.get("mute_rounds", 0) for s in sbs)
    rows.append([n, f"{a['runs']} ({passed})", str(a["failovers_total"]),
                 ms(w.get("p50_ms")), ms(w.get("max_ms")), ms(d.get("p50_ms")),
                 ms(d.get("max_ms")),
                 str(a["lost_total"]), str(a.get("stale_acks_total", 0)),
                 str(a.get("late_acks_total", 0)), f"{two} ({mute})", str(human)])
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for row in rows:
    print("| " + " | ".join(row) + " |")
print(f"\nreports: {out}")
PY
