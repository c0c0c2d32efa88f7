"""The load side of bench/load.py: one worker process holds its share of the N streams in one
epoll loop, parses the SSE bytes incrementally and cheaply, and checks every event's
`seq=<n> t=<ns>` data: per stream, the sequence (gaps = lost, repeats = duplicates, late
fillers of a gap = out of order); overall, the latency from the publish stamp to the read()
that brought the event (10 us buckets) and the worker's own CPU time against wall time (a
worker near 100 % means the load, not the daemon, was the limit).

The driver talks to a worker over a multiprocessing Pipe:
  -> ("connect", host, port, path, count, inflight, timeout)   <- ("connected", {...})
  -> ("run",)          counters start now (the driver is about to publish)
  -> ("end", P, grace_s)   wait until every live stream has seq 1..P, at most grace_s
                       <- ("result", {...}); then every socket is reset (no TIME_WAIT)

Only the standard library. The cheap part: one os.read per ready socket, the bytes up to the
last blank line go through one compiled regex (C speed) and only the data lines the benchmark
publishes are looked at; the fast path per delivery is two int() calls, one dict update and
one comparison. Lines must end in LF or CRLF (bare CR endings are not supported: ssed, nchan
and the Python peers all send LF).
"""
import errno
import os
import re
import resource
import select
import socket
import struct
import time

EVENT = re.compile(rb"^data: ?seq=(\d+) t=(\d+)", re.M)
READ_SIZE = 16384
LINGER_RST = struct.pack("ii", 1, 0)
BUCKET_NS = 10_000   # latency histogram resolution: 10 us


def cpu_now():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Worker:
    """One process's streams. State lives in lists indexed by file descriptor: the hot loop
    does no attribute lookups per event."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.ep = select.epoll()
        self.socks = {}            # fd -> socket (kept alive; closed with RST at the end)
        size = resource.getrlimit(resource.RLIMIT_NOFILE)[1] + 16
        self.tail = [b""] * size   # bytes after the last complete event
        self.last = [0] * size     # highest seq seen in order
        self.holes = {}            # fd -> set of seqs skipped (not yet seen)
        self.dups = 0
        self.ooo = 0               # a hole filled later: out of order
        self.hist = {}             # latency bucket (10 us) -> count
        self.closed = 0            # streams that ended during the run
        self.last_recv_ns = 0
        self.reads = 0

    # ------------------------------------------------------------------ connecting

    def connect(self, host, port, path, count, inflight, timeout):
        """Open `count` streams, at most `inflight` attempts at once; a stream counts as
        connected once its whole response head (status 200) has arrived."""
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        t0 = time.monotonic()
        deadline = t0 + timeout
        pending = {}               # fd -> [sock, phase ("conn"|"head"), head bytes]
        started = connected = 0
        fails = {}
        ep = self.ep
        while (started < count or pending) and time.monotonic() < deadline:
            while started < count and len(pending) < inflight:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect((host, port))
                except BlockingIOError:
                    pass
                except OSError as exc:
                    why = errno.errorcode.get(exc.errno, str(exc))
                    fails[why] = fails.get(why, 0) + 1
                    s.close()
                    started += 1
                    continue
                started += 1
                pending[s.fileno()] = [s, "conn", b""]
                ep.register(s.fileno(), select.EPOLLOUT)
            for fd, _ in ep.poll(0.2):
                entry = pending.get(fd)
                if entry is None:
                    continue
                s, phase, head = entry
                why = None
                if phase == "conn":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        why = errno.errorcode.get(err, str(err))
                    else:
                        try:
                            s.send(request)
                            entry[1] = "head"
                            ep.modify(fd, select.EPOLLIN)
                        except OSError as exc:
                            why = errno.errorcode.get(exc.errno, "send")
                else:
                    try:
                        data = s.recv(READ_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        data, why = b"", errno.errorcode.get(exc.errno, "recv")
                    if not data:
                        why = why or "closed before head"
                    else:
                        head += data
                        end = head.find(b"\r\n\r\n")
                        if end < 0:
                            entry[2] = head
                            continue
                        status = head.split(b" ", 2)[1:2]
                        if status != [b"200"]:
                            why = "HTTP " + (status[0].decode("ascii", "replace") if status else "?")
                        else:
                            self.socks[fd] = s
                            self.tail[fd] = head[end + 4:]
                            del pending[fd]
                            connected += 1
                            continue
                if why:
                    fails[why] = fails.get(why, 0) + 1
                    ep.unregister(fd)
                    s.close()
                    del pending[fd]
        for fd, (s, _, _) in pending.items():
            fails["timeout"] = fails.get("timeout", 0) + 1
            ep.unregister(fd)
            s.close()
        fails_total = sum(fails.values()) + (count - started)
        return {"connected": connected, "failed": fails_total, "fail_reasons": fails,
                "connect_s": round(time.monotonic() - t0, 3)}

    # ------------------------------------------------------------------ reading

    def serve(self):
        """The pipe's commands, and reading every stream until "end"."""
        msg = self.pipe.recv()
        if msg[0] == "connect":
            self.pipe.send(("connected", self.connect(*msg[1:])))
        ctl = self.pipe.fileno()
        self.ep.register(ctl, select.EPOLLIN)
        end = None
        while end is None:           # before "run": read (keepalives, priming ids) but keep quiet
            for fd, _ in self.ep.poll(1.0):
                if fd == ctl:
                    msg = self.pipe.recv()
                    if msg[0] == "run":
                        end = self.run(ctl)
                    elif msg[0] == "end":
                        end = msg
                else:
                    self.read_one(fd)
        self.finish(*end[1:])

    def read_one(self, fd):
        """Drain one ready socket outside the timed phase (connect/settle)."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop(fd)
            return
        self.consume(fd, data, time.time_ns())

    def run(self, ctl):
        """The timed phase: the hot loop. Returns the "end" message. Fast path: a read that
        ends on a blank line with nothing left over from the last one (with LF line ends, the
        usual case) goes to the regex as it is."""
        self.cpu0, self.wall0 = cpu_now(), time.monotonic()
        ep_poll, read, tns, find = self.ep.poll, os.read, time.time_ns, EVENT.findall
        tails, last, hist, odd, whole = self.tail, self.last, self.hist, self.odd, self.whole
        get = hist.get
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
                    for s, t in events:
                        seq = int(s)
                        b = (now - int(t)) // BUCKET_NS
                        hist[b] = get(b, 0) + 1
                        if seq == last[fd] + 1:
                            last[fd] = seq
                        else:
                            odd(fd, seq)

    def whole(self, fd, data):
        """Slow path: the complete events in what came before plus `data` (CR LF made LF);
        the rest waits for the next read. None when no event is complete yet."""
        tail = self.tail[fd]
        if tail:
            data = tail + data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        cut = data.rfind(b"\n\n") + 2
        if cut == 1:
            self.tail[fd] = data
            return None
        self.tail[fd] = data[cut:]
        return data[:cut]

    def consume(self, fd, data, now):
        """What the hot loop does with one read, for the phases around it (and the tests)."""
        if data[-2:] != b"\n\n" or self.tail[fd]:
            data = self.whole(fd, data)
            if data is None:
                return
        events = EVENT.findall(data)
        if events:
            self.last_recv_ns = now
            for s, t in events:
                seq = int(s)
                b = (now - int(t)) // BUCKET_NS
                self.hist[b] = self.hist.get(b, 0) + 1
                if seq == self.last[fd] + 1:
                    self.last[fd] = seq
                else:
                    self.odd(fd, seq)

    def odd(self, fd, seq):
        """Slow path: a gap, a duplicate or a late filler."""
        last = self.last[fd]
        holes = self.holes.get(fd)
        if seq > last:
            if holes is None:
                holes = self.holes[fd] = set()
            holes.update(range(last + 1, seq))
            self.last[fd] = seq
        elif holes and seq in holes:
            holes.discard(seq)
            self.ooo += 1
        else:
            self.dups += 1

    def drop(self, fd):
        s = self.socks.pop(fd, None)
        if s is not None:
            self.ep.unregister(fd)
            s.close()
            self.closed += 1

    # ------------------------------------------------------------------ the end

    def received(self):
        """Distinct events received, over every stream (closed ones too)."""
        return sum(self.last) - sum(len(h) for h in self.holes.values())

    def lost(self, fd, total):
        """Events 1..total this stream has not seen."""
        return max(0, total - self.last[fd]) + len(self.holes.get(fd, ()))

    def complete(self, fd, total):
        return self.last[fd] >= total and not self.holes.get(fd)

    def finish(self, total, grace):
        """Read until every live stream has 1..total (or `grace` seconds), then report."""
        wall1 = time.monotonic()
        cpu1 = cpu_now()
        deadline = wall1 + grace
        waiting = {fd for fd in self.socks if not self.complete(fd, total)}
        ctl = self.pipe.fileno()
        while waiting and time.monotonic() < deadline:
            for fd, _ in self.ep.poll(max(0.0, min(0.2, deadline - time.monotonic()))):
                if fd == ctl:
                    continue
                self.read_one(fd)
                if fd in waiting and (fd not in self.socks or self.complete(fd, total)):
                    waiting.discard(fd)
        waiting = {fd for fd in waiting if fd in self.socks}
        lost = sum(self.lost(fd, total) for fd in self.socks)
        run_wall = wall1 - getattr(self, "wall0", wall1)
        result = {
            "streams": len(self.socks), "closed": self.closed, "incomplete": len(waiting),
            "received": self.received(),
            "lost": lost, "dups": self.dups, "ooo": self.ooo,
            "hist": self.hist, "last_recv_ns": self.last_recv_ns,
            "cpu_run_s": round(cpu1 - getattr(self, "cpu0", cpu1), 3),
            "wall_run_s": round(run_wall, 3),
            "reads": self.reads,
            "grace_used_s": round(time.monotonic() - wall1, 3),
        }
        self.pipe.send(("result", result))
        for s in self.socks.values():
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            except OSError:
                pass
            s.close()
        self.socks.clear()


def worker_main(pipe, cpus):
    """Entry point of a worker process (forked by the driver)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    Worker(pipe).serve()
