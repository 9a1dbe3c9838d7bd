#!/usr/bin/env python3
"""Client-visible outage and lost writes when a master fails: medic, Redis Sentinel, and the
seed's HAProxy-backup-and-watcher design, on the same deployment.

The deployment (`--setup issue`, the default): issue 7's — two redis machines each running
two shards (r9001, r9002; redis1 masters, redis2 replicas) and one HAProxy, as lab machines
(network namespaces on a bridge of their own, each with its address and sshd); medic runs on
the `static` provider with their fixed addresses. `--setup lab`: examples/lab.yaml as it is
(two proxies, the app proxy, DNS), the clients writing through the app proxy.

For each run: a fresh lab, the design started, two `loadgen` clients writing to r9001 through
HAProxy every 2 ms with a 200 ms budget — one plain, one following each write with
`WAIT 1 100` — then, 3 s in at a random point of medic's 250 ms check cycle, the fault:

  process  SIGKILL of the r9001 master's redis-server (the machine stays up: refused)
  restart  the same, and 5 s later the killed master is started again, empty, as a master
           (what a supervisor that restarts redis does)
  machine  the master's machine crashes (its link goes down, its processes die: silent)
  switchover  `medic switchover r9001` (medic's designs only): the planned move of the master

Designs (`--designs`), each on a fresh lab:
  medic         `medic run`, HAProxy as medic's playbook renders it by default
  medic-seedha  `medic run`, HAProxy with the seed's settings (inter 5s fall 3, HAProxy's
                defaults otherwise: 3 retries to the same server, no redispatch)
  sentinel1000  three sentinels on the monitor host (quorum 2, down-after-milliseconds 1000),
                HAProxy with the widely published `role:master` tcp-check every 500 ms
  sentinel500   the same with down-after-milliseconds 500 and the check every 250 ms
  seed          seed 003's design: HAProxy with the replica as `backup`, `inter 5s fall 3`,
                and a watcher that promotes the replica after three failed 5 s polls

After the run every acknowledged key is read back from the shard's final master. Reported per
scenario, min / median / max over the runs: the unavailability window (from the start of the
first failed write to the completion of the first write after which all succeed), failed
writes, acknowledged writes lost.

  bench/failover.py [--runs 5] [--scenarios process,restart,machine] [--setup issue|lab]
                    [--designs medic,medic-seedha,sentinel1000,sentinel500,seed]
                    [--check-interval 100ms] [--smoke]

Needs root (the lab). Designs and scenarios are interleaved run by run.
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


def ssh(d, host, command):
    key = os.path.join(d, "state", "id_ed25519")
    return subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", f"medic@{host}", command],
        capture_output=True, text=True, timeout=30)


def haproxy_cfg(design, addr):
    """A whole haproxy.cfg for the proxy at `addr` in a non-medic design."""
    if design == "seed":
        check = "    option tcp-check\n    tcp-check send PING\\r\\n\n    tcp-check expect string +PONG\n"
        servers = (f"    server redis1 {NET}.10:{{port}} check inter 5s fall 3\n"
                   f"    server redis2 {NET}.11:{{port}} check inter 5s fall 3 backup\n")
    else:
        inter = "500ms" if design == "sentinel1000" else "250ms"
        check = ("    option tcp-check\n    tcp-check connect\n"
                 "    tcp-check send PING\\r\\n\n    tcp-check expect string +PONG\n"
                 "    tcp-check send info\\ replication\\r\\n\n    tcp-check expect string role:master\n"
                 "    tcp-check send QUIT\\r\\n\n    tcp-check expect string +OK\n")
        servers = (f"    server redis1 {NET}.10:{{port}} check inter {inter}\n"
                   f"    server redis2 {NET}.11:{{port}} check inter {inter}\n")
    out = ("global\n    daemon\n    pidfile /run/haproxy/haproxy.pid\n"
           "    stats socket /run/haproxy/admin.sock mode 600 level admin\n"
           f"    stats socket ipv4@{addr}:9999 level admin\n"
           "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n"
           "    timeout server 30s\n    timeout check 1s\n")
    for shard, listen in (("r9001", 8001), ("r9002", 8002)):
        port = int(shard[1:])
        out += (f"frontend fe-{shard}\n    bind {addr}:{listen}\n    default_backend redis-{shard}\n"
                f"backend redis-{shard}\n{check}{servers.format(port=port)}")
    return out


def setup_design(d, design):
    """Replaces the proxies' configuration and starts what the design runs beside redis."""
    procs = []
    if design.startswith("medic"):
        return procs
    for addr in (f"{NET}.{h}" for h in PROXIES[SETUP]):
        cfg = haproxy_cfg(design, addr)
        subprocess.run(["ssh", "-i", os.path.join(d, "state", "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"medic@{addr}",
                        "cat > /etc/haproxy/haproxy.cfg && haproxy -c -q -f /etc/haproxy/haproxy.cfg && "
                        "haproxy -f /etc/haproxy/haproxy.cfg -sf $(cat /run/haproxy/haproxy.pid)"],
                       input=cfg, text=True, check=True, capture_output=True, timeout=30)
    if design.startswith("sentinel"):
        down = 1000 if design == "sentinel1000" else 500
        for i in range(3):
            sd = os.path.join(d, f"sentinel{i}")
            os.makedirs(sd, exist_ok=True)
            conf = os.path.join(sd, "sentinel.conf")
            open(conf, "w").write(
                f"port {26379 + i}\nbind {NET}.1\nsentinel announce-ip {NET}.1\ndir {sd}\n"
                f"sentinel monitor r9001 {NET}.10 9001 2\n"
                f"sentinel down-after-milliseconds r9001 {down}\n"
                "sentinel failover-timeout r9001 10000\nsentinel parallel-syncs r9001 1\n")
            procs.append(subprocess.Popen(["redis-server", conf, "--sentinel"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(2)  # the sentinels find each other through the master
    if design == "seed":
        procs.append(SeedWatcher())
    return procs


class SeedWatcher:
    """The seed's failover script: poll the master every 5 s; after three failures in a row,
    promote the replica (REPLICAOF NO ONE). HAProxy's `backup` server then takes the traffic."""

    def __init__(self):
        import threading
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        fails = 0
        while not self.stop.wait(5):
            try:
                ok = subprocess.run(["redis-cli", "-h", f"{NET}.10", "-p", "9001", "PING"],
                                    capture_output=True, text=True, timeout=1).stdout.strip() == "PONG"
            except subprocess.TimeoutExpired:
                ok = False
            fails = 0 if ok else fails + 1
            if fails >= 3:
                subprocess.run(["redis-cli", "-h", f"{NET}.11", "-p", "9001", "REPLICAOF", "NO", "ONE"],
                               capture_output=True)
                return

    def terminate(self):
        self.stop.set()

    def wait(self):
        self.thread.join(timeout=10)


CHECK = None  # e.g. "100ms": medic's redis check interval for this run (the example's is 250ms)
HAPROXY = None  # e.g. "{timeout_connect: 50ms, retries: 8}": proxies.haproxy for the `medic` design
SETUP = "issue"  # "issue": two redis machines and one HAProxy, medic on the static provider;
                 # "lab": examples/lab.yaml as it is (two proxies, the app proxy, DNS)
PROXIES = {"issue": [12], "lab": [12, 13]}
CLIENT = {"issue": 8001, "lab": 7001}  # the port the load clients write to, on the machine below
CLIENT_HOST = {"issue": 12, "lab": 14}

# HAProxy's settings as seed 003 ran them (`inter 5s fall 3`, nothing else set: HAProxy's
# defaults of 3 retries to the same server, no redispatch), for medic's `medic-seedha` design.
SEED_HAPROXY = ("  haproxy: {check_interval: 5s, check_fall: 3, check_rise: 2, timeout_connect: 5s, "
                "retries: 3, redispatch: false, shutdown_sessions_on_down: false}\n")

ISSUE_TOPOLOGY = """name: bench
provider:
  local: {subnet: NET.0/24, bridge: mbfail0, state_dir: STATE}
playbooks: ROOT/playbooks
ssh: {user: medic, key: STATE/id_ed25519}
amis:
  - {name: redis, definition: ROOT/amis/redis.yaml}
  - {name: haproxy, definition: ROOT/amis/haproxy.yaml}
machines:
  - {name: redis1, role: redis, ami: redis}
  - {name: redis2, role: redis, ami: redis}
  - {name: haproxy1, role: haproxy, ami: haproxy}
  - {name: monitor, role: monitor}
shards:
  - {name: r9001, port: 9001, master: redis1, replicas: [redis2]}
  - {name: r9002, port: 9002, master: redis1, replicas: [redis2]}
proxies:
  machines: [haproxy1]
  runtime_api: {port: 9999}
  frontends:
    - {listen: 8001, shard: r9001}
    - {listen: 8002, shard: r9002}
checks:
  redis: {interval: 250ms, timeout: 200ms, fall: 3, rise: 2, jitter: 20ms}
  haproxy: {interval: 500ms, timeout: 400ms, fall: 3, rise: 2, jitter: 50ms}
policy:
  remediation: [restart_process, failover, replace_machine]
controller:
  listen: 127.0.0.1:LISTEN
  state_dir: STATE/controller
"""


def with_checks(text):
    if not CHECK:
        return text
    ms = int(CHECK.rstrip("ms"))
    return text.replace("redis: {interval: 250ms, timeout: 200ms, fall: 3, rise: 2, jitter: 20ms}",
                        f"redis: {{interval: {ms}ms, timeout: {ms * 4 // 5}ms, fall: 3, rise: 2, jitter: {ms // 10}ms}}")


def topology(d):
    """Writes the topologies of a run: `lab` (for `medic lab up`), `medic` (for `medic run`),
    and both again with the seed's HAProxy settings (`-seedha`). Returns their paths by name."""
    state = os.path.join(d, "state")
    if SETUP == "issue":
        lab = (ISSUE_TOPOLOGY.replace("NET", NET).replace("STATE", state).replace("ROOT", ROOT)
               .replace("LISTEN", str(LISTEN)))
        # medic itself runs on the static provider, with the lab machines' fixed addresses
        # (the lab hands out .10, .11, .12 in the order of `machines`).
        static = lab.replace(f"provider:\n  local: {{subnet: {NET}.0/24, bridge: mbfail0, state_dir: {state}}}\n",
                             "provider: static\n")
        for name, host in (("redis1", 10), ("redis2", 11), ("haproxy1", 12)):
            static = static.replace(f"{{name: {name}, role: ", f"{{name: {name}, address: {NET}.{host}, role: ")
        static = static.replace("{name: monitor, role: monitor}", f"{{name: monitor, role: monitor, address: {NET}.1}}")
        # The lab's host keys are in its own record, which the static provider does not read.
        static = static.replace("/id_ed25519}", "/id_ed25519, host_keys: accept-new}")
        static = static.replace("remediation: [restart_process, failover, replace_machine]",
                                "remediation: [restart_process, failover]")
    else:
        lab = (
            open(os.path.join(ROOT, "examples/lab.yaml")).read()
            .replace("subnet: 10.77.0.0/24", f"subnet: {NET}.0/24")
            .replace("bridge: medic0", "bridge: mbfail0")
            .replace("server: 10.77.0.2:53", f"server: {NET}.2:53")
            .replace("/var/lib/medic/lab", state)
            .replace("../playbooks", os.path.join(ROOT, "playbooks"))
            .replace("../amis", os.path.join(ROOT, "amis"))
            .replace("listen: 127.0.0.1:7600", f"listen: 127.0.0.1:{LISTEN}")
            .replace('url: "http://127.0.0.1:7601/hook"', 'url: "http://127.0.0.1:9/hook"')
        )
        static = lab
    static = with_checks(static)

    def seed_haproxy(text):
        return text.replace("    - {listen: 8002, shard: r9002}\n",
                            "    - {listen: 8002, shard: r9002}\n" + SEED_HAPROXY, 1)

    if HAPROXY:
        settings = f"  haproxy: {HAPROXY}\n"
        lab, static = (t.replace("    - {listen: 8002, shard: r9002}\n",
                                 "    - {listen: 8002, shard: r9002}\n" + settings, 1) for t in (lab, static))
    paths = {}
    for name, text in (("lab", lab), ("lab-seedha", seed_haproxy(lab)), ("medic", static),
                       ("medic-seedha", seed_haproxy(static))):
        paths[name] = os.path.join(d, f"{name}.yaml")
        open(paths[name], "w").write(text)
    return paths


def analyse(log):
    """(outage_ms, failed, acked rows) from a loadgen CSV. The window runs from the start of the
    first failed write to the completion of the first write after which every write succeeds:
    a write held by HAProxy until the failover is done counts as outage until it completes."""
    rows = list(csv.DictReader(open(log)))
    acked = [r for r in rows if r["outcome"] == "ok"]
    failed = [r for r in rows if r["outcome"] != "ok"]
    if not failed:
        return 0.0, 0, acked
    first = int(failed[0]["start_us"])
    last = int(failed[-1]["start_us"])
    after = [int(r["start_us"]) + int(r["latency_us"]) for r in acked if int(r["start_us"]) > last]
    end = after[0] if after else last
    return (end - first) / 1000.0, len(failed), acked


def redis_role(host):
    """`ROLE` of r9001 on `host`, as words; [] if it does not answer (a crashed machine is
    silent: redis-cli would wait for the kernel's connect timeout)."""
    try:
        return subprocess.run(["redis-cli", "-h", host, "-p", "9001", "ROLE"],
                              capture_output=True, text=True, timeout=3).stdout.split()
    except subprocess.TimeoutExpired:
        return []


def final_master(design):
    """The address of r9001's master when the run ends."""
    if design.startswith("medic"):
        status = api("/api/status")
        shard = next(s for s in status["shards"] if s["name"] == "r9001")
        return next(m for m in status["machines"] if m["name"] == shard["master"])["address"]
    # Whoever says so; with two (a restarted empty master), the one the sentinels chose.
    masters = []
    for host in (f"{NET}.10", f"{NET}.11"):
        role = redis_role(host)
        if role[:1] == ["master"]:
            masters.append(host)
    if design.startswith("sentinel"):
        r = subprocess.run(["redis-cli", "-h", f"{NET}.1", "-p", "26379", "SENTINEL",
                            "get-master-addr-by-name", "r9001"], capture_output=True, text=True)
        chosen = r.stdout.split()
        if chosen:
            return chosen[0]
    return masters[-1] if masters else f"{NET}.11"


def one_run(topos, d, design, scenario, duration):
    # medic-seedha: the playbooks render HAProxy with the seed's settings instead of medic's.
    seedha = design == "medic-seedha"
    topo = topos["lab-seedha" if seedha else "lab"]
    medic_topo = topos["medic-seedha" if seedha else "medic"]
    sh(MEDIC, "lab", "down", "--topology", topo, check=False)
    sh(MEDIC, "lab", "up", topo)
    state = os.path.join(d, "state", "controller")
    subprocess.run(["rm", "-rf", state])
    run_log = open(os.path.join(d, f"run-{design}-{scenario}.log"), "w")
    medic = None
    extra = []
    if design.startswith("medic"):
        medic = subprocess.Popen([MEDIC, "run", medic_topo], stderr=run_log, stdout=subprocess.DEVNULL,
                                 env={**os.environ, "NO_COLOR": "1"})
    else:
        extra = setup_design(d, design)
    try:
        for _ in range(100):
            if medic is None:
                break
            try:
                api("/api/status")
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1.0)  # every check has run at least once
        app = f"{NET}.{CLIENT_HOST[SETUP]}:{CLIENT[SETUP]}"
        logs = {kind: os.path.join(d, f"{design}-{scenario}-{kind}.csv") for kind in ("plain", "wait")}
        clients = [
            subprocess.Popen([LOADGEN, "--addr", app, "--every", "2ms", "--budget", "200ms",
                              "--duration", f"{duration}s", "--prefix", "p", "--log", logs["plain"]],
                             stdout=subprocess.DEVNULL),
            subprocess.Popen([LOADGEN, "--addr", app, "--every", "2ms", "--budget", "200ms",
                              "--duration", f"{duration}s", "--prefix", "w", "--wait-replicas", "1",
                              "--log", logs["wait"]], stdout=subprocess.DEVNULL),
        ]
        time.sleep(3 + random.uniform(0, 0.25))
        if scenario in ("process", "restart"):
            info = sh("redis-cli", "-h", f"{NET}.10", "-p", "9001", "INFO", "server").stdout
            pid = re.search(r"process_id:(\d+)", info).group(1)
            os.kill(int(pid), 9)
            if scenario == "restart":
                time.sleep(5)
                # Empty (persistence is off) and as a master, as its configuration says.
                ssh(d, f"{NET}.10", "redis-server /etc/redis/redis-9001.conf")
        elif scenario == "switchover":
            sh(MEDIC, "switchover", "r9001", "-t", medic_topo)
        else:
            sh(MEDIC, "lab", "fault", "redis1", "crash", "--topology", topo)
        for c in clients:
            c.wait()
        master = {"address": final_master(design)}
        result = {}
        for kind, log in logs.items():
            outage, failed, acked = analyse(log)
            prefix = "p" if kind == "plain" else "w"
            keys = [f"{prefix}:{r['n']}" for r in acked]
            found = resp_get_many(master["address"], 9001, keys)
            # The longest acknowledged write: a switchover's pause shows here, not as failures.
            longest = max((int(r["latency_us"]) for r in acked), default=0) / 1000.0
            result[kind] = (outage, failed, len(keys) - len(found), longest)
        # What the old master is now (restart: medic made it a replica before the supervisor's
        # restart could bring it back empty as a master).
        if scenario != "machine":
            role = redis_role(f"{NET}.10")
            result["old_master_role"] = role[0] if role else "down"
        detection = None
        if medic is not None:
            history = api("/api/history")
            first = next((h for h in history if h.get("detection_ms") is not None), None)
            if first is not None:
                # From detection to the recovery's end: for a machine on the lab provider, the
                # replacement launched, configured, synced and registered on every proxy.
                ended = first.get("ended_ms")
                detection = {
                    "detection_ms": first["detection_ms"],
                    "recovery_ms": ended - first["started_ms"] if ended else None,
                    "steps": [(st["kind"], st.get("duration_ms")) for st in first.get("steps", [])],
                }
                with open(os.path.join(d, f"history-{design}-{scenario}.json"), "w") as f:
                    json.dump(first, f)
        return result, detection
    finally:
        for p in ([medic] if medic else []) + extra:
            p.terminate()
            p.wait()
        sh(MEDIC, "lab", "down", "--topology", topo, check=False)


def spread(values):
    if not values:
        return "-"
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scenarios", default="process,restart,machine")
    p.add_argument("--designs", default="medic,medic-seedha,sentinel1000,sentinel500,seed")
    p.add_argument("--smoke", action="store_true", help="one short run of each, as CI does")
    p.add_argument("--setup", choices=["issue", "lab"], default="issue",
                   help="issue: two redis machines, one HAProxy, medic on the static provider (default); "
                        "lab: examples/lab.yaml, through the app proxy")
    p.add_argument("--haproxy", help="proxies.haproxy settings for the medic design, as YAML flow, "
                   "e.g. '{timeout_connect: 50ms, retries: 8}' (default: the playbook's defaults)")
    p.add_argument("--check-interval", help="medic's redis check interval, e.g. 100ms (default: the example's 250ms)")
    a = p.parse_args()
    global CHECK, SETUP, HAPROXY
    CHECK = a.check_interval
    HAPROXY = a.haproxy
    SETUP = a.setup
    runs, duration = (1, 7) if a.smoke else (a.runs, 12)
    scenarios = a.scenarios.split(",")
    designs = a.designs.split(",")
    if a.smoke and a.designs == p.get_default("designs"):
        designs = ["medic", "sentinel1000"]

    subprocess.run(["cargo", "build", "-q", "--locked", "-p", "medic", "-p", "medic-bench"], check=True, cwd=ROOT)
    results = {(g, s): [] for g in designs for s in scenarios}
    with tempfile.TemporaryDirectory() as d:
        topos = topology(d)
        for i in range(runs):
            for s in scenarios:
                for g in designs:
                    if s == "switchover" and not g.startswith("medic"):
                        continue
                    # The seed's design needs three 5 s polls (and HAProxy's inter 5s fall 3).
                    r, detection = one_run(topos, d, g, s, 30 if g == "seed" and not a.smoke else duration)
                    results[(g, s)].append((r, detection))
                    det = detection or {}
                    print(f"run {i + 1} {g:<12} {s:<8} detection {det.get('detection_ms')} ms, recovery "
                          f"{det.get('recovery_ms')} ms; plain: outage {r['plain'][0]:.0f} ms, "
                          f"failed {r['plain'][1]}, lost {r['plain'][2]}; WAIT 1: outage {r['wait'][0]:.0f} ms, "
                          f"failed {r['wait'][1]}, lost {r['wait'][2]}; longest write {r['plain'][3]:.0f} ms; "
                          f"old master now {r.get('old_master_role', '-')}", flush=True)
                    if det.get("steps") and i == 0:
                        print("      steps (ms): " + ", ".join(f"{k} {v}" for k, v in det["steps"]), flush=True)
    print()
    print(f"{'design':<12} {'scenario':<9} {'runs':>4}  {'outage ms (plain)':>18}  {'failed':>14}  "
          f"{'lost (plain)':>14}  {'lost (WAIT 1)':>14}  {'outage ms (WAIT 1)':>18}  {'detection ms':>14}  "
          f"{'recovery ms':>16}  {'longest write ms':>18}   min / median / max")
    for g in designs:
        for s in scenarios:
            rs = results[(g, s)]
            if not rs:
                continue

            def of(key):
                return [d[key] for _, d in rs if d and d.get(key) is not None]

            print(f"{g:<12} {s:<9} {len(rs):>4}  {spread([r['plain'][0] for r, _ in rs]):>18}  "
                  f"{spread([r['plain'][1] for r, _ in rs]):>14}  {spread([r['plain'][2] for r, _ in rs]):>14}  "
                  f"{spread([r['wait'][2] for r, _ in rs]):>14}  {spread([r['wait'][0] for r, _ in rs]):>18}  "
                  f"{spread(of('detection_ms')):>14}  {spread(of('recovery_ms')):>16}  "
                  f"{spread([r['plain'][3] for r, _ in rs]):>18}")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/failover.py needs root (the lab's network namespaces)")
    main()
