"""Fan-out against the daemon subprocess: 1000 streams on one service, 100 events, every
client gets every event exactly once, in order, with the right ids. Then the same over more
streams than one loop turn reaches (ssed.loop.SLICE) with the events pipelined in one control
write, so that they queue behind a fan-out in progress and are joined into shared writes.

The test holds the 1000 streams itself with non-blocking sockets and one `selectors`
loop (no threads); every wait is bounded by a deadline.
"""
import json
import resource
import selectors
import socket
import time

import pytest

from conftest import TIMEOUT
from ssed.outbox import SLICE
from ssed.sse import EventParser

STREAMS = 1000
EVENTS = 100


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    assert soft == resource.RLIM_INFINITY or soft >= need, \
        f"RLIMIT_NOFILE {soft} is below the {need} this test needs"


class Sub:
    """One stream held by the test: head, then events parsed as they arrive."""
    __slots__ = ("sock", "head", "buf", "parser", "events", "closed")

    def __init__(self, sock):
        self.sock = sock
        self.head = None
        self.buf = b""
        self.parser = EventParser()
        self.events = []
        self.closed = False

    def feed(self, data):
        if self.head is None:
            self.buf += data
            if b"\r\n\r\n" not in self.buf:
                return
            self.head, _, data = self.buf.partition(b"\r\n\r\n")
            self.buf = b""
        self.events.extend(self.parser.feed(data))

    @property
    def primed(self):
        return self.head is not None and self.parser.last_event_id != ""


def read_ready(sel, timeout):
    """One selector pass: feed every stream that has bytes."""
    for key, _ in sel.select(timeout):
        sub = key.data
        try:
            data = sub.sock.recv(65536)
        except BlockingIOError:
            continue
        if not data:
            sub.closed = True
            sel.unregister(sub.sock)
            raise AssertionError("a stream was closed by the daemon")
        sub.feed(data)


def pump(sel, done, what):
    """Read until `done()`; bounded."""
    deadline = time.monotonic() + TIMEOUT
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}")
        read_ready(sel, min(left, 0.5))


def open_streams(d, sel, count):
    subs = []
    request = b"GET /fan HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT)
        sock.sendall(request)
        sock.setblocking(False)
        sub = Sub(sock)
        subs.append(sub)
        sel.register(sock, selectors.EVENT_READ, sub)
    pump(sel, lambda: all(s.primed for s in subs), "every stream's head")
    assert all(s.head.startswith(b"HTTP/1.1 200 ") for s in subs)
    assert all(s.events == [] for s in subs)
    return subs


def publish_one_by_one(d, sel, count):
    ids = []
    with d.control_conn() as c:
        for i in range(count):
            ans = c.request({"cmd": "publish", "service": "/fan", "data": f"event {i}",
                             "event": "fan" if i % 2 else None})
            assert ans["ok"], ans
            ids.append((ans["id"], ans["delivered"]))
            if i % 10 == 9:     # read as we go, as clients do
                read_ready(sel, 0)
    return ids


def publish_pipelined(d, sel, count):
    lines = [json.dumps({"cmd": "publish", "service": "/fan", "data": f"event {i}",
                         "event": "fan" if i % 2 else None}) for i in range(count)]
    with d.control_conn() as c:
        c.sock.sendall(("\n".join(lines) + "\n").encode())
        answers = [json.loads(c.read_line()) for _ in lines]
    assert all(a["ok"] for a in answers), answers
    return [(a["id"], a["delivered"]) for a in answers]


@pytest.mark.parametrize("streams, publish", [(1000, publish_one_by_one),
                                              (SLICE + 100, publish_pipelined)])
def test_every_stream_gets_every_event_once_in_order(daemon, streams, publish):
    raise_fd_limit(2 * streams + 200)
    d = daemon("[/fan]\nhistory = 10\n",
               top=f"retry = 0\nmax_clients_per_ip = {streams + 10}\n")
    sel = selectors.DefaultSelector()
    subs = []
    try:
        subs = open_streams(d, sel, streams)
        listed = d.ctl({"cmd": "list"})["services"]
        assert [x["clients"] for x in listed if x["path"] == "/fan"] == [streams]
        published = publish(d, sel, EVENTS)
        assert all(delivered == streams for _, delivered in published)
        pump(sel, lambda: all(len(s.events) >= EVENTS for s in subs),
             f"{EVENTS} events on every stream")

        want = [(published[i][0], f"event {i}", "fan" if i % 2 else "message")
                for i in range(EVENTS)]
        for n, sub in enumerate(subs):
            got = [(e.id, e.data, e.type) for e in sub.events]
            assert got == want, f"stream {n}: {got[:3]}... != {want[:3]}..."
        stats = d.ctl({"cmd": "stats"})
        assert stats["clients"] == streams
        assert stats["dropped"] == {}
    finally:
        for sub in subs:
            if not sub.closed:
                sel.unregister(sub.sock)
            sub.sock.close()
        sel.close()
