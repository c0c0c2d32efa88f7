#!/usr/bin/env python3
"""Fan-out benchmark: N streams on one service, E events published through the control
socket; reports what the daemon spent (CPU seconds from /proc) and whether every client got
every event in order. Not a test: figures depend on the machine; compare runs taken together.

    python3 bench/fanout.py [--clients 1000] [--events 100] [--rate 0 (= as fast as answered)]
"""
import argparse
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def start_daemon(tmp, clients):
    ini = os.path.join(tmp, "bench.ini")
    with open(ini, "w") as f:
        f.write(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ctl.sock\nmax_clients = {clients + 10}\n"
                f"max_clients_per_ip = {clients + 10}\nindex = false\n\n[/bench]\nhistory = 100\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "ssed", "-c", ini], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=env)
    port = None
    for raw in proc.stderr:
        line = raw.decode()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        port = int(m.group(1)) if m else port
        if "ready" in line:
            break
    else:
        raise SystemExit("daemon did not start")
    return proc, port, os.path.join(tmp, "ctl.sock")


def open_streams(port, n):
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /bench HTTP/1.1\r\nHost: b\r\n\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    return sel, socks


def drain(sel, expect, deadline):
    """Read every stream until each holds `expect` events (or the deadline); how many do."""
    done = set()
    while len(done) < len(sel.get_map()) and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            key.data.extend(key.fileobj.recv(1 << 20))
            if key.data.count(b"\ndata: ") >= expect:
                done.add(key.fd)
    return len(done)


def _in_order(body, n):
    seqs = [int(m) for m in re.findall(rb"data: seq=(\d+)", body)]
    return seqs == list(range(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--events", type=int, default=100)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, ctl = start_daemon(tmp, args.clients)
        try:
            report(proc, port, ctl, args)
        finally:
            proc.terminate()
            proc.wait(10)


def report(proc, port, ctl, args):
    rss0 = rss_bytes(proc.pid)
    c0 = cpu_seconds(proc.pid)
    sel, socks = open_streams(port, args.clients)
    control = socket.socket(socket.AF_UNIX)
    control.connect(ctl)
    rfile = control.makefile("rb")
    for _ in range(1000):       # until the daemon has every stream (bounded)
        control.sendall(b'{"cmd":"stats"}\n')
        if json.loads(rfile.readline())["clients"] >= args.clients:
            break
    c1 = cpu_seconds(proc.pid)
    rss1 = rss_bytes(proc.pid)
    t0 = time.monotonic()
    for i in range(args.events):
        control.sendall(json.dumps({"cmd": "publish", "service": "/bench",
                                    "data": f"seq={i} t={time.time_ns()}"}).encode() + b"\n")
        json.loads(rfile.readline())
    got = drain(sel, args.events, time.monotonic() + 60)
    elapsed = time.monotonic() - t0
    c2 = cpu_seconds(proc.pid)
    ordered = all(k.data.count(b"\ndata: ") == args.events for k in sel.get_map().values())
    ordered = ordered and all(_in_order(k.data, args.events) for k in sel.get_map().values())
    deliveries = args.clients * args.events
    print(f"| clients | events | deliveries | complete | daemon CPU s (fan-out) | "
          f"deliveries per CPU-s | connect CPU us/conn | RSS KiB/conn | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {args.events} | {deliveries} | {got}/{args.clients}"
          f"{'' if ordered else ' (NOT all in order)'} | {c2 - c1:.2f} | "
          f"{deliveries / max(c2 - c1, 1e-9):,.0f} | {(c1 - c0) / args.clients * 1e6:.0f} | "
          f"{(rss1 - rss0) / args.clients / 1024:.1f} | {elapsed:.2f} |")
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
