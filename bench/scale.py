#!/usr/bin/env python3
"""Monitoring at scale: CPU and memory of `medic run` checking N redis endpoints every second,
whether hung endpoints change the cadence of everyone else's checks, and monit and Redis
Sentinel doing the same in the same run.

The endpoints are served by `responder` (crates/medic-bench): processes holding N listeners on
loopback addresses 127.0.50.1.. (500 ports each), answering INFO replication as masters (odd
hosts) and replicas (even hosts), PING with PONG, and counting the checks they answer. For
medic the topology is generated: N/2 shards of a master and a replica, provider `static`,
checks every 1 s (timeout 500 ms, jitter 100 ms or --jitter). For monit: `set daemon 1` and one
`check host` per endpoint with `if failed port P protocol redis` (its default 5 s timeout).
For Sentinel (redis-server 7 --sentinel): one `sentinel monitor` per master (quorum 1,
down-after-milliseconds 3000, as medic's 3 missed checks), the replicas found from the
masters' INFO as on real servers; Sentinel PINGs every server each second and sends INFO every
10 s, and holds two connections per server, so it is run on at most as many endpoints as the
descriptor limit allows (the row says how many). Sentinel rewrites its configuration file for
each replica it finds, so at thousands of servers it is busy for minutes after its start: it is
measured once it checks every server each second (up to 15 minutes; the output says when).

medic is a release build without the AWS SDK (`cargo build --release --no-default-features`,
minutes instead of the SDK's ~25), as a deployment this size would run it.

For each N and tool: a warm-up of 10 s, then CPU time (user + system) and RSS over the
measuring window, and the rate at which the answering endpoints were checked (from the
responders' counts); then the same with 10 endpoints hung (they accept and never answer).
For medic then (--detection, the default): one endpoint on every replica machine is killed at
once (its listener and connections closed, so the kernel refuses), and the time from its death
to medic's first failed check of it (its "detection" event) is reported as p50 / p99 / max.
"full pass" is how long it takes to check every answering endpoint once at that rate: 1 s is
a 1 s cadence kept.

  bench/scale.py [--endpoints 1000,10000] [--seconds 60] [--hang 10]
                 [--tools medic,monit,sentinel] [--runs 1] [--smoke]

Needs root only to raise the file descriptor limit (N sockets each side).
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
MEDIC = os.path.join(TARGET, "release", "medic")
RESPONDER = os.path.join(TARGET, "release", "responder")
LISTEN = 7691
SENTINEL_PORT = 7692
# Endpoints per loopback address (one address is one machine of the topology), and addresses
# per responder process: 4,000 endpoints, within a process's 20,000 descriptors even with
# Sentinel's two connections to each.
PER_HOST = 100
HOSTS_PER_RESPONDER = 40


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


JITTER = "100ms"
# How long Sentinel is given to settle before it is measured all the same.
SETTLE_S = 900


def topology(d, n):
    hosts = max(2, 2 * -(-n // (2 * PER_HOST)))
    per_host = n // hosts
    lines = [
        "name: scale",
        "provider: static",
        f"playbooks: {ROOT}/playbooks",
        "machines:",
    ]
    for h in range(1, hosts + 1):
        lines.append(f"  - {{name: m{h}, role: redis, address: 127.0.50.{h}}}")
    lines.append("  - {name: px, role: haproxy, address: 127.0.51.1}")
    lines.append("shards:")
    frontends = []
    for pair in range(hosts // 2):
        master, replica = 2 * pair + 1, 2 * pair + 2
        for i in range(per_host):
            name = f"s{pair}-{i}"
            lines.append(f"  - {{name: {name}, port: {20000 + i}, master: m{master}, replicas: [m{replica}]}}")
            frontends.append(name)
    lines += ["proxies:", "  machines: [px]", "  runtime_api: {port: 9999, reach: network}", "  frontends:"]
    for i, name in enumerate(frontends):
        lines.append(f"    - {{listen: {30000 + i}, shard: {name}}}")
    lines += [
        "checks:",
        f"  redis: {{interval: 1s, timeout: 500ms, fall: 3, rise: 2, jitter: {JITTER}}}",
        "policy:",
        "  remediation: [failover]",
        "controller:",
        f"  listen: 127.0.0.1:{LISTEN}",
        f"  state_dir: {d}/state",
    ]
    path = os.path.join(d, f"scale-{n}.yaml")
    open(path, "w").write("\n".join(lines) + "\n")
    return path, hosts, per_host


def get(path):
    with socket.create_connection(("127.0.0.1", LISTEN), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def metrics():
    data = get("/metrics")
    checks = 0
    for line in data.decode().splitlines():
        if line.startswith('medic_checks_total{kind="redis"'):
            checks += int(float(line.rsplit(" ", 1)[1]))
    return checks


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(f[11]) + int(f[12])) / tick


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def monitrc(d, hosts, per_host):
    """monit checking the same endpoints, as the issue's comparison asks: `set daemon 1` and
    `if failed port .. protocol redis` (PING, then QUIT), monit's default 5 s timeout."""
    lines = [
        "set daemon 1",
        f"set logfile {d}/monit.log",
        f"set pidfile {d}/monit.pid",
        f"set idfile {d}/monit.id",
        f"set statefile {d}/monit.state",
    ]
    for h in range(1, hosts + 1):
        for i in range(per_host):
            lines.append(f"check host e{h}-{i} with address 127.0.50.{h}")
            lines.append(f"    if failed port {20000 + i} protocol redis then alert")
    path = os.path.join(d, "monitrc")
    open(path, "w").write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def sentinel_conf(d, hosts, per_host):
    """One Sentinel watching every master (and, through their INFO, every replica)."""
    lines = [
        f"port {SENTINEL_PORT}",
        "bind 127.0.0.1",
        "daemonize no",
        f"dir {d}",
        f"logfile {d}/sentinel.log",
    ]
    for pair in range(hosts // 2):
        for i in range(per_host):
            name = f"s{pair}-{i}"
            lines.append(f"sentinel monitor {name} 127.0.50.{2 * pair + 1} {20000 + i} 1")
            lines.append(f"sentinel down-after-milliseconds {name} 3000")
    path = os.path.join(d, "sentinel.conf")
    open(path, "w").write("\n".join(lines) + "\n")
    return path


def sentinel_fits(n):
    """The most endpoints one Sentinel can watch within the descriptor limit (two connections
    per server, some to spare), rounded down to whole hosts of PER_HOST pairs."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = (hard - 200) // 2
    return n if n <= most else most // (2 * PER_HOST) * (2 * PER_HOST)


def detection(responders, hosts, interval_s=1.0):
    """Kills one endpoint on each replica host (a machine of its own: medic acts on the first
    failure of a machine and watches it no more while it does) and returns, for each, the time
    from its death to medic's first failed check of it, in seconds."""
    for r in responders:
        r.send_signal(signal.SIGUSR1)
    died_ms = []
    for r in responders:
        line = r.stdout.readline()
        if not line.startswith("died "):
            sys.exit(f"responder did not report the deaths: {line!r}")
        died_ms.append(int(line.split()[1]))
    # (Each responder serves HOSTS_PER_RESPONDER hosts and said when its endpoints died.)
    died_at = {f"redis s{(h - 2) // 2}-0@m{h}": died_ms[(h - 1) // HOSTS_PER_RESPONDER]
               for h in range(2, hosts + 1, 2)}
    want = set(died_at)
    deadline = time.time() + 10 * interval_s
    seen = {}
    while True:
        # medic's "detection" event is recorded as the failed check's result is judged.
        for e in json.loads(get("/api/events"))["events"]:
            target = e["message"].split(":", 1)[0]
            if e["kind"] == "detection" and target in want:
                seen[target] = (e["at_ms"] - died_at[target]) / 1000
        if len(seen) == len(want):
            return sorted(seen.values())
        if time.time() > deadline:
            missing = sorted(want - set(seen))
            sys.exit(f"medic saw {len(seen)} of {len(want)} deaths within {10 * interval_s} s; not: {missing[:5]}")
        time.sleep(0.5)


def percentile(xs, p):
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def answered(d):
    """Health checks the responders have answered so far (INFO and PING commands)."""
    total = 0
    for name in os.listdir(d):
        if name.startswith("count-") and not name.endswith(".tmp"):
            try:
                total += int(open(os.path.join(d, name)).read().strip() or 0)
            except (OSError, ValueError):
                pass
    return total


def measure(d, tool, n, seconds, hang, die=False):
    topo, hosts, per_host = topology(d, n)
    for name in os.listdir(d):
        if name.startswith("count-"):
            os.remove(os.path.join(d, name))
    responders = []
    for first in range(1, hosts + 1, HOSTS_PER_RESPONDER):
        responders.append(subprocess.Popen(
            [RESPONDER, "--base", "127.0.50", "--first-host", str(first),
             "--hosts", str(min(HOSTS_PER_RESPONDER, hosts - first + 1)),
             "--first-port", "20000", "--per-host", str(per_host), "--hang", str(hang if first == 1 else 0),
             "--die", "yes" if die else "no",
             "--count", os.path.join(d, f"count-{first}")],
            stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile))
    try:
        for responder in responders:
            ready = responder.stdout.readline()
            if not ready.startswith("ready"):
                sys.exit(f"responder did not start: {ready}")
        subprocess.run(["rm", "-rf", f"{d}/state"])
        log = open(os.path.join(d, f"{tool}-{n}-{hang}.log"), "w")
        if tool == "medic":
            cmd = [MEDIC, "run", topo]
        elif tool == "sentinel":
            cmd = ["redis-server", sentinel_conf(d, hosts, per_host), "--sentinel"]
        else:
            cmd = ["monit", "-I", "-c", monitrc(d, hosts, per_host)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, "NO_COLOR": "1", "MEDIC_LOG": "warn"},
                                preexec_fn=raise_nofile)
        try:
            if tool == "medic":
                for _ in range(300):
                    try:
                        metrics()
                        break
                    except OSError:
                        time.sleep(0.1)
            started = time.time()
            time.sleep(10)
            # Sentinel finds the replicas from the masters' first INFO (sent within 10 s) and
            # rewrites its configuration file for each one found: it is measured once it
            # checks every server once a second (or after SETTLE_S, said so).
            settled = None
            if tool == "sentinel":
                expected = hosts * per_host - hang
                while time.time() - started < SETTLE_S:
                    k, t = answered(d), time.time()
                    time.sleep(5)
                    if (answered(d) - k) / (time.time() - t) >= 0.95 * expected:
                        settled = time.time() - started
                        break
            c0, k0, t0 = cpu_seconds(proc.pid), answered(d), time.time()
            time.sleep(seconds)
            c1, k1, t1 = cpu_seconds(proc.pid), answered(d), time.time()
            if proc.poll() is not None:
                sys.exit(f"{tool} exited early; see {log.name}")
            detected = detection(responders, hosts) if die else []
            return {
                "settled": settled,
                "detected": detected,
                "tool": tool,
                "endpoints": hosts * per_host,
                "hung": hang,
                "cpu": 100 * (c1 - c0) / (t1 - t0),
                "rss": rss_mb(proc.pid),
                # What the endpoints that answer saw: the hung ones never answer.
                "rate": (k1 - k0) / (t1 - t0),
                "expected": hosts * per_host - hang,
            }
        finally:
            proc.terminate()
            proc.wait()
    finally:
        for responder in responders:
            responder.terminate()
            responder.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoints", default="1000,10000")
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--hang", type=int, default=10)
    p.add_argument("--tools", default="medic,monit,sentinel", help="any of medic, monit, sentinel")
    p.add_argument("--runs", type=int, default=1, help="measure each case this many times")
    p.add_argument("--jitter", default="100ms", help="medic's check jitter (the interval is 1 s)")
    p.add_argument("--detection", action=argparse.BooleanOptionalAction, default=True,
                   help="after medic's window, kill one endpoint per replica machine and time its detection")
    p.add_argument("--smoke", action="store_true", help="1,000 endpoints for 5 s, as CI does")
    a = p.parse_args()
    global JITTER
    JITTER = a.jitter
    counts = [int(x) for x in a.endpoints.split(",")]
    seconds = a.seconds
    if a.smoke:
        counts, seconds = [1000], 5
    tools = a.tools.split(",")
    if "monit" in tools and not shutil.which("monit"):
        sys.exit("monit is not installed (scripts/deps installs it)")
    if "sentinel" in tools and not shutil.which("redis-server"):
        sys.exit("redis-server is not installed (scripts/deps installs it)")
    subprocess.run(["cargo", "build", "-q", "--locked", "--release", "--no-default-features",
                    "-p", "medic", "-p", "medic-bench"], check=True, cwd=ROOT)
    # Every endpoint host address must exist: loopback answers the whole 127/8 on Linux.
    print(f"{'tool':<8} {'endpoints':>9} {'hung':>5} {'CPU % of a core':>16} {'RSS MB':>8} "
          f"{'answered/s':>10} {'expected':>9} {'full pass s':>11} {'detected p50/p99/max s':>23}")
    with tempfile.TemporaryDirectory() as d:
        for n in counts:
            for tool in tools:
                for hang in (0, a.hang):
                    if a.smoke and hang and tool == "monit":
                        continue  # a hung target costs monit 5 s a cycle: too long for a smoke run
                    detected = []
                    for _ in range(a.runs):
                        r = measure(d, tool, sentinel_fits(n) if tool == "sentinel" else n, seconds, hang,
                                    a.detection and tool == "medic")
                        report(r)
                        detected += r["detected"]
                    if a.runs > 1 and detected:
                        detected.sort()
                        print(f"{tool} {n} hung {hang}: {len(detected)} deaths over {a.runs} runs detected after "
                              f"p50 {percentile(detected, 50):.3f} s, p99 {percentile(detected, 99):.3f} s, "
                              f"max {detected[-1]:.3f} s", flush=True)


def report(r):
    """One row of the table."""
    full = r["expected"] / r["rate"] if r["rate"] else float("inf")
    det = r["detected"]
    times = f"{percentile(det, 50):.3f}/{percentile(det, 99):.3f}/{det[-1]:.3f}" if det else "-"
    print(f"{r['tool']:<8} {r['endpoints']:>9} {r['hung']:>5} {r['cpu']:>16.1f} {r['rss']:>8.1f} "
          f"{r['rate']:>10.0f} {r['expected']:>9} {full:>11.2f} {times:>23}", flush=True)
    if r["tool"] == "sentinel":
        if r["settled"] is None:
            print(f"  (sentinel had not settled after {SETTLE_S} s: measured all the same)", flush=True)
        else:
            print(f"  (sentinel settled {r['settled']:.0f} s after its start)", flush=True)


if __name__ == "__main__":
    main()
