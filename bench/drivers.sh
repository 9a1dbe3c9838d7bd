#!/usr/bin/env bash
# Driver costs against real redis-server, haproxy and sshd processes (root needed for sshd).
#   bench/drivers.sh                    the full run (release build), figures for docs/BENCHMARKS.md
#   bench/drivers.sh --smoke            a short run in the dev profile, as CI does: it keeps working
#   bench/drivers.sh --probes N --api N --ssh N
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--smoke" ]; then
  exec cargo run -q --locked -p medic-bench --bin drivers -- --probes 200 --api 100 --ssh 20
fi
exec cargo run -q --release --locked -p medic-bench --bin drivers -- "$@"
