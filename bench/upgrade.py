#!/usr/bin/env python3
"""Live upgrade under load (SPEC 13), standard library only: N streams (bench/streams.py's
workers: every event's `seq=<n>` checked per stream: lost, duplicated, out of order, and
streams closed), R events/s published through the control socket, U handovers in a row:

  --mode upgrade   `upgrade` on the control socket (a new process takes every socket)
  --mode fdstore   SIGTERM with FDSTORE set and a fake systemd (a datagram socket here that
                   takes the fds, then starts the next daemon with LISTEN_FDS/LISTEN_FDNAMES),
                   i.e. `systemctl restart` with FileDescriptorStoreMax=

For each handover: the freeze seen by a probe stream of its own (the longest silence
between two events around it, events being 1000/R ms apart), for `upgrade` also the freeze
the old process measured (freeze start to the new one's `took`) and `ms` (the command to
the new process serving); RSS (stats' rss_bytes) of the old process before and the new after.

    python3 bench/upgrade.py [--streams 10000] [--rate 100] [--upgrades 20] [--mode both]
"""
import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import streams  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INI = """[ssed]
listen = 127.0.0.1:{port}
control = ctl.sock
max_clients = {limit}
max_clients_per_ip = {limit}
keepalive = 15
[/bench]
source = none
history = 100
"""
# Put the passed descriptors at 3, 4, ... as systemd does, moving each once (10,000 of them
# leave no room under RLIMIT_NOFILE for a copy of each); a cycle goes through a spare fd.
LAUNCH = """
import fcntl, os, sys
fds, names = [int(x) for x in sys.argv[1].split(",")], sys.argv[2]
n = len(fds)
pending = {fd: 3 + i for i, fd in enumerate(fds) if fd != 3 + i}
by_target = {t: fd for fd, t in pending.items()}
stack = [fd for fd, t in pending.items() if t not in pending]
while pending:
    if stack:
        fd = stack.pop()
    else:                       # only cycles left: one source steps aside
        fd = next(iter(pending))
        spare = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, n + 3)
        t = pending.pop(fd)
        os.close(fd)
        pending[spare], by_target[t] = t, spare
        if fd in by_target:
            stack.append(by_target[fd])
        continue
    t = pending.pop(fd)
    os.dup2(fd, t)
    os.close(fd)
    del by_target[t]
    if fd in by_target:
        stack.append(by_target[fd])
for i in range(n):
    os.set_inheritable(3 + i, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(n), LISTEN_FDNAMES=names)
os.execv(sys.executable, [sys.executable, "-m", "ssed", *sys.argv[3:]])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Control:
    """One control connection that comes back after the daemon closed it."""

    def __init__(self, path):
        self.path, self.sock, self.buf = path, None, b""

    def ask(self, request, timeout=30.0):
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(self.path)
            self.buf = b""
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)

    def drop(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None


class Publisher(threading.Thread):
    """`seq=<n> t=<ns>` at `rate` a second; a publish whose answer did not come (its
    connection closed by a handover) is sent again: answered ones are 1..acked."""

    def __init__(self, path, rate):
        super().__init__(daemon=True)
        self.ctl, self.rate, self.acked, self.stop = Control(path), rate, 0, threading.Event()

    def run(self):
        start = time.monotonic()
        while not self.stop.is_set():
            n = self.acked + 1
            wait = start + (n - 1) / self.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                answer = self.ctl.ask({"cmd": "publish", "service": "/bench",
                                       "data": f"seq={n} t={time.time_ns()}"})
            except OSError:
                self.ctl.drop()
                time.sleep(0.002)
                continue
            if answer.get("ok"):
                self.acked = n


class Probe(threading.Thread):
    """One stream of our own: when each event arrived (monotonic)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(b"GET /bench HTTP/1.1\r\nHost: x\r\n\r\n")
        self.times, self.eof = [], False

    def run(self):
        tail = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return
            now = time.monotonic()
            tail += data
            n = tail.count(b"data: seq=")
            tail = tail[tail.rfind(b"\n\n") + 2:] if b"\n\n" in tail else tail
            self.times.extend([now] * n)

    def gap_around(self, t0, t1):
        """The longest silence between two events with either end within [t0, t1]."""
        ts = self.times
        gaps = [b - a for a, b in zip(ts, ts[1:]) if t0 <= b and a <= t1]
        return max(gaps, default=0.0)


class Fleet:
    """The daemon (its successive processes), in a temp dir, its log in one file."""

    def __init__(self, tmp, n, mode):
        self.tmp, self.mode, self.port = tmp, mode, free_port()
        self.ini = os.path.join(tmp, "bench.ini")
        self.ctl_path = os.path.join(tmp, "ctl.sock")
        with open(self.ini, "w") as f:
            f.write(INI.format(port=self.port, limit=n + 100))
        self.log_path = os.path.join(tmp, "ssed.log")
        # The package as it is now, copied: an upgrade starts the code on disk, which must
        # not be the tree being edited meanwhile.
        shutil.copytree(os.path.join(ROOT, "ssed"), os.path.join(tmp, "code", "ssed"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.env = dict(os.environ, PYTHONPATH=os.path.join(tmp, "code"))
        self.env.pop("JOURNAL_STREAM", None)
        self.manager = None
        if mode == "fdstore":
            self.manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            name = f"ssed-bench-fdstore-{os.getpid()}"
            self.manager.bind("\0" + name)
            self.manager.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
            self.env.update(NOTIFY_SOCKET="@" + name, FDSTORE="65536")
        self.store, self.stored = {}, threading.Event()
        if self.manager is not None:
            threading.Thread(target=self._manage, daemon=True).start()
        self.proc = self._spawn([sys.executable, "-m", "ssed", "-c", self.ini], ())
        self.pid = self.proc.pid
        self._wait_log("ready: ", 1)

    def _spawn(self, argv, fds):
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(argv, cwd=self.tmp, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, pass_fds=fds, preexec_fn=raise_nofile)

    def _wait_log(self, needle, count, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                if f.read().decode("utf-8", "replace").count(needle) >= count:
                    return
            time.sleep(0.01)
        raise RuntimeError(f"no {needle!r} x{count} in the log:\n{self.tail()}")

    def tail(self, size=3000):
        with open(self.log_path, "rb") as f:
            data = f.read()
        return data[-size if size else 0:].decode("utf-8", "replace")

    def rss(self):
        ctl = Control(self.ctl_path)
        try:
            return ctl.ask({"cmd": "stats"})["rss_bytes"]
        finally:
            ctl.drop()

    def upgrade(self, i):
        """One handover: its figures."""
        if self.mode == "upgrade":
            ctl = Control(self.ctl_path)
            try:
                answer = ctl.ask({"cmd": "upgrade"}, timeout=60)
            finally:
                ctl.drop()
            if not answer.get("ok"):
                raise RuntimeError(f"upgrade {i} failed: {answer}\n{self.tail()}")
            self.pid = answer["pid"]
            return {"ms": answer["ms"], "freeze_ms": answer["freeze_ms"],
                    "streams": answer["streams"]}
        return self._restart(i)

    def _restart(self, i):
        t0 = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        self._collect()         # (as systemd does, read while it sends: the queue is short)
        if self.proc is not None:
            self.proc.wait(60)
        store, self.store = self.store, {}
        pairs = [(name, fd) for name, fds in store.items() for fd in fds][::-1]
        fds = [fd for _, fd in pairs]
        self.proc = self._spawn([sys.executable, "-c", LAUNCH, ",".join(map(str, fds)),
                                 ":".join(name for name, _ in pairs), "-c", self.ini], fds)
        self.pid = self.proc.pid
        for fd in fds:
            os.close(fd)
        self._wait_log("ready: ", i + 2)
        return {"ms": round((time.monotonic() - t0) * 1000), "stored": len(fds)}

    def _manage(self):
        """systemd's side, always reading (its queue holds ~10 datagrams): the fd store."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.manager, 65536, 1024)
            except OSError:
                return
            fields = dict(line.partition("=")[::2] for line in data.decode().split("\n"))
            if fields.get("FDSTORE") == "1":
                self.store.setdefault(fields["FDNAME"], []).extend(fds)
                if fields["FDNAME"] == "ssed-state":
                    self.stored.set()
            for fd in ([] if fields.get("FDSTORE") == "1" else fds):
                os.close(fd)

    def _collect(self):
        if not self.stored.wait(60):
            raise RuntimeError(f"nothing stored in 60 s:\n{self.tail()}")
        self.stored.clear()

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gather(workers, kind, timeout):
    out = []
    for _, pipe in workers:
        if not pipe.poll(timeout):
            raise RuntimeError(f"a load worker gave no {kind!r} in {timeout:.0f} s")
        msg = pipe.recv()
        assert msg[0] == kind, msg
        out.append(msg[1])
    return out


def run(mode, args):
    with _tmpdir(args.keep) as tmp:
        fleet = Fleet(tmp, args.streams + 1, mode)
        ctx = multiprocessing.get_context("fork")
        workers = []
        try:
            for _ in range(args.workers):
                here, there = ctx.Pipe()
                p = ctx.Process(target=streams.worker_main, args=(there, None), daemon=True)
                p.start()
                there.close()
                workers.append((p, here))
            shares = [args.streams // args.workers + (i < args.streams % args.workers)
                      for i in range(args.workers)]
            for (_, pipe), share in zip(workers, shares):
                pipe.send(("connect", "127.0.0.1", fleet.port, "/bench", share, 256, 120))
            connected = sum(c["connected"] for c in gather(workers, "connected", 130))
            probe = Probe(fleet.port)
            probe.start()
            for _, pipe in workers:
                pipe.send(("run",))
            pub = Publisher(fleet.ctl_path, args.rate)
            pub.start()
            time.sleep(args.every)
            rows = []
            for i in range(args.upgrades):
                rss_old = fleet.rss()
                t0 = time.monotonic()
                row = fleet.upgrade(i)
                t1 = time.monotonic()
                time.sleep(args.every)
                row.update(rss_old=rss_old, rss_new=fleet.rss(),
                           gap_ms=round(probe.gap_around(t0, t1) * 1000, 1))
                rows.append(row)
                print(f"  {mode} {i + 1}: {row}", file=sys.stderr, flush=True)
            pub.stop.set()
            pub.join(30)
            for _, pipe in workers:
                pipe.send(("end", pub.acked, 30))
            results = gather(workers, "result", 60)
            probe_closed = probe.eof        # (before the daemon is killed below)
        finally:
            fleet.stop()
            for p, _ in workers:
                p.kill()
            took = [line for line in fleet.tail(None).splitlines() if "took over" in line]
            print("\n".join(took), file=sys.stderr, flush=True)
    return summary(mode, args, connected, pub.acked, results, rows, probe_closed)


def _tmpdir(keep):
    """The bench's directory: removed after, or (--keep) left with its log, named here."""
    if not keep:
        return tempfile.TemporaryDirectory(prefix="ssed-bench-up-")
    tmp = tempfile.mkdtemp(prefix="ssed-bench-up-")
    print(f"keeping {tmp}", file=sys.stderr, flush=True)
    return contextlib.nullcontext(tmp)


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else None


def summary(mode, args, connected, published, results, rows, probe_closed):
    gaps = [r["gap_ms"] for r in rows]
    out = {"mode": mode, "streams": connected, "rate": args.rate, "handovers": len(rows),
           "published": published,
           "lost": sum(r["lost"] for r in results), "dups": sum(r["dups"] for r in results),
           "out_of_order": sum(r["ooo"] for r in results),
           "closed": sum(r["closed"] for r in results), "probe_closed": probe_closed,
           "incomplete": sum(r["incomplete"] for r in results),
           "probe_gap_ms_p50": pct(gaps, 0.5), "probe_gap_ms_max": max(gaps, default=None),
           "handover_ms_p50": pct([r["ms"] for r in rows], 0.5),
           "handover_ms_max": max((r["ms"] for r in rows), default=None),
           "rss_old_mib": round(rows[0]["rss_old"] / 2**20, 1) if rows else None,
           "rss_new_mib_last": round(rows[-1]["rss_new"] / 2**20, 1) if rows else None}
    if mode == "upgrade":
        freeze = [r["freeze_ms"] for r in rows]
        out.update(freeze_ms_p50=pct(freeze, 0.5), freeze_ms_max=max(freeze, default=None))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--upgrades", type=int, default=20)
    ap.add_argument("--every", type=float, default=2.0, help="seconds between handovers")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", choices=["upgrade", "fdstore", "both"], default="both")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (its ssed.log)")
    args = ap.parse_args()
    raise_nofile()
    for mode in (["upgrade", "fdstore"] if args.mode == "both" else [args.mode]):
        print(json.dumps(run(mode, args)), flush=True)


if __name__ == "__main__":
    main()
