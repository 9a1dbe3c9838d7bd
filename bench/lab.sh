#!/usr/bin/env bash
# Lab costs (root needed): launching a lab machine until its SSH port answers, and `medic lab up`
# of examples/lab.yaml end to end (5 machines launched and configured by their playbooks).
#   bench/lab.sh [RUNS]      default 5 runs, each up then down, on a subnet of its own
#   bench/lab.sh --smoke     one run, as CI does
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
[ "$runs" = "--smoke" ] && runs=1
cargo build -q --locked -p medic
medic="${CARGO_TARGET_DIR:-target}/debug/medic"
dir="$(mktemp -d)"
trap '"$medic" lab down --topology "$dir/lab.yaml" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
sed -e "s#subnet: 10.77.0.0/24#subnet: 10.76.250.0/24#; s#bridge: medic0#bridge: mbench0#" \
    -e "s#server: 10.77.0.2:53#server: 10.76.250.2:53#" \
    -e "s#/var/lib/medic/lab#$dir/state#g; s#\.\./playbooks#$PWD/playbooks#; s#\.\./amis#$PWD/amis#g" \
    examples/lab.yaml > "$dir/lab.yaml"
for i in $(seq "$runs"); do
  start=$(date +%s.%N)
  "$medic" lab up "$dir/lab.yaml" > "$dir/up.$i"
  end=$(date +%s.%N)
  echo "$start $end" > "$dir/time.$i"
  "$medic" lab down --topology "$dir/lab.yaml" > /dev/null
done
python3 - "$dir" "$runs" <<'PY'
import sys, statistics, re, glob
d, runs = sys.argv[1], int(sys.argv[2])
totals, machine, playbooks = [], [], []
for i in range(1, runs + 1):
    s, e = map(float, open(f"{d}/time.{i}").read().split())
    totals.append(e - s)
    t = {}
    for line in open(f"{d}/up.{i}"):
        m = re.match(r"\s*\d+\s+(\S+)\s+(\S+)\s+([\d.]+)s", line)
        if m:
            kind, target, secs = m.group(1), m.group(2), float(m.group(3))
            t.setdefault(target, {})[kind] = secs
    for target, k in t.items():
        if "launch" in k and "wait-ssh" in k:
            machine.append(k["launch"] + k["wait-ssh"])
        if "playbook" in k:
            playbooks.append(k["playbook"])
def s(v): return f"median {statistics.median(v):.2f} s, min {min(v):.2f}, max {max(v):.2f} (n={len(v)})"
print(f"lab machine, launch until SSH answers: {s(machine)}")
print(f"playbook per machine (redis, haproxy, app-proxy): {s(playbooks)}")
print(f"medic lab up examples/lab.yaml, end to end: {s(totals)}")
PY
