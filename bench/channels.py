#!/usr/bin/env python3
"""Channel templates (SPEC 10) at scale, against the real daemon (`python3 -m ssed` as a
subprocess, one `[/user/*]` template):

(a) memory per idle channel: the daemon's RSS at start, with N channels made (one publish to
    each, JSON lines pipelined over ONE control-socket connection: the daemon's own path), and
    after they idled out again (`idle` seconds later: `list` says 0 channels);
(b) S subscribers on S distinct channels (`/user/c<i>`, held in a child process: the daemon
    and the client each stay under the 20,000-descriptor limit), then one publish to each
    channel: every event must reach exactly its one subscriber, which the child checks (it
    knows which channel each socket is on) and counts.

    python3 bench/channels.py                        # N = 100,000, S = 10,000
    python3 bench/channels.py --channels 20000 --subscribers 2000 --root DIR
    python3 bench/channels.py --waves 3 --subscribers 0    # (a) three times, no (b)

Only the standard library. Prints one JSON object of figures.
"""
import argparse
import json
import multiprocessing
import os
import re
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INI = """[ssed]
listen = 127.0.0.1:0
control = ssed.sock
max_clients = 20000
max_clients_per_ip = 20000
keepalive = 600
index = false
[/user/*]
idle = {idle}
max_channels = 200000
history = 1
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class Daemon:
    def __init__(self, root, workdir, idle):
        self.dir = workdir
        ini = os.path.join(workdir, "ssed.ini")
        with open(ini, "w") as f:
            f.write(INI.format(idle=idle))
        env = dict(os.environ, PYTHONPATH=root)
        log = os.path.join(workdir, "ssed.log")
        with open(log, "wb") as f:      # a file, not a pipe nobody reads: never blocks it
            self.proc = subprocess.Popen([sys.executable, "-m", "ssed", "-c", ini],
                                         stderr=f, stdout=subprocess.DEVNULL, env=env,
                                         cwd=workdir, preexec_fn=_raise_nofile)
        self.port = None
        deadline = time.monotonic() + 30
        while self.port is None and time.monotonic() < deadline:
            with open(log, "rb") as f:
                text = f.read()
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", text)
            if m and b"ready" in text:
                self.port = int(m.group(1))
            else:
                time.sleep(0.1)
        assert self.port, "daemon did not start"
        self.control = os.path.join(workdir, "ssed.sock")

    def ctl(self, request):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(60)
            s.connect(self.control)
            s.sendall(json.dumps(request).encode() + b"\n")
            return json.loads(_read_lines(s, 1)[0])

    def publish_many(self, paths, data_of):
        """One publish per path, pipelined on one connection; the answers that were ok."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(120)
            s.connect(self.control)
            lines = b"".join(json.dumps({"cmd": "publish", "service": p,
                                         "data": data_of(p)}).encode() + b"\n"
                             for p in paths)
            answers = []
            # Write and read together: the answers would fill the socket buffer otherwise.
            view = memoryview(lines)
            buf = b""
            while len(answers) < len(paths):
                r, w, _ = select.select([s], [s] if view else [], [], 60)
                if not r and not w:
                    raise TimeoutError("control socket stalled")
                if w:
                    sent = s.send(view[:65536])
                    view = view[sent:]
                if r:
                    data = s.recv(1 << 20)
                    if not data:
                        break
                    buf += data
                    *done, buf = buf.split(b"\n")
                    answers.extend(done)
            return sum(1 for a in answers if json.loads(a).get("ok"))

    def channels(self):
        for entry in self.ctl({"cmd": "list"})["services"]:
            if entry["path"] == "/user/*":
                return entry["channels"]
        return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _read_lines(sock, n):
    buf = b""
    while buf.count(b"\n") < n:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf.split(b"\n")[:n]


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- (a) memory per idle channel ---------------------------------------------------------------

def memory(d, n, idle, start=None):
    """One wave; `start`: the RSS the wave is measured against (that before the first)."""
    before = rss_kib(d.proc.pid)
    start = before if start is None else start
    t0 = time.monotonic()
    ok = d.publish_many([f"/user/m{i}" for i in range(n)], lambda p: "hello")
    made_s = time.monotonic() - t0
    made = d.channels()
    full = rss_kib(d.proc.pid)
    deadline = time.monotonic() + idle + 120
    while d.channels() and time.monotonic() < deadline:
        time.sleep(0.5)
    gone_after_s = time.monotonic() - t0 - made_s
    time.sleep(1.0)                 # the sweep's last compaction
    after = rss_kib(d.proc.pid)
    return {"channels_made": made, "publishes_ok": ok, "made_s": round(made_s, 2),
            "rss_start_kib": start, "rss_full_kib": full, "rss_after_idle_kib": after,
            "kib_per_channel": round((full - before) / n, 3),
            "rss_after_minus_start_kib": after - start,
            "channels_after": d.channels(), "idled_out_within_s": round(gone_after_s, 1)}


# -- (b) one subscriber per channel, one publish per channel ---------------------------------

def subscribers_main(pipe, port, count):
    """The child: `count` streams on /user/c<i>; then counts, per socket, the events whose
    data names its own channel (right) and any other (wrong)."""
    _raise_nofile()
    ep = select.epoll()
    socks, channel_of, head_done, tails = {}, {}, set(), {}
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /user/c{i} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
                  .encode())
        s.setblocking(False)
        fd = s.fileno()
        socks[fd], channel_of[fd], tails[fd] = s, f"c{i}", b""
        ep.register(fd, select.EPOLLIN)
    right, wrong = {}, 0

    def read(fd):
        nonlocal wrong
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        buf = tails[fd] + data
        if fd not in head_done:
            if b"\r\n\r\n" not in buf:
                tails[fd] = buf
                return
            head, _, buf = buf.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                wrong += 1
            head_done.add(fd)
        cut = buf.rfind(b"\n\n") + 2
        tails[fd] = buf[cut:] if cut > 1 else buf
        for line in buf[:cut].split(b"\n") if cut > 1 else ():
            if line.startswith(b"data: "):
                name = line[6:].decode()
                if name == channel_of[fd]:
                    right[fd] = right.get(fd, 0) + 1
                else:
                    wrong += 1
    deadline = time.monotonic() + 120
    while len(head_done) < count and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.5):
            read(fd)
    pipe.send(("ready", len(head_done)))
    pipe.recv()                                 # the publishes are done
    deadline = time.monotonic() + 60
    while sum(right.values()) + wrong < count and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.5):
            read(fd)
    for _ in range(3):                          # anything more that was sent: wrong
        for fd, _ in ep.poll(0.2):
            read(fd)
    pipe.send(("result", {"streams": len(head_done), "events_right": sum(right.values()),
                          "streams_with_exactly_one": sum(1 for n in right.values() if n == 1),
                          "events_wrong": wrong}))


def fan(d, count):
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=subscribers_main, args=(child, d.port, count))
    proc.start()
    _, connected = parent.recv()
    channels = d.channels()
    t0 = time.monotonic()
    ok = d.publish_many([f"/user/c{i}" for i in range(count)], lambda p: p.rsplit("/", 1)[1])
    publish_s = time.monotonic() - t0
    parent.send("go")
    _, result = parent.recv()
    proc.join(30)
    stats = d.ctl({"cmd": "stats"})
    return {"subscribers": count, "connected": connected, "channels": channels,
            "publishes_ok": ok, "publish_s": round(publish_s, 2), **result,
            "daemon_events_delivered": stats["events_delivered"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--waves", type=int, default=1,
                        help="make and idle out N channels this many times in a row: after "
                             "each, RSS against the start (no creep)")
    parser.add_argument("--root", default=ROOT, help="the ssed package's directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        d = Daemon(args.root, work, args.idle)
        try:
            figures = {"memory": memory(d, args.channels, args.idle)}
            start = figures["memory"]["rss_start_kib"]
            for wave in range(2, args.waves + 1):
                figures[f"memory_wave{wave}"] = memory(d, args.channels, args.idle, start)
            if args.subscribers:
                figures["fan"] = fan(d, args.subscribers)
        finally:
            d.stop()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
