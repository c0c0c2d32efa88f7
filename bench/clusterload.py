"""The load side of bench/cluster.py: bench/streams.py's worker with what a cluster needs
checked, and an open-loop publisher spread over several servers.

Worker (a streams.Worker): on top of lost / duplicated / out of order and the latency histogram,
each stream keeps a digest of the order in which its events came (a polynomial hash of the
`seq` values, mod 2^61-1): two streams with the same digest saw the same events in the same
order, so "identical order on every node" is one comparison per stream, against each other and
against the order Redis holds. It also counts events read per 10 ms (a timeline: when
deliveries stopped and started again around a Redis outage), takes at the end the seqs that
were never acknowledged (refused or of unknown outcome: not counted as lost), and may keep its
streams open for another round (a rate ladder on the same 10,000 connections).

  -> ("connect", host, port, path, count, inflight, timeout)   <- ("connected", {...})
  -> ("run",)  ...  ("end", P, grace_s, unacked_seqs, keep)      <- ("result", {...})
  (keep: the streams stay open and the next "run" starts a new round; else they are reset)

Publisher: event n (`seq=<n> t=<ns>`) goes to target (n-1) mod k at start + (n-1)/R whatever
the answers do; each target is a control socket (JSON lines) or an HTTP keep-alive connection
(POST, pipelined: nchan's publisher location). It sorts every answer into acknowledged,
refused (with the first reason) or outcome unknown, and keeps when each came.
"""
import collections
import json
import selectors
import os
import select
import socket
import time

import streams
from streams import BUCKET_NS, EVENT, READ_SIZE, cpu_now

MOD = (1 << 61) - 1
MUL = 1_000_003
TIMELINE_NS = 10_000_000     # the timeline's resolution: 10 ms


def order_digest(seqs):
    """The digest a stream that received `seqs` in this order has."""
    d = 0
    for s in seqs:
        d = (d * MUL + s) % MOD
    return d


class Worker(streams.Worker):
    def __init__(self, pipe):
        super().__init__(pipe)
        self.digest = [0] * len(self.last)
        self.timeline = {}
        self.counted = 0             # distinct events received in the rounds before this one

    def serve(self):
        msg = self.pipe.recv()
        if msg[0] == "connect":
            self.pipe.send(("connected", self.connect(*msg[1:])))
        ctl = self.pipe.fileno()
        self.ep.register(ctl, select.EPOLLIN)
        while True:
            for fd, _ in self.ep.poll(1.0):
                if fd != ctl:
                    self.read_one(fd)
                    continue
                msg = self.pipe.recv()
                if msg[0] == "run":
                    msg = self.run(ctl)
                if msg[0] == "end" and not self.finish(*msg[1:]):
                    return
                if msg[0] == "quit":
                    return

    def run(self, ctl):
        """streams.Worker.run's hot loop, plus the order digest and the timeline."""
        self.cpu0, self.wall0 = cpu_now(), time.monotonic()
        ep_poll, read, tns, find = self.ep.poll, os.read, time.time_ns, EVENT.findall
        tails, last, hist, odd, whole = self.tail, self.last, self.hist, self.odd, self.whole
        dg, tl = self.digest, self.timeline
        get, tget = hist.get, tl.get
        nreads = 0
        last_ns = self.last_recv_ns
        while True:
            for fd, _ in ep_poll(1.0):
                if fd == ctl:
                    msg = self.pipe.recv()
                    if msg[0] == "end":
                        self.reads += nreads
                        self.last_recv_ns = last_ns
                        return msg
                    continue
                try:
                    data = read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                now = tns()
                if not data:
                    self.drop(fd)
                    continue
                nreads += 1
                if data[-2:] != b"\n\n" or tails[fd]:
                    data = whole(fd, data)
                    if data is None:
                        continue
                events = find(data)
                if events:
                    last_ns = now
                    slot = now // TIMELINE_NS
                    tl[slot] = tget(slot, 0) + len(events)
                    d = dg[fd]
                    for s, t in events:
                        seq = int(s)
                        d = (d * MUL + seq) % MOD
                        b = (now - int(t)) // BUCKET_NS
                        hist[b] = get(b, 0) + 1
                        if seq == last[fd] + 1:
                            last[fd] = seq
                        else:
                            odd(fd, seq)
                    dg[fd] = d

    def consume(self, fd, data, now):
        if data[-2:] != b"\n\n" or self.tail[fd]:
            data = self.whole(fd, data)
            if data is None:
                return
        events = EVENT.findall(data)
        if events:
            self.last_recv_ns = now
            slot = now // TIMELINE_NS
            self.timeline[slot] = self.timeline.get(slot, 0) + len(events)
            for s, t in events:
                seq = int(s)
                self.digest[fd] = (self.digest[fd] * MUL + seq) % MOD
                b = (now - int(t)) // BUCKET_NS
                self.hist[b] = self.hist.get(b, 0) + 1
                if seq == self.last[fd] + 1:
                    self.last[fd] = seq
                else:
                    self.odd(fd, seq)

    def _lost(self, fd, total, unacked):
        holes = self.holes.get(fd, ())
        tail = range(self.last[fd] + 1, total + 1)
        return (sum(1 for s in holes if s not in unacked)
                + sum(1 for s in tail if s not in unacked))

    def _unacked_seen(self, fd, unacked):
        holes = self.holes.get(fd, ())
        return sum(1 for s in unacked if s <= self.last[fd] and s not in holes)

    def finish(self, total, grace, unacked=(), keep=False):
        """Read until every live stream has every acknowledged seq up to `total` (at most
        `grace` s), report; True when the streams stay open for another round."""
        unacked = set(unacked)
        wall1, cpu1 = time.monotonic(), cpu_now()
        deadline = wall1 + grace
        waiting = {fd for fd in self.socks if self._lost(fd, total, unacked)}
        ctl = self.pipe.fileno()
        while waiting and time.monotonic() < deadline:
            for fd, _ in self.ep.poll(max(0.0, min(0.2, deadline - time.monotonic()))):
                if fd == ctl:
                    continue
                self.read_one(fd)
                if fd in waiting and (fd not in self.socks or not self._lost(fd, total, unacked)):
                    waiting.discard(fd)
        live = list(self.socks)
        # Order is compared between complete streams only: one that missed events (the
        # load fell behind) has another digest whatever the order it saw.
        digests = collections.Counter(self.digest[fd] for fd in live
                                      if not self._lost(fd, total, unacked))
        result = {
            "streams": len(live), "closed": self.closed,
            "incomplete": sum(1 for fd in waiting if fd in self.socks),
            "received": self.received() - self.counted,
            "lost": sum(self._lost(fd, total, unacked) for fd in live),
            "unacked_seen": sum(self._unacked_seen(fd, unacked) for fd in live),
            "dups": self.dups, "ooo": self.ooo,
            "digests": {str(d): n for d, n in digests.items()},
            "hist": self.hist, "last_recv_ns": self.last_recv_ns, "timeline": self.timeline,
            "cpu_run_s": round(cpu1 - getattr(self, "cpu0", cpu1), 3),
            "wall_run_s": round(wall1 - getattr(self, "wall0", wall1), 3),
            "reads": self.reads, "grace_used_s": round(time.monotonic() - wall1, 3),
        }
        self.pipe.send(("result", result))
        if keep:
            self.hist, self.timeline = {}, {}
            self.dups = self.ooo = self.reads = 0
            self.counted = self.received()
            return True
        for s in self.socks.values():
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, streams.LINGER_RST)
            except OSError:
                pass
            s.close()
        self.socks.clear()
        return False


def worker_main(pipe, cpus):
    if cpus:
        os.sched_setaffinity(0, cpus)
    Worker(pipe).serve()


# ---------------------------------------------------------------------- publishing

class ControlTarget:
    """One connection to an ssed control socket: a publish per line, an answer per line."""

    def __init__(self, path, service="/bench"):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.head = b'{"cmd":"publish","service":"%s","data":"' % service.encode()
        self.buf = b""

    def request(self, seq):
        return self.head + b'seq=%d t=%d"}\n' % (seq, time.time_ns())

    def answers(self, data):
        """[(ok, reason)] of the whole answers that arrived."""
        *whole, self.buf = (self.buf + data).split(b"\n")
        out = []
        for line in whole:
            answer = json.loads(line)
            out.append((answer.get("ok") is True, answer.get("error")))
        return out


class HttpTarget:
    """One keep-alive HTTP connection publishing with POST (pipelined): nchan's /pub."""

    def __init__(self, port, path="/pub"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(False)
        self.head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n").encode()
        self.buf = b""

    def request(self, seq):
        body = b"seq=%d t=%d" % (seq, time.time_ns())
        return self.head % len(body) + body

    def answers(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = self.buf[:end].decode("latin-1")
            size = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    size = int(value)
            if len(self.buf) < end + 4 + size:
                return out
            body = self.buf[end + 4:end + 4 + size]
            self.buf = self.buf[end + 4 + size:]
            status = head.split(" ", 2)[1]
            out.append((status.startswith("2"), None if status.startswith("2")
                        else f"HTTP {status}: {body[:100].decode(errors='replace')}"))


class Publisher:
    """Open-loop over several targets; see the module's docstring. `during(elapsed)` is called
    between publishes (the driver's hook: an outage to start or end)."""

    def __init__(self, targets, rate, first_seq=1):
        self.targets, self.rate, self.first = targets, rate, first_seq
        self.sel = __import__("selectors").DefaultSelector()
        for i, t in enumerate(targets):
            self.sel.register(t.sock, 1, i)
        self.pending = [collections.deque() for _ in targets]   # (seq, sent) per target
        self.acked, self.refused, self.unknown = set(), {}, set()
        self.answer_at = {}          # seq -> (monotonic answer time, ok)
        self.rtt = []
        self.seq = first_seq - 1

    def _pump(self, timeout):
        for key, _ in self.sel.select(max(0.0, timeout)):
            target = self.targets[key.data]
            try:
                data = target.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError(f"publish target {key.data} closed its connection")
            now = time.monotonic()
            for ok, why in target.answers(data):
                seq, sent = self.pending[key.data].popleft()
                self.rtt.append(now - sent)
                self.answer_at[seq] = (now, ok)
                if ok:
                    self.acked.add(seq)
                elif why and "outcome unknown" in why:
                    self.unknown.add(seq)
                else:
                    self.refused[seq] = why

    def run(self, duration, during=None):
        total = max(1, round(self.rate * duration))
        self.start_ns, start = time.time_ns(), time.monotonic()
        lag = 0.0
        for n in range(total):
            due = start + n / self.rate
            now = time.monotonic()
            while now < due:
                self._pump(due - now)
                now = time.monotonic()
            if during:
                during(now - start)
            lag = max(lag, now - due)
            self.seq += 1
            i = n % len(self.targets)
            self.pending[i].append((self.seq, time.monotonic()))
            self.targets[i].sock.setblocking(True)
            self.targets[i].sock.sendall(self.targets[i].request(self.seq))
            self.targets[i].sock.setblocking(False)
        self.elapsed, self.lag_ms = time.monotonic() - start, lag * 1e3
        return self.seq

    def wait_answers(self, timeout):
        deadline = time.monotonic() + timeout
        while any(self.pending) and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())

    def unacked(self):
        """Seqs published and not acknowledged (refused, unknown or unanswered)."""
        return [s for s in range(self.first, self.seq + 1) if s not in self.acked]

    def close(self):
        for t in self.targets:
            t.sock.close()
        self.sel.close()


def order_probe(setup, events, per_server=4):
    """Cross-node order, load aside: `per_server` streams on each server record every event;
    `events` publishes go out as one burst, round-robin over the servers' publish targets
    (pipelined, not paced: publishes on different nodes race each other); then every stream's
    whole sequence of acknowledged events is compared."""
    sel, streams_ = selectors.DefaultSelector(), []
    for server in setup.servers:
        for _ in range(per_server):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(f"GET {setup.path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream"
                         "\r\n\r\n".encode())
            sock.setblocking(False)
            rec = {"server": server.name, "buf": b"", "seqs": []}
            sel.register(sock, selectors.EVENT_READ, rec)
            streams_.append(rec)
    pub = Publisher([make() for make in setup.targets], rate=1e9)
    deadline = time.monotonic() + 60

    def read(timeout):
        for key, _ in sel.select(timeout):
            try:
                data = key.fileobj.recv(1 << 16)
            except BlockingIOError:
                continue
            rec = key.data
            rec["buf"] += data
            *whole, rec["buf"] = rec["buf"].split(b"\n")
            rec["seqs"] += [int(m.group(1)) for line in whole
                            if (m := EVENT.match(line))]
    # Warm-up events (seq 0) until every stream has one: nchan subscribes to Redis after the
    # stream opens, and a stream sees nothing published before (first_message newest).
    warm = Publisher([make() for make in setup.targets], rate=1e9, first_seq=0)
    while time.monotonic() < deadline and not all(0 in r["seqs"] for r in streams_):
        warm.seq = -1
        warm.run(1 / 1e9)
        end = time.monotonic() + 1
        while time.monotonic() < end:
            warm._pump(0)
            read(0.05)
    warm.close()
    for _ in range(0, events, 100):          # in chunks, answers read in between: pipelined
        pub.run(100 / 1e9)                     # HTTP must not fill both ways' buffers
        pub._pump(0)
        read(0)
    while any(pub.pending) and time.monotonic() < deadline:
        pub._pump(0.05)
        read(0)
    acked = pub.acked
    while time.monotonic() < deadline and not all(acked <= set(r["seqs"]) for r in streams_):
        read(0.2)
    orders = collections.Counter(tuple(s for s in r["seqs"] if s in acked) for r in streams_)
    out = {"events": events, "acked": len(acked), "streams": len(streams_),
           "orders": len(orders), "complete": sum(acked <= set(r["seqs"]) for r in streams_)}
    if len(orders) > 1:
        (a, _), (b, _) = orders.most_common(2)
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        out["first_difference"] = {"at": i, "one": list(a[max(0, i - 2):i + 3]),
                                   "other": list(b[max(0, i - 2):i + 3])}
        out["by_server"] = collections.Counter(
            f"{r['server']}:{hash(tuple(s for s in r['seqs'] if s in acked)) % 1000}"
            for r in streams_)
    pub.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return out
