#!/usr/bin/env python3
"""Client-visible outage and lost writes when a master fails, with medic on the lab.

For each run: a fresh lab of examples/lab.yaml (on a subnet of its own), `medic run`, two
`loadgen` clients writing through the app proxy (app:7001 -> haproxy1 -> the r9001 master)
every 2 ms with a 200 ms budget — one plain, one following each write with `WAIT 1 100` —
then, 3 s in at a random point of medic's 250 ms check cycle, the fault:

  process  SIGKILL of the r9001 master's redis-server (the machine stays up: refused)
  machine  the master's machine crashes (its link goes down, its processes die: silent)

After the run every acknowledged key is read back from the shard's final master. Reported per
scenario, min / median / max over the runs: the unavailability window (first failed write to
the first write after which all succeed), failed writes, acknowledged writes lost.

  bench/failover.py [--runs 5] [--scenarios process,machine] [--smoke]

Needs root (the lab). The scenarios are interleaved run by run.
"""

import argparse
import csv
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
MEDIC = os.path.join(TARGET, "debug", "medic")
LOADGEN = os.path.join(TARGET, "debug", "loadgen")
NET = "10.76.240"
LISTEN = 7690


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def api(path):
    with socket.create_connection(("127.0.0.1", LISTEN), timeout=2) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def resp_get_many(host, port, keys):
    """GET every key in one pipelined connection; returns the set of keys that exist."""
    found = set()
    with socket.create_connection((host, port), timeout=10) as s:
        f = s.makefile("rb")
        for i in range(0, len(keys), 1000):
            chunk = keys[i : i + 1000]
            s.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in chunk))
            for k in chunk:
                line = f.readline()
                if line.startswith(b"$-1"):
                    continue
                f.readline()
                found.add(k)
    return found


def topology(d):
    text = open(os.path.join(ROOT, "examples/lab.yaml")).read()
    text = (
        text.replace("subnet: 10.77.0.0/24", f"subnet: {NET}.0/24")
        .replace("bridge: medic0", "bridge: mbfail0")
        .replace("server: 10.77.0.2:53", f"server: {NET}.2:53")
        .replace("/var/lib/medic/lab", os.path.join(d, "state"))
        .replace("../playbooks", os.path.join(ROOT, "playbooks"))
        .replace("../amis", os.path.join(ROOT, "amis"))
        .replace("listen: 127.0.0.1:7600", f"listen: 127.0.0.1:{LISTEN}")
        .replace('url: "http://127.0.0.1:7601/hook"', 'url: "http://127.0.0.1:9/hook"')
    )
    path = os.path.join(d, "lab.yaml")
    open(path, "w").write(text)
    return path


def analyse(log):
    """(outage_ms, failed, acked keys, t_first_fail) from a loadgen CSV."""
    rows = list(csv.DictReader(open(log)))
    acked = [r for r in rows if r["outcome"] == "ok"]
    failed = [r for r in rows if r["outcome"] != "ok"]
    if not failed:
        return 0.0, 0, acked
    first = int(failed[0]["start_us"])
    last = int(failed[-1]["start_us"])
    after = [int(r["start_us"]) for r in acked if int(r["start_us"]) > last]
    end = after[0] if after else last
    return (end - first) / 1000.0, len(failed), acked


def one_run(topo, d, scenario, duration):
    sh(MEDIC, "lab", "down", "--topology", topo, check=False)
    sh(MEDIC, "lab", "up", topo)
    state = os.path.join(d, "state", "controller")
    subprocess.run(["rm", "-rf", state])
    run_log = open(os.path.join(d, f"run-{scenario}.log"), "w")
    medic = subprocess.Popen([MEDIC, "run", topo], stderr=run_log, stdout=subprocess.DEVNULL,
                             env={**os.environ, "NO_COLOR": "1"})
    try:
        for _ in range(100):
            try:
                api("/api/status")
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)  # every check task has run at least once
        app = f"{NET}.14:7001"
        logs = {kind: os.path.join(d, f"{scenario}-{kind}.csv") for kind in ("plain", "wait")}
        clients = [
            subprocess.Popen([LOADGEN, "--addr", app, "--every", "2ms", "--budget", "200ms",
                              "--duration", f"{duration}s", "--prefix", "p", "--log", logs["plain"]],
                             stdout=subprocess.DEVNULL),
            subprocess.Popen([LOADGEN, "--addr", app, "--every", "2ms", "--budget", "200ms",
                              "--duration", f"{duration}s", "--prefix", "w", "--wait-replicas", "1",
                              "--log", logs["wait"]], stdout=subprocess.DEVNULL),
        ]
        time.sleep(3 + random.uniform(0, 0.25))
        if scenario == "process":
            info = sh("redis-cli", "-h", f"{NET}.10", "-p", "9001", "INFO", "server").stdout
            pid = re.search(r"process_id:(\d+)", info).group(1)
            os.kill(int(pid), 9)
        else:
            sh(MEDIC, "lab", "fault", "redis1", "crash", "--topology", topo)
        for c in clients:
            c.wait()
        status = api("/api/status")
        shard = next(s for s in status["shards"] if s["name"] == "r9001")
        master = next(m for m in status["machines"] if m["name"] == shard["master"])
        result = {}
        for kind, log in logs.items():
            outage, failed, acked = analyse(log)
            prefix = "p" if kind == "plain" else "w"
            keys = [f"{prefix}:{r['n']}" for r in acked]
            found = resp_get_many(master["address"], 9001, keys)
            result[kind] = (outage, failed, len(keys) - len(found))
        history = api("/api/history")
        detection = next((h["detection_ms"] for h in history if h.get("detection_ms") is not None), None)
        return result, detection
    finally:
        medic.terminate()
        medic.wait()
        sh(MEDIC, "lab", "down", "--topology", topo, check=False)


def spread(values):
    if not values:
        return "-"
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scenarios", default="process,machine")
    p.add_argument("--smoke", action="store_true", help="one short run of each, as CI does")
    a = p.parse_args()
    runs, duration = (1, 7) if a.smoke else (a.runs, 10)
    scenarios = a.scenarios.split(",")
    subprocess.run(["cargo", "build", "-q", "--locked", "-p", "medic", "-p", "medic-bench"], check=True, cwd=ROOT)
    results = {s: [] for s in scenarios}
    with tempfile.TemporaryDirectory() as d:
        topo = topology(d)
        for i in range(runs):
            for s in scenarios:
                r, detection = one_run(topo, d, s, duration)
                results[s].append((r, detection))
                print(f"run {i + 1} {s:<8} detection {detection} ms; plain: outage {r['plain'][0]:.0f} ms, "
                      f"failed {r['plain'][1]}, lost {r['plain'][2]}; WAIT 1: outage {r['wait'][0]:.0f} ms, "
                      f"failed {r['wait'][1]}, lost {r['wait'][2]}", flush=True)
    print()
    print(f"{'scenario':<9} {'runs':>4}  {'detection ms':>16}  {'outage ms (plain)':>18}  {'failed':>14}  "
          f"{'lost (plain)':>12}  {'lost (WAIT 1)':>13}   min / median / max")
    for s in scenarios:
        rs = results[s]
        det = [d for _, d in rs if d is not None]
        print(f"{s:<9} {len(rs):>4}  {spread(det):>16}  {spread([r['plain'][0] for r, _ in rs]):>18}  "
              f"{spread([r['plain'][1] for r, _ in rs]):>14}  {spread([r['plain'][2] for r, _ in rs]):>12}  "
              f"{spread([r['wait'][2] for r, _ in rs]):>13}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/failover.py needs root (the lab's network namespaces)")
    main()
