#!/usr/bin/env python3
"""What a connection costs ssed in user-space instructions: a number that machine noise does
not move, for comparing changes to the connect path (wall-clock CPU per connect drifts by 30 %
on a shared VM, more than most changes).

    python3 bench/connect.py                 # valgrind twice (200 and 1,200 connects): the
                                             # instructions per connect, from the difference
    python3 bench/connect.py --root DIR      # the ssed package in DIR (e.g. a git worktree)
    python3 bench/connect.py --storm N       # one in-process storm of N, without valgrind

The storm: a Hub and a Loop built as `cli.serve` builds them, one `[/bench]` service, and N
client sockets in the same process that connect and send `GET /bench` first; then the loop
accepts, reads, routes and answers them all. The clients' own work is the same on both sides of
a comparison and cancels in the difference; the kernel's work is not counted (valgrind counts
user space only). Needs valgrind (`apt-get install valgrind`) for the default mode.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEST = b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
INI = ("[ssed]\nlisten = 127.0.0.1:0\nmax_clients = 100000\nmax_clients_per_ip = 100000\n"
       "index = false\n[/bench]\nsource = none\n")


def storm(n, root):
    sys.path.insert(0, root)
    from ssed import config as configmod
    from ssed.hub import Hub
    from ssed.loop import Loop
    from ssed.systemd import Notifier
    def log(level, text):
        pass
    log.debug = False       # as the daemon's log below the debug level: no debug lines built
    hub = Hub(configmod.parse(INI, "connect.ini"), log, now=time.time())
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    loop = Loop(hub, [listener], None, log, lambda: [], Notifier({}))
    hub.start()
    loop.start()
    clients = []
    for _ in range(n):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(listener.getsockname())
        except BlockingIOError:
            pass
        clients.append(c)
    time.sleep(0.5)                 # handshakes done: every connection waits in the backlog
    for c in clients:
        c.send(REQUEST)
    end = time.monotonic() + 60
    while hub.client_count < n and time.monotonic() < end:
        loop.turn(0.5)
    print(f"served {hub.client_count} of {n}")
    return hub.client_count == n


def instructions(n, root):
    python = os.path.realpath(sys.executable)     # not a shim: valgrind follows no exec
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                          "--cachegrind-out-file=/dev/null", python, __file__,
                          "--storm", str(n), "--root", root],
                         capture_output=True, text=True, timeout=600)
    m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode or m is None or f"served {n} of {n}" not in out.stdout:
        sys.exit(f"storm of {n} failed: {out.stdout[-300:]} {out.stderr[-300:]}")
    return int(m.group(1).replace(",", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=ROOT, help="directory holding the ssed package")
    ap.add_argument("--storm", type=int, help="run one storm of N connects in this process")
    a = ap.parse_args()
    if a.storm:
        sys.exit(0 if storm(a.storm, a.root) else 1)
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    small, big = instructions(200, a.root), instructions(1200, a.root)
    print(f"{(big - small) / 1000 / 1000:.1f}k user-space instructions per connect "
          f"(ssed in {a.root}; the in-process clients' share included)")


if __name__ == "__main__":
    main()
