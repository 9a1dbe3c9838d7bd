#!/usr/bin/env python3
"""False failovers: medic watching a healthy deployment that is busy and on a slow network, for
a long time. Nothing fails; every recovery medic starts is a false one.

The deployment is bench/failover.py's `--setup lab` (examples/lab.yaml: two redis machines, two
proxies, the app proxy, DNS; the lab provider, so a machine medic judged lost would really be
replaced), with medic's default check settings. For `--minutes` (30 by default):

  - a slow network: `tc netem delay DELAY JITTER` (normal distribution) on every port of the lab
    bridge and on the bridge itself, so every packet between two lab machines, and between a lab
    machine and the monitor host, crosses one or two delays (default 20ms ± 10ms each). Where
    the kernel has no netem (CONFIG_NET_SCH_NETEM unset, as on this project's CI machines), a
    congested one instead: each port shaped by `tbf` (8 Mbit/s, 60 ms of queue) and a
    background stream of UDP bursts to every machine at ≈ 98 % of that rate, so every packet
    towards a machine waits in a queue whose length varies from burst to burst (`--network`);
  - a busy master: every 2 to 5 s, one of the two masters (r9001, r9002 in turn) blocked for
    200 ms as `DEBUG SLEEP 0.2` would (redis 7 refuses DEBUG by default, so a script keeps its
    one thread busy that long) — as long as the check's 200 ms timeout, longer once the
    network's delay is added;
  - a client writing through the app proxy every 10 ms.

The network as it was is measured and reported: the time to complete a TCP handshake with
redis1's r9001 from the monitor host, once a second (p50 / p99 / max).

Reported: recoveries started (each a false failover; the run fails if there is any), medic's
checks by kind and result (its /metrics: how many a busy master made miss), its verdicts
(targets marked down), the knocks its witnesses were asked for and what came of them,
the sleeps sent, and the client's failed writes.

  bench/steady.py [--minutes 30] [--network auto|netem|shaped] [--delay 20ms] [--jitter 10ms]
                  [--sleep 0.2] [--keep DIR]

Needs root (the lab's network namespaces and tc).
"""

import argparse
import contextlib
import csv
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import failover as fo


SHAPED_RATE_BPS = 8_000_000
MACHINES = [f"{fo.NET}.{h}" for h in (10, 11, 12, 13, 14)]


def has_netem():
    return subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                          capture_output=True).returncode == 0 and \
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True) is not None


def slow_network(bridge, kind, delay, jitter):
    """The qdiscs on the bridge and each of its ports (the host ends of the machines' links).
    Returns the links changed."""
    ports = sorted(os.listdir(f"/sys/class/net/{bridge}/brif"))
    if kind == "netem":
        for link in [bridge] + ports:
            fo.sh("tc", "qdisc", "replace", "dev", link, "root", "netem", "delay", delay, jitter,
                  "distribution", "normal")
        return [bridge] + ports
    for link in ports:
        fo.sh("tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate", str(SHAPED_RATE_BPS),
              "burst", "4kb", "latency", "60ms")
    return ports


def background(stop):
    """UDP bursts to every machine's discard port at ≈ 98 % of the shaped rate (each machine's
    link has its own queue), until `stop` is set."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"x" * 1200
    per_s = SHAPED_RATE_BPS * 0.98 / 8 / (len(payload) + 42)
    while not stop.is_set():
        n = random.randint(1, 30)
        for _ in range(n):
            for m in MACHINES:
                try:
                    s.sendto(payload, (m, 9))
                except OSError:
                    pass
        time.sleep(n / per_s * random.uniform(0.7, 1.3))


def handshake_ms(addr):
    t = time.monotonic()
    try:
        socket.create_connection(addr, timeout=2).close()
    except OSError:
        return None
    return (time.monotonic() - t) * 1000


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


# What `DEBUG SLEEP` does, where redis 7 refuses DEBUG (`enable-debug-command no`, its
# default and the playbook's): the server's one thread busy for the given seconds.
BUSY = ("local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
        "while true do local n = redis.call('TIME') "
        "if n[1] * 1000000 + n[2] - s >= tonumber(ARGV[1]) * 1000000 then return 1 end end")


def debug_sleep(port, seconds):
    """The master of the shard at `port` (on redis1, the masters' machine) busy for `seconds`."""
    args = ["EVAL", BUSY, "0", seconds]
    cmd = f"*{len(args)}\r\n" + "".join(f"${len(x.encode())}\r\n{x}\r\n" for x in args)
    with socket.create_connection((f"{fo.NET}.10", port), timeout=5) as s:
        s.sendall(cmd.encode())
        s.settimeout(5 + float(seconds))
        reply = s.recv(64)
    if not reply.startswith(b":1"):
        raise RuntimeError(f"the busy script on port {port}: {reply!r}")


def check_results():
    """medic's checks so far, {(kind, result): n}, from its /metrics."""
    with socket.create_connection(("127.0.0.1", fo.LISTEN), timeout=2) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out = {}
    for m in re.finditer(rb'medic_checks_total\{kind="(\w+)",result="(\w+)"\} (\d+)', data):
        out[(m[1].decode(), m[2].decode())] = int(m[3])
    return out


def count(log, pattern):
    with open(log) as f:
        return sum(1 for line in f if re.search(pattern, line))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--network", choices=["auto", "netem", "shaped"], default="auto",
                   help="how the network is slowed: netem delay and jitter, or a shaped and congested "
                        "link where the kernel has no netem (auto: netem if the kernel has it)")
    p.add_argument("--delay", default="20ms", help="netem delay on each link (default 20ms)")
    p.add_argument("--jitter", default="10ms", help="netem jitter on each link (default 10ms)")
    p.add_argument("--sleep", default="0.2", help="DEBUG SLEEP seconds (default 0.2)")
    p.add_argument("--keep", metavar="DIR", help="keep medic's log, the client's CSV and medic's history in DIR")
    a = p.parse_args()
    network = a.network
    if network == "auto":
        network = "netem" if has_netem() else "shaped"
    if network == "netem" and not has_netem():
        sys.exit("bench/steady.py: this kernel has no netem (CONFIG_NET_SCH_NETEM): use --network shaped")
    fo.SETUP = "lab"
    subprocess.run(["cargo", "build", "-q", "--locked", "-p", "medic", "-p", "medic-bench"], check=True,
                   cwd=fo.ROOT)
    seconds = a.minutes * 60
    with (contextlib.nullcontext(a.keep) if a.keep else tempfile.TemporaryDirectory()) as d:
        os.makedirs(d, exist_ok=True)
        topos = fo.topology(d)
        fo.sh(fo.MEDIC, "lab", "down", "--topology", topos["lab"], check=False)
        fo.sh(fo.MEDIC, "lab", "up", topos["lab"])
        log = os.path.join(d, "medic.log")
        medic = client = None
        links = []
        stop = threading.Event()
        noise = threading.Thread(target=background, args=(stop,), daemon=True)
        rtts, lost_handshakes = [], 0
        try:
            links = slow_network("mbfail0", network, a.delay, a.jitter)
            if network == "shaped":
                noise.start()
            how = (f"netem {a.delay} ± {a.jitter}" if network == "netem" else
                   f"tbf {SHAPED_RATE_BPS // 1_000_000} Mbit/s with ≈ 98 % background bursts")
            with open(log, "w") as out:
                medic = subprocess.Popen([fo.MEDIC, "run", topos["medic"]], stderr=out,
                                         stdout=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
            deadline = time.monotonic() + 30
            while True:
                try:
                    fo.api("/api/status")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("medic's API did not answer within 30 s")
                    time.sleep(0.2)
            csv_log = os.path.join(d, "client.csv")
            app = f"{fo.NET}.{fo.CLIENT_HOST['lab']}:{fo.CLIENT['lab']}"
            client = subprocess.Popen([fo.LOADGEN, "--addr", app, "--every", "10ms", "--budget", "1s",
                                       "--duration", f"{int(seconds)}s", "--prefix", "s", "--log", csv_log],
                                      stdout=subprocess.DEVNULL)
            start = time.monotonic()
            sleeps = 0
            print(f"steady: {a.minutes:g} min, {how} on {len(links)} links, "
                  f"DEBUG SLEEP {a.sleep} every 2-5 s", flush=True)
            next_report = start + 60
            next_sleep = start + random.uniform(2, 5)
            while time.monotonic() - start < seconds:
                time.sleep(1)
                ms = handshake_ms((f"{fo.NET}.10", 9001))
                if ms is None:
                    lost_handshakes += 1
                else:
                    rtts.append(ms)
                if time.monotonic() >= next_sleep:
                    debug_sleep((9001, 9002)[sleeps % 2], a.sleep)
                    sleeps += 1
                    next_sleep = time.monotonic() + random.uniform(2, 5)
                if medic.poll() is not None:
                    raise RuntimeError(f"medic exited ({medic.returncode}): see {log}")
                if time.monotonic() >= next_report:
                    next_report += 60
                    history = fo.api("/api/history")
                    print(f"  {(time.monotonic() - start) / 60:4.0f} min: {sleeps} sleeps, handshake p50 "
                          f"{percentile(rtts, 0.5):.1f} ms p99 {percentile(rtts, 0.99):.1f} ms, "
                          f"{len(history)} recoveries, {count(log, 'Health changed.*verdict=Silent')} "
                          f"silence verdicts, {count(log, 'Witnesses knocked')} knocks", flush=True)
            client.wait()
            history = fo.api("/api/history")
            checks = check_results()
            with open(os.path.join(d, "history.json"), "w") as f:
                json.dump(history, f)
        finally:
            for proc in (medic, client):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait()
            stop.set()
            for link in links:
                fo.sh("tc", "qdisc", "del", "dev", link, "root", check=False)
            fo.sh(fo.MEDIC, "lab", "down", "--topology", topos["lab"], check=False)
        with open(csv_log) as f:
            rows = list(csv.DictReader(f))
        failed = sum(1 for r in rows if r["outcome"] != "ok")
        knocked = count(log, "Witnesses knocked")
        knock_lost = count(log, "its machine answering no knock")
        print(f"\n{a.minutes:g} min, {how}, DEBUG SLEEP {a.sleep} × {sleeps}:")
        print(f"  the network: a TCP handshake with redis1 from the monitor host, once a second: p50 "
              f"{percentile(rtts, 0.5):.1f} ms, p99 {percentile(rtts, 0.99):.1f} ms, max {max(rtts, default=0):.1f} ms; "
              f"{lost_handshakes} not completed within 2 s")
        print(f"  recoveries started (false failovers): {len(history)}")
        for kind in sorted({k for k, _ in checks}):
            results = {r: n for (k, r), n in checks.items() if k == kind}
            print(f"  {kind} checks: " + ", ".join(f"{r} {n}" for r, n in sorted(results.items())))
        for h in history:
            print(f"    {h.get('event')}: {h.get('trigger', '')}")
        print(f"  silence verdicts (fall misses): {count(log, 'Health changed.*verdict=Silent')}; "
              f"witnesses asked: {count(log, 'Witnesses asked')}")
        print(f"  knocks unanswered by the monitor, then asked of the witnesses: {knocked}; "
              f"machines judged lost on them: {knock_lost}")
        print(f"  client writes: {len(rows)}, failed: {failed}")
        if history:
            sys.exit(f"bench/steady.py: {len(history)} false failover(s)")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench/steady.py needs root (the lab's network namespaces and tc)")
    main()
