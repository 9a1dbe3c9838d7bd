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
  proxy    (`--setup lab` only) haproxy1's machine crashes, the app proxy's primary for
           every shard: the clients' writes must move to haproxy2 through the app proxy
  switchover  `medic switchover r9001` (medic's designs only): the planned move of the master

Designs (`--designs`), each on a fresh lab:
  medic         `medic run`, HAProxy as medic's playbook renders it by default
  medic-seedha  `medic run`, HAProxy with the seed's settings (inter 5s fall 3, HAProxy's
                defaults otherwise: 3 retries to the same server, no redispatch)
  sentinel1000  three sentinels on the monitor host (quorum 2, down-after-milliseconds 1000),
                HAProxy with the widely published `role:master` tcp-check every 500 ms
  sentinel500   the same with down-after-milliseconds 500 and the check every 250 ms
  sentinel-script  the strongest Sentinel set-up a careful operator would run: the sentinels
                of sentinel500, each with bench/sentinel-reconfig.py as its
                client-reconfig-script (on a failover it puts every other server of the
                backend in `maint`, shuts their sessions and sets the new master `ready`,
                through each proxy's runtime API), and HAProxy exactly as medic's playbook
                renders it for the medic design (`timeout connect 50ms`, `retries 8`,
                `option redispatch 1`, `on-marked-down shutdown-sessions`, only the master
                ready)
  seed          seed 003's design: HAProxy with the replica as `backup`, `inter 5s fall 3`,
                and a watcher that promotes the replica after three failed 5 s polls

Reported per run and, per design and scenario, as min / median / max over the runs:

  outage   from the fault itself — the clock read just before the kill, or the last moment
           the crashed machine's link was seen up — to the completion of the first write that
           started after the fault and after the last failed write and completed OK: the
           client's writes keep succeeding from then on. Loadgen's CSV times are offsets on
           the monotonic clock from the client's start; the client's start is placed at the
           latest moment it can have been (its first key seen on the master, less that write's
           offset), so a measured outage is never shorter than the true one, and longer by at
           most the "timing" bound printed with each run. A client whose writes have not
           come back for good, or came back less than 1 s before the run ended, is
           NOT RECOVERED: never a number. Min / median / max are over the recovered runs, with
           the count of the others beside them.
  lost     acknowledged writes that cannot be read back through the proxy (the clients' own
           path) at the end, read on as many connections as the shard has servers (so HAProxy's
           round robin reaches each usable one) and counted lost if any connection lacks them;
           UNREADABLE if the proxy serves no reads. Beside it, per redis server of the shard
           (the two it started on and any server a proxy's backend lists), how many
           acknowledged keys that server lacks, so a divergent server shows.
  failed   writes that did not complete OK.

  bench/failover.py [--runs 5] [--scenarios process,restart,machine,proxy] [--setup issue|lab]
                    [--designs medic,medic-seedha,sentinel1000,sentinel500,sentinel-script,seed]
                    [--check-interval 100ms] [--smoke]

Needs root (the lab). Designs and scenarios are interleaved run by run.
"""

import argparse
import contextlib
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
RECONFIG_SCRIPT = os.path.join(ROOT, "bench", "sentinel-reconfig.py")
NET = "10.76.240"
LISTEN = 7690
RUNTIME_API = 9999  # every proxy's HAProxy runtime API, in every design
SHARD_PORT = 9001  # r9001, the shard the clients write to and the fault hits
SENTINEL_DOWN_MS = {"sentinel1000": 1000, "sentinel500": 500, "sentinel-script": 500}
# The lines medic's playbook (playbooks/haproxy.yaml) renders from proxies.haproxy's defaults
# (docs/topology.md) that make HAProxy hold a client through a failover instead of failing it.
# sentinel-script keeps the proxies as `medic lab up` rendered them and checks these are there.
MEDIC_HAPROXY_LINES = ("timeout connect 50ms", "retries 8", "option redispatch 1",
                       "on-marked-down shutdown-sessions")
PREFIX = {"plain": "p", "wait": "w"}  # each client's keys: `p:N`, `w:N`
STEADY_S = 1.0  # a recovery counts only if the writes then kept succeeding this long
# What --smoke asserts: every run of these designs recovered (see must_recover) and lost nothing.
ASSERTED = ("medic", "sentinel-script")


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def api(path):
    with socket.create_connection(("127.0.0.1", LISTEN), timeout=2) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def clock():
    """CLOCK_MONOTONIC: the clock of Rust's `Instant`, on which loadgen's CSV times are offsets
    from the client's own start."""
    return time.monotonic()


class Unreadable(Exception):
    """A server (or the proxy) that could not answer reads: refused, silent, closed, or a redis
    error such as LOADING."""


def resp_get_many(host, port, keys, timeout=5):
    """GET every key in one pipelined connection; returns the set of keys that exist. Raises
    Unreadable if the connection fails or redis answers an error."""
    found = set()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            f = s.makefile("rb")
            for i in range(0, len(keys), 1000):
                chunk = keys[i : i + 1000]
                s.sendall(b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k.encode()) for k in chunk))
                for k in chunk:
                    line = f.readline()
                    if not line:
                        raise Unreadable("closed")
                    if line.startswith(b"-"):
                        raise Unreadable(line[1:].split(b" ")[0].decode().strip())
                    if line.startswith(b"$-1"):
                        continue
                    f.readline()
                    found.add(k)
    except ConnectionRefusedError:
        raise Unreadable("refused") from None
    except TimeoutError:
        raise Unreadable("silent") from None
    except OSError as e:
        raise Unreadable(type(e).__name__) from None
    return found


def runtime_api(host, command):
    """One command on the HAProxy runtime API of the proxy at `host`; returns its answer."""
    with socket.create_connection((host, RUNTIME_API), timeout=2) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


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
    """Configures the proxies for the design and starts what it runs beside redis."""
    procs = []
    if design.startswith("medic"):
        return procs
    if design == "sentinel-script":
        check_medic_haproxy(d)
    else:
        for addr in (f"{NET}.{h}" for h in PROXIES[SETUP]):
            replace_haproxy_cfg(d, addr, haproxy_cfg(design, addr))
    if design.startswith("sentinel"):
        procs += start_sentinels(d, design)
    if design == "seed":
        procs.append(SeedWatcher())
    return procs


def replace_haproxy_cfg(d, addr, cfg):
    """Writes the proxy's haproxy.cfg and reloads HAProxy with it."""
    subprocess.run(["ssh", "-i", os.path.join(d, "state", "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"medic@{addr}",
                    "cat > /etc/haproxy/haproxy.cfg && haproxy -c -q -f /etc/haproxy/haproxy.cfg && "
                    "haproxy -f /etc/haproxy/haproxy.cfg -sf $(cat /run/haproxy/haproxy.pid)"],
                   input=cfg, text=True, check=True, capture_output=True, timeout=30)


def check_medic_haproxy(d):
    """sentinel-script keeps the proxies exactly as medic's playbook rendered them in `medic lab
    up` (the medic design's HAProxy, the replica `disabled`); fails unless medic's settings are
    there. With --haproxy both designs get those settings instead, and nothing is checked."""
    if HAPROXY:
        return
    for addr in (f"{NET}.{h}" for h in PROXIES[SETUP]):
        cfg = ssh(d, addr, "cat /etc/haproxy/haproxy.cfg").stdout
        missing = [line for line in MEDIC_HAPROXY_LINES if line not in cfg]
        if missing:
            raise RuntimeError(f"{addr}'s haproxy.cfg lacks medic's {missing}")


def start_sentinels(d, design):
    """Three sentinels on the monitor host (this one), quorum 2. With sentinel-script each runs
    bench/sentinel-reconfig.py on a failover, given every proxy's runtime API; the sentinels'
    output (and so the script's log) goes to sentinelN/sentinel.log."""
    env = dict(os.environ)
    script = ""
    if design == "sentinel-script":
        script = f"sentinel client-reconfig-script r9001 {RECONFIG_SCRIPT}\n"
        env["HAPROXY_RUNTIME_APIS"] = ",".join(f"{NET}.{h}:{RUNTIME_API}" for h in PROXIES[SETUP])
        # The script's `python3` is the interpreter running this benchmark, not a wrapper that
        # would add its own start-up to every failover.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    procs = []
    for i in range(3):
        sd = os.path.join(d, f"sentinel{i}")
        os.makedirs(sd, exist_ok=True)
        conf = os.path.join(sd, "sentinel.conf")
        open(conf, "w").write(
            f"port {26379 + i}\nbind {NET}.1\nsentinel announce-ip {NET}.1\ndir {sd}\n"
            f"sentinel monitor r9001 {NET}.10 {SHARD_PORT} 2\n"
            f"sentinel down-after-milliseconds r9001 {SENTINEL_DOWN_MS[design]}\n"
            "sentinel failover-timeout r9001 10000\nsentinel parallel-syncs r9001 1\n" + script)
        with open(os.path.join(sd, "sentinel.log"), "w") as log:
            procs.append(subprocess.Popen(["redis-server", conf, "--sentinel"], stdout=log,
                                          stderr=subprocess.STDOUT, env=env))
    time.sleep(2)  # the sentinels find each other through the master
    return procs


def reconfig_script_log(d):
    """The lines bench/sentinel-reconfig.py logged in this run, from the sentinels' output."""
    lines = []
    for i in range(3):
        path = os.path.join(d, f"sentinel{i}", "sentinel.log")
        if os.path.exists(path):
            lines += [line.rstrip("\n") for line in open(path) if line.startswith("sentinel-reconfig ")]
    return sorted(lines, key=lambda line: line.split()[1])


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
  # On the network: the Sentinel designs' scripts and this benchmark's own reads reach it
  # directly (medic's default, reach: ssh, keeps it on the proxy's loopback).
  runtime_api: {port: 9999, reach: network}
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


def wall_time(t):
    """HH:MM:SS.mmm of a time.time(), for finding the fault in medic's and the sentinels' logs."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def start_clients(app, logs, duration):
    """Starts the two loadgen clients (plain, and WAIT 1 after each write); returns
    {kind: (process, launched)}, `launched` the clock just before it started: a lower bound of
    the client's own start (t0), from which its CSV counts."""
    clients = {}
    for kind, extra in (("plain", []), ("wait", ["--wait-replicas", "1"])):
        launched = clock()
        clients[kind] = (subprocess.Popen([LOADGEN, "--addr", app, "--every", "2ms", "--budget", "200ms",
                                           "--duration", f"{duration}s", "--prefix", PREFIX[kind], *extra,
                                           "--log", logs[kind]], stdout=subprocess.DEVNULL), launched)
    return clients


def first_writes_seen(timeout=5.0):
    """Polls r9001's first master (redis1) until each client's first key (`p:1`, `w:1`) exists;
    returns {kind: clock when seen}. That write started before it was seen, so `seen` less the
    write's start offset in the CSV is an upper bound of the client's t0."""
    seen = {}
    deadline = clock() + timeout
    with socket.create_connection((f"{NET}.10", SHARD_PORT), timeout=2) as s:
        f = s.makefile("rb")
        while len(seen) < len(PREFIX):
            pending = [kind for kind in PREFIX if kind not in seen]
            s.sendall(b"".join(b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s:1\r\n" % (len(PREFIX[k]) + 2, PREFIX[k].encode())
                               for k in pending))
            replies = [f.readline() for _ in pending]
            at = clock()
            seen.update({k: at for k, r in zip(pending, replies) if r == b":1\r\n"})
            if at > deadline and len(seen) < len(PREFIX):
                raise RuntimeError(f"no first write from the {sorted(set(PREFIX) - set(seen))} client on "
                                   f"{NET}.10:{SHARD_PORT} within {timeout} s: the deployment does not serve")
            time.sleep(0.0002)
    return seen


def kill_master():
    """SIGKILLs r9001's master (redis1's redis-server); returns (before, after) on the clock."""
    info = sh("redis-cli", "-h", f"{NET}.10", "-p", str(SHARD_PORT), "INFO", "server").stdout
    pid = int(re.search(r"process_id:(\d+)", info).group(1))
    before = clock()
    os.kill(pid, 9)
    return before, clock()


def bridge_links_up():
    """{link: up} for the lab bridge's ports: the host's ends of the lab machines' links."""
    links = {}
    for link in os.listdir("/sys/class/net/mbfail0/brif"):
        try:
            links[link] = bool(int(open(f"/sys/class/net/{link}/flags").read(), 16) & 1)
        except OSError:
            continue
    return links


def crash_machine(topo, machine="redis1"):
    """`medic lab fault MACHINE crash`, which takes the machine's link down first (silence), then
    kills its processes. Returns (before, after): the last moment the link was seen up and the
    first it was seen down, watching the bridge while the command runs."""
    up = {link for link, is_up in bridge_links_up().items() if is_up}
    last_up = clock()
    fault = subprocess.Popen([MEDIC, "lab", "fault", machine, "crash", "--topology", topo],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        at = clock()
        if any(not is_up for link, is_up in bridge_links_up().items() if link in up):
            break
        if fault.poll() is not None:
            raise RuntimeError(f"`medic lab fault {machine} crash` took no link down: {fault.stderr.read()}")
        last_up = at
    down = clock()
    if fault.wait() != 0:
        raise RuntimeError(f"`medic lab fault {machine} crash` failed: {fault.stderr.read()}")
    return last_up, down


def inject_fault(scenario, topo, medic_topo):
    """The scenario's fault; returns (before, after) on the clock, the fault in between."""
    if scenario in ("process", "restart"):
        return kill_master()
    if scenario == "switchover":
        before = clock()
        sh(MEDIC, "switchover", "r9001", "-t", medic_topo)
        return before, clock()
    if scenario == "proxy":
        return crash_machine(topo, "haproxy1")
    return crash_machine(topo)


def analyse(log, t0, fault):
    """One client's run from its loadgen CSV, `t0` and `fault` on the clock. Outage: from the
    fault to the completion of the first write that started after the fault and after the last
    failed write, and completed OK (a write HAProxy holds until the failover is done counts as
    outage until it completes); None — NOT RECOVERED — if there is none, or if the run did not
    go on for STEADY_S after it. Returns {outage_ms, failed, early (failures over before the
    fault), acked (rows), longest_ms (the longest acknowledged write)}."""
    with open(log) as f:
        records = list(csv.DictReader(f))
    rows = [(int(r["start_us"]), int(r["latency_us"]), r["outcome"]) for r in records]
    fault_us = (fault - t0) * 1e6
    failed = [(start, lat) for start, lat, outcome in rows if outcome != "ok"]
    since = max([fault_us] + [start + 1 for start, lat in failed if start + lat > fault_us])
    end = next((start + lat for start, lat, outcome in rows if outcome == "ok" and start >= since), None)
    last = rows[-1][0] + rows[-1][1] if rows else 0
    recovered = end is not None and last - end >= STEADY_S * 1e6
    acked = [r for r in records if r["outcome"] == "ok"]
    return {
        "outage_ms": (end - fault_us) / 1000.0 if recovered else None,
        "failed": len(failed),
        "early": sum(1 for start, lat in failed if start + lat <= fault_us),
        "acked": acked,
        # The longest acknowledged write: a switchover's pause shows here, not as failures.
        "longest_ms": max((int(r["latency_us"]) for r in acked), default=0) / 1000.0,
    }


def outages(logs, clients, seen, before, after):
    """Each client's analysis against the fault (between `before` and `after` on the clock),
    and `timing_ms`: how much longer than the truth an outage may be (never shorter)."""
    result, slack = {}, 0.0
    for kind, log in logs.items():
        t0, t0_slack = client_t0(log, clients[kind][1], seen[kind])
        # The fault's earliest moment against the client's latest start: never too short.
        result[kind] = analyse(log, t0, before)
        slack = max(slack, after - before + t0_slack)
    result["timing_ms"] = slack * 1000.0
    return result


def client_t0(log, launched, seen):
    """(t0, slack): the latest the client can have started on the clock — its first write was
    seen on the master at `seen`, `start_us` after t0 — and how much earlier it may have
    (it started after `launched`)."""
    with open(log) as f:
        first = next(csv.DictReader(f))
    t0 = seen - int(first["start_us"]) / 1e6
    return t0, max(0.0, t0 - launched)


def shard_servers():
    """{address: name} of r9001's redis servers: the two it started on, and every server of its
    backend on each proxy (a replacement's among them), as the proxies' runtime API lists them.
    Not what any design says the master is."""
    servers = {f"{NET}.10": "redis1", f"{NET}.11": "redis2"}
    for host in (f"{NET}.{h}" for h in PROXIES[SETUP]):
        try:
            lines = runtime_api(host, "show servers state redis-r9001").splitlines()
        except OSError:
            continue
        header = next((line[2:].split() for line in lines if line.startswith("# ")), [])
        for line in lines:
            row = dict(zip(header, line.split()))
            if header and not line.startswith("#") and len(row) == len(header) and row["srv_addr"] not in servers:
                name = row["srv_name"]
                servers[row["srv_addr"]] = name if name not in servers.values() else f"{name}@{row['srv_addr']}"
    return servers


def read_through_proxy(app, keys, connections, patience=5.0):
    """The keys that some client connection through the proxy at `app` cannot read: each of
    `connections` fresh connections reads them all. None if the proxy serves no reads within
    `patience` seconds."""
    host, port = app.rsplit(":", 1)
    missing = set()
    for _ in range(connections):
        deadline = clock() + patience
        while True:
            try:
                missing |= set(keys) - resp_get_many(host, int(port), keys)
                break
            except Unreadable:
                if clock() > deadline:
                    return None
                time.sleep(0.25)
    return missing


def read_back(app, keys_by_kind):
    """Acknowledged writes read back at the end. Per client kind: `lost`, how many acknowledged
    keys cannot be read through the proxy (None: UNREADABLE), and `lacks`, per redis server of
    the shard, how many it lacks (or why it could not be read: refused, silent, LOADING...)."""
    servers = shard_servers()
    every = [k for keys in keys_by_kind.values() for k in keys]
    missing = read_through_proxy(app, every, len(servers))
    on_server = {}
    for addr, name in servers.items():
        try:
            on_server[name] = resp_get_many(addr, SHARD_PORT, every, timeout=2)
        except Unreadable as e:
            on_server[name] = str(e)
    out = {}
    for kind, keys in keys_by_kind.items():
        lacks = {name: found if isinstance(found, str) else sum(1 for k in keys if k not in found)
                 for name, found in on_server.items()}
        out[kind] = {"lost": None if missing is None else sum(1 for k in keys if k in missing), "lacks": lacks}
    return out


def redis_role(host):
    """`ROLE` of r9001 on `host`, as words; [] if it does not answer (a crashed machine is
    silent: redis-cli would wait for the kernel's connect timeout)."""
    try:
        return subprocess.run(["redis-cli", "-h", host, "-p", str(SHARD_PORT), "ROLE"],
                              capture_output=True, text=True, timeout=3).stdout.split()
    except subprocess.TimeoutExpired:
        return []


def medic_history(d, design, scenario):
    """medic's own detection and recovery times for the run's first recovery, if any."""
    history = api("/api/history")
    first = next((h for h in history if h.get("detection_ms") is not None), None)
    if first is None:
        return None
    with open(os.path.join(d, f"history-{design}-{scenario}.json"), "w") as f:
        json.dump(first, f)
    # From detection to the recovery's end: for a machine on the lab provider, the
    # replacement launched, configured, synced and registered on every proxy.
    ended = first.get("ended_ms")
    # From the recovery's start to its last activation done: the traffic has moved.
    steps = first.get("steps", [])
    last = max((i for i, st in enumerate(steps) if st["kind"] == "activate"), default=None)
    moved = None
    if last is not None and steps[last].get("ended_ms") is not None:
        moved = steps[last]["ended_ms"] - first["started_ms"]
    return {
        "moved_ms": moved,
        "detection_ms": first["detection_ms"],
        "recovery_ms": ended - first["started_ms"] if ended else None,
        "steps": [(st["kind"], st.get("duration_ms")) for st in first.get("steps", [])],
    }


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
    clients = {}
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
        clients = start_clients(app, logs, duration)
        seen = first_writes_seen()
        time.sleep(max(0.0, 3 + random.uniform(0, 0.25) - (clock() - clients["plain"][1])))
        before, after = inject_fault(scenario, topo, medic_topo)
        fault_wall = time.time() - (clock() - before)
        if scenario == "restart":
            time.sleep(5)
            # Empty (persistence is off) and as a master, as its configuration says.
            ssh(d, f"{NET}.10", f"redis-server /etc/redis/redis-{SHARD_PORT}.conf")
        for proc, _ in clients.values():
            proc.wait()
        result = {"fault": wall_time(fault_wall), **outages(logs, clients, seen, before, after)}
        back = read_back(app, {kind: [f"{PREFIX[kind]}:{r['n']}" for r in result[kind]["acked"]]
                               for kind in logs})
        for kind in logs:
            result[kind].update(back[kind])
        # What the old master is now (restart: medic made it a replica before the supervisor's
        # restart could bring it back empty as a master).
        if scenario != "machine":
            role = redis_role(f"{NET}.10")
            result["old_master_role"] = role[0] if role else "down"
        if design == "sentinel-script":
            lines = reconfig_script_log(d)
            run_log.write("".join(line + "\n" for line in lines))
            result["script_calls"] = sum(1 for line in lines if " -> " in line)
        detection = medic_history(d, design, scenario) if medic is not None else None
        return result, detection
    finally:
        for p in ([medic] if medic else []) + extra + [c for c, _ in clients.values() if c.poll() is None]:
            p.terminate()
            p.wait()
        run_log.close()
        sh(MEDIC, "lab", "down", "--topology", topo, check=False)


def must_recover(design, kind, scenario):
    """Whether --smoke requires this client to recover: medic's and sentinel-script's plain
    client always; the WAIT 1 client only where a replica comes back within the run — medic
    restarts a killed process as one, and replaces a crashed machine only on the lab provider
    (`--setup lab`); under Sentinel nothing brings a replica back in the run. A crashed proxy
    (`proxy`) leaves the shard's replica as it was: both clients must recover."""
    if design not in ASSERTED:
        return False
    if kind == "plain" or scenario == "proxy":
        return True
    return design == "medic" and (scenario != "machine" or SETUP == "lab")


def smoke_failures(results):
    """What --smoke refuses, one message each: a run of an ASSERTED design whose client must
    recover and is NOT RECOVERED, that lost an acknowledged write, or whose writes could not be
    read back through the proxy."""
    out = []
    for (g, s), rs in results.items():
        if g not in ASSERTED:
            continue
        for i, (r, _) in enumerate(rs, 1):
            for kind, label in (("plain", "plain"), ("wait", "WAIT 1")):
                c = r[kind]
                if c["outage_ms"] is None and must_recover(g, kind, s):
                    out.append(f"{g} {s} run {i}: the {label} client is NOT RECOVERED")
                if c["lost"] is None:
                    out.append(f"{g} {s} run {i}: the {label} client's writes are UNREADABLE through the proxy")
                elif c["lost"]:
                    out.append(f"{g} {s} run {i}: {c['lost']} acknowledged {label} writes lost")
    return out


def outage_text(ms):
    return "NOT RECOVERED" if ms is None else f"{ms:.0f} ms"


def lacks_text(lacks):
    return ", ".join(f"{name} {'lacks ' + str(v) if isinstance(v, int) else v}" for name, v in lacks.items())


def client_text(c):
    early = f" ({c['early']} before the fault)" if c["early"] else ""
    lost = "UNREADABLE" if c["lost"] is None else c["lost"]
    return (f"outage {outage_text(c['outage_ms'])}, failed {c['failed']}{early}, lost {lost} "
            f"({lacks_text(c['lacks'])})")


def run_line(i, g, s, r, det):
    script = f"; reconfig script ran {r['script_calls']}×" if "script_calls" in r else ""
    return (f"run {i + 1} {g:<15} {s:<8} fault at {r['fault']}; detection {det.get('detection_ms')} ms, "
            f"recovery {det.get('recovery_ms')} ms (traffic moved after {det.get('moved_ms')} ms); plain: {client_text(r['plain'])}; "
            f"WAIT 1: {client_text(r['wait'])}; longest write {r['plain']['longest_ms']:.0f} ms; "
            f"old master now {r.get('old_master_role', '-')}{script}; timing ≤ {r['timing_ms']:.1f} ms")


def spread(values):
    if not values:
        return "-"
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def outage_cell(outages):
    """min / median / max over the recovered runs; NOT RECOVERED if none recovered."""
    recovered = [o for o in outages if o is not None]
    return spread(recovered) if recovered else "NOT RECOVERED"


def lost_cell(losts):
    """min / median / max over the runs read back through the proxy, and how many could not be."""
    readable = [v for v in losts if v is not None]
    unreadable = len(losts) - len(readable)
    if not readable:
        return "UNREADABLE"
    return spread(readable) + (f" +{unreadable} UNREADABLE" if unreadable else "")


def lacks_cell(rs):
    """Per server: the most acknowledged keys (both clients') it lacked in a run, and in how many
    runs it could not be read, and why."""
    names, most, unread = {}, {}, {}
    for r, _ in rs:
        for name, plain in r["plain"]["lacks"].items():
            names[name] = None
            wait = r["wait"]["lacks"][name]
            if isinstance(plain, int):  # one read for both clients' keys: both counts, or one reason
                most[name] = max(most.get(name, 0), plain + wait)
            else:
                unread.setdefault(name, []).append(plain)
    cells = []
    for name in names:
        parts = [str(most[name])] if name in most else []
        parts += [f"{why} ×{unread[name].count(why)}" for why in dict.fromkeys(unread.get(name, []))]
        cells.append(f"{name} {', '.join(parts)}" if len(parts) < 2 else f"{name} {parts[0]} ({', '.join(parts[1:])})")
    return "; ".join(cells)


SUMMARY_COLUMNS = (("design", 15), ("scenario", 9), ("runs", 4), ("outage ms (plain)", 18),
                   ("outage ms (WAIT 1)", 18), ("not recovered", 13), ("failed", 14), ("lost (plain)", 14),
                   ("lost (WAIT 1)", 14), ("detection ms", 14), ("recovery ms", 16), ("longest write ms", 18))


def summary_line(g, s, rs):
    def of(key):
        return [d[key] for _, d in rs if d and d.get(key) is not None]

    not_recovered = [sum(1 for r, _ in rs if r[k]["outage_ms"] is None) for k in ("plain", "wait")]
    cells = (g, s, str(len(rs)), outage_cell([r["plain"]["outage_ms"] for r, _ in rs]),
             outage_cell([r["wait"]["outage_ms"] for r, _ in rs]), f"{not_recovered[0]} / {not_recovered[1]}",
             spread([r["plain"]["failed"] for r, _ in rs]), lost_cell([r["plain"]["lost"] for r, _ in rs]),
             lost_cell([r["wait"]["lost"] for r, _ in rs]), spread(of("detection_ms")), spread(of("recovery_ms")),
             spread([r["plain"]["longest_ms"] for r, _ in rs]))
    line = "  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, (_, w)) in enumerate(zip(cells, SUMMARY_COLUMNS)))
    return f"{line}   servers lacking acknowledged keys (most in a run): {lacks_cell(rs)}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--scenarios", default="process,restart,machine")
    p.add_argument("--designs", default="medic,medic-seedha,sentinel1000,sentinel500,sentinel-script,seed")
    p.add_argument("--smoke", action="store_true",
                   help="what CI runs: one short run (7 s) of each scenario for medic, sentinel1000 and "
                        "sentinel-script (or --designs), then exits non-zero if a run of medic or "
                        "sentinel-script is NOT RECOVERED or lost an acknowledged write (or its writes "
                        "cannot be read back through the proxy). The WAIT 1 client must recover only where "
                        "a replica comes back within the run: medic after a killed or restarted process, "
                        "or a crashed machine with --setup lab (replaced); a machine on the static provider "
                        "is not replaced, and under Sentinel nothing brings a replica back. The other "
                        "designs are reported, not asserted: the seed's design is expected to lose writes "
                        "in the restart scenario, and plain Sentinel may admit the restarted empty master")
    p.add_argument("--setup", choices=["issue", "lab"], default="issue",
                   help="issue: two redis machines, one HAProxy, medic on the static provider (default); "
                        "lab: examples/lab.yaml, through the app proxy")
    p.add_argument("--haproxy", help="proxies.haproxy settings for the medic and sentinel-script designs "
                   "(both keep HAProxy as medic's playbook renders it), as YAML flow, "
                   "e.g. '{timeout_connect: 50ms, retries: 8}' (default: the playbook's defaults)")
    p.add_argument("--keep", metavar="DIR", help="keep every run's files (medic's log, the clients' CSVs, "
                   "medic's history) in DIR instead of a temporary directory")
    p.add_argument("--check-interval", help="medic's redis check interval, e.g. 100ms (default: the example's 250ms)")
    a = p.parse_args()
    global CHECK, SETUP, HAPROXY
    CHECK = a.check_interval
    HAPROXY = a.haproxy
    SETUP = a.setup
    runs, duration = (1, 7) if a.smoke else (a.runs, 12)
    scenarios = a.scenarios.split(",")
    if "proxy" in scenarios and SETUP != "lab":
        sys.exit("bench/failover.py: the proxy scenario needs --setup lab (the app proxy and its two proxies)")
    designs = a.designs.split(",")
    if a.smoke and a.designs == p.get_default("designs"):
        designs = ["medic", "sentinel1000", "sentinel-script"]

    subprocess.run(["cargo", "build", "-q", "--locked", "-p", "medic", "-p", "medic-bench"], check=True, cwd=ROOT)
    results = {(g, s): [] for g in designs for s in scenarios}
    with (contextlib.nullcontext(a.keep) if a.keep else tempfile.TemporaryDirectory()) as d:
        os.makedirs(d, exist_ok=True)
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
                    print(run_line(i, g, s, r, det), flush=True)
                    if det.get("steps") and i == 0:
                        print("      steps (ms): " + ", ".join(f"{k} {v}" for k, v in det["steps"]), flush=True)
    print()
    print("  ".join(f"{h:<{w}}" if i < 2 else f"{h:>{w}}" for i, (h, w) in enumerate(SUMMARY_COLUMNS))
          + "   min / median / max; outages over the recovered runs; not recovered: plain / WAIT 1")
    for g in designs:
        for s in scenarios:
            if results[(g, s)]:
                print(summary_line(g, s, results[(g, s)]))
    if a.smoke:
        failures = smoke_failures(results)
        asserted = [g for g in designs if g in ASSERTED]
        if failures:
            print("\nbench/failover.py --smoke FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
            sys.exit(1)
        print(f"\nsmoke: {', '.join(asserted) or 'no asserted design'}: every client that must recover did, "
              "no acknowledged write lost")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/failover.py needs root (the lab's network namespaces)")
    main()
