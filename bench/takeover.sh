#!/usr/bin/env bash
# A group of two controllers over a 3-member etcd on the lab (root needed). Each run sets the
# lab up afresh, starts member a (it leads) and member b (it follows), then:
#   leader+master: SIGKILL the leader and crash redis1 (r9001's master) at the same instant;
#   master only:   crash redis1 with the leader healthy;
#   alone:         crash redis1 under one `medic run` without a group (today's figure);
# and measures from the fault: b leading (takeover; polled every 20 ms) and the recovery
# completed in the leader's history; and the clients' outage: loadgen writes through the app
# proxy every 5 ms (200 ms budget) and reports the window from its first failed write to the
# first of a run of successes.
#   bench/takeover.sh [RUNS]      default 5 runs of each case
#   bench/takeover.sh --smoke     one run of each, as CI does
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
[ "$runs" = "--smoke" ] && runs=1
cargo build -q --locked -p medic -p medic-bench
target="${CARGO_TARGET_DIR:-$PWD/target}"
medic="$target/debug/medic"
loadgen="$target/debug/loadgen"
etcd_bin="$(command -v etcd || echo /usr/bin/etcd)"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  "$medic" lab down --topology "$dir/a.yaml" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
net=10.76.251
app="$net.14"
ips=(127.0.91.1 127.0.91.2 127.0.91.3)
endpoints="${ips[0]}:2379, ${ips[1]}:2379, ${ips[2]}:2379"
lab() {
  sed -e "s#subnet: 10.77.0.0/24#subnet: $net.0/24#; s#bridge: medic0#bridge: mbench1#" \
      -e "s#server: 10.77.0.2:53#server: $net.2:53#" \
      -e "s#/var/lib/medic/lab/controller#$dir/state-$1#; s#/var/lib/medic/lab#$dir/lab#g" \
      -e "s#\.\./playbooks#$PWD/playbooks#; s#\.\./amis#$PWD/amis#g" \
      -e "s#listen: 127.0.0.1:7600#listen: 127.0.0.1:$2\n  cluster:\n    etcd: [$endpoints]\n    lease: 2s\n    member: $1#" \
      examples/lab.yaml > "$dir/$1.yaml"
}
lab a 7691
lab b 7692
sed -e '/^  cluster:/,/^    member:/d' "$dir/a.yaml" > "$dir/alone.yaml"
now() { date +%s.%N; }
json() { curl -s --max-time 1 "http://127.0.0.1:$1$2" || true; }
leads() { json "$1" /api/status | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["group"]["leading"] else 1)' 2>/dev/null; }
follows() { json "$1" /api/status | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["group"]["leader"]==sys.argv[1] else 1)' "$2" 2>/dev/null; }
completed() { json "$1" /api/history | python3 -c 'import json,sys; sys.exit(0 if any(r["outcome"]["outcome"]=="completed" for r in json.load(sys.stdin)) else 1)' 2>/dev/null; }
wait_for() { # what deadline-seconds command...
  local what="$1" until=$(( $(date +%s) + $2 )); shift 2
  until "$@"; do
    if [ "$(date +%s)" -ge "$until" ]; then
      echo "gave up waiting for $what" >&2
      for f in "$dir"/*.log; do echo "--- $f" >&2; tail -5 "$f" >&2; done
      exit 1
    fi
    sleep 0.05
  done
}
start_etcd() {
  local cluster="" i
  for i in 0 1 2; do cluster+="m$i=http://${ips[$i]}:2380,"; done
  for i in 0 1 2; do
    "$etcd_bin" --name "m$i" --data-dir "$dir/etcd-$1-$i" \
      --listen-client-urls "http://${ips[$i]}:2379" --advertise-client-urls "http://${ips[$i]}:2379" \
      --listen-peer-urls "http://${ips[$i]}:2380" --initial-advertise-peer-urls "http://${ips[$i]}:2380" \
      --initial-cluster "${cluster%,}" --initial-cluster-token "bench-$1" --initial-cluster-state new \
      --heartbeat-interval 100 --election-timeout 1000 > "$dir/etcd-$1-$i.log" 2>&1 &
    pids+=($!)
  done
  wait_for "etcd" 30 curl -s --max-time 1 -X POST -d '{"key":"AA=="}' "http://${ips[0]}:2379/v3/kv/range" -o /dev/null
}
one() { # case run
  local case="$1" run="$2"
  "$medic" lab up "$dir/a.yaml" > /dev/null
  local a b=""
  if [ "$case" = alone ]; then
    "$medic" run "$dir/alone.yaml" 2> "$dir/a.$case.$run.log" & a=$!; pids+=($a)
    wait_for "medic answers" 30 curl -s --max-time 1 -o /dev/null http://127.0.0.1:7691/api/status
  else
    start_etcd "$case$run"
    "$medic" run "$dir/a.yaml" 2> "$dir/a.$case.$run.log" & a=$!; pids+=($a)
    wait_for "a leads" 30 leads 7691
    "$medic" run "$dir/b.yaml" 2> "$dir/b.$case.$run.log" & b=$!; pids+=($b)
    wait_for "b follows" 30 follows 7692 a
  fi
  wait_for "writes through the app proxy" 30 bash -c "redis-cli -h $app -p 7001 SET k v | grep -q OK"
  "$loadgen" --addr "$app:7001" --every 5ms --budget 200ms --duration 300s > "$dir/load.$case.$run" &
  local load=$!
  pids+=($load)
  sleep 0.5 # the client writes a while before the fault
  local t0 t_lead="" t_done=""
  t0=$(now)
  if [ "$case" = leader+master ]; then kill -9 "$a"; fi
  "$medic" lab fault redis1 crash --topology "$dir/a.yaml" > /dev/null
  local leader=7691
  [ "$case" = leader+master ] && leader=7692
  local until=$(( $(date +%s) + 120 ))
  while [ -z "$t_done" ] && [ "$(date +%s)" -lt "$until" ]; do
    [ -z "$t_lead" ] && { [ "$case" = alone ] || leads "$leader"; } && t_lead=$(now)
    [ -n "$t_lead" ] && completed "$leader" && t_done=$(now)
    sleep 0.02
  done
  [ -n "$t_done" ] || { echo "$case run $run: no completed recovery within 120 s" >&2; tail -20 "$dir/b.$case.$run.log" >&2; exit 1; }
  # A run of successes after the recovery, then the client's summary.
  sleep 1 # a run of successes after the recovery
  kill -INT "$load"
  wait "$load" 2>/dev/null || true
  local outage
  outage=$(awk '/^unavailable/ { if ($2 > m) m = $2 } END { print m + 0 }' "$dir/load.$case.$run")
  echo "$case $t0 $t_lead $outage $t_done" >> "$dir/times"
  kill -9 "$a" $b 2>/dev/null || true
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  pids=()
  wait 2>/dev/null || true
  "$medic" lab down --topology "$dir/a.yaml" > /dev/null
  rm -rf "$dir/lab" "$dir/state-a" "$dir/state-b"
}
for i in $(seq "$runs"); do
  one leader+master "$i"
  one master-only "$i"
  one alone "$i"
done
python3 - "$dir/times" <<'PY'
import sys, statistics
rows = {}
for line in open(sys.argv[1]):
    case, t0, lead, outage_ms, done = line.split()
    t0 = float(t0)
    rows.setdefault(case, []).append((float(lead) - t0, float(outage_ms) / 1000.0, float(done) - t0))
def s(v): return f"median {statistics.median(v):.2f} s, min {min(v):.2f}, max {max(v):.2f} (n={len(v)})"
for case, v in rows.items():
    print(f"{case}: leader after {s([x[0] for x in v])}")
    print(f"{case}: clients' outage (loadgen) {s([x[1] for x in v])}")
    print(f"{case}: recovery completed after {s([x[2] for x in v])}")
PY
