#!/usr/bin/env python3
"""Sentinel's client-reconfig-script for bench/failover.py's `sentinel-script` design: after a
failover, route the shard's HAProxy backend to the new master through HAProxy's runtime API.

Sentinel runs it on its own machine, on every sentinel (the leader and each observer), as

  sentinel-reconfig.py <master-name> <role> <state> <from-ip> <from-port> <to-ip> <to-port>

For each HAProxy runtime API in $HAPROXY_RUNTIME_APIS (comma-separated HOST:PORT), in backend
`redis-<master-name>` (the backend name medic's playbook renders): every server that is not
<to-ip>:<to-port> is put in `maint` and its sessions are shut down (so clients reconnect), then
the server at <to-ip>:<to-port> is set `ready`. Fencing comes first, so HAProxy never has two
masters to choose from. Idempotent: a second call (another sentinel's) finds every server
already where it belongs and changes nothing. Logs one line per action to stderr.

Exit codes follow Sentinel's convention: 1 (a runtime API did not answer or refused a command)
makes Sentinel run the script again later, 2 (no server of the backend has the new master's
address) does not.
"""

import os
import socket
import sys
import time

MAINT = 0x01  # srv_admin_state: SRV_ADMF_FMAINT, forced into maintenance through the API


def log(message):
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    print(f"sentinel-reconfig {stamp} [{os.getpid()}] {message}", file=sys.stderr, flush=True)


def runtime_api(api, command):
    """One command on one HAProxy runtime API (HOST:PORT); returns its answer."""
    host, port = api.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


def act(api, command):
    """A state-changing command; HAProxy answers nothing when it succeeds."""
    answer = runtime_api(api, command).strip()
    if answer:
        raise OSError(f"`{command}`: {answer}")


def servers(api, backend):
    """The backend's servers as {name: (address, port, admin_state)} (`show servers state`)."""
    lines = runtime_api(api, f"show servers state {backend}").splitlines()
    header = next((line[2:].split() for line in lines if line.startswith("# ")), [])
    out = {}
    for line in lines:
        fields = line.split()
        if line.startswith("#") or len(fields) != len(header):
            continue
        row = dict(zip(header, fields))
        out[row["srv_name"]] = (row["srv_addr"], row["srv_port"], int(row["srv_admin_state"]))
    return out


def route(api, backend, to_addr, to_port):
    """Fences every server but the new master, then makes the new master ready. Returns False
    if no server of the backend is the new master."""
    found = servers(api, backend)
    new = [n for n, (addr, port, _) in found.items() if (addr, port) == (to_addr, to_port)]
    if not new:
        log(f"{api} {backend}: no server at {to_addr}:{to_port} (servers: {sorted(found)})")
        return False
    for name, (addr, port, admin) in sorted(found.items()):
        if name in new:
            continue
        was = "already maint" if admin & MAINT else "was ready"
        act(api, f"set server {backend}/{name} state maint")
        act(api, f"shutdown sessions server {backend}/{name}")
        log(f"{api} {backend}/{name} ({addr}:{port}): maint, sessions shut down ({was})")
    for name in new:
        was = "was maint" if found[name][2] & MAINT else "already ready"
        act(api, f"set server {backend}/{name} state ready")
        log(f"{api} {backend}/{name} ({to_addr}:{to_port}): ready ({was})")
    return True


def main(argv):
    if len(argv) != 8:
        log(f"expected 7 arguments from Sentinel, got {argv[1:]}")
        return 2
    master, role, state, from_ip, from_port, to_ip, to_port = argv[1:]
    log(f"{master}: {role} {state}, {from_ip}:{from_port} -> {to_ip}:{to_port}")
    apis = [a for a in os.environ.get("HAPROXY_RUNTIME_APIS", "").split(",") if a]
    if not apis:
        log("HAPROXY_RUNTIME_APIS is empty: nothing to reconfigure")
        return 2
    unreachable = not_found = False
    for api in apis:
        try:
            not_found |= not route(api, f"redis-{master}", to_ip, to_port)
        except OSError as e:
            log(f"{api}: {e}; Sentinel will run the script again")
            unreachable = True
    return 1 if unreachable else 2 if not_found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
