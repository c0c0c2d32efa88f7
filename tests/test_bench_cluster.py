"""bench/clusterload.py counts right: each stream's order digest, acknowledged-only loss, the
publish answers of a control socket and of nchan's HTTP publisher, split anywhere.
Correctness only: no figure here is a speed."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import clusterload  # noqa: E402

NOW = 1_000_000_000_000
A, B = 7, 8


def ev(seq):
    return f"id: {seq}-0\ndata: seq={seq} t={NOW - 25_000}\n\n".encode()


def worker(**streams):
    w = clusterload.Worker(pipe=None)
    for fd, seqs in streams.items():
        for s in seqs:
            w.consume(int(fd[1:]), ev(s), NOW)
    return w


def test_same_order_same_digest_and_any_other_order_differs():
    w = worker(f7=[1, 3, 2, 4], f8=[1, 3, 2, 4])
    assert w.digest[A] == w.digest[B] == clusterload.order_digest([1, 3, 2, 4])
    w = worker(f7=[1, 3, 2, 4], f8=[1, 2, 3, 4])
    assert w.digest[A] != w.digest[B]
    assert (w.ooo, w.dups) == (1, 0)            # 2 after 3 on stream 7: a late filler, not a loss


def test_digest_is_the_same_however_the_bytes_are_cut():
    data = b"".join(ev(s) for s in (2, 1, 3))
    w = clusterload.Worker(pipe=None)
    for i in range(len(data)):
        w.consume(A, data[i:i + 1], NOW)
    assert w.digest[A] == clusterload.order_digest([2, 1, 3])
    assert sum(w.timeline.values()) == 3


def test_unacknowledged_events_are_not_lost_and_are_seen_when_delivered():
    w = worker(f7=[1, 2, 4, 6])                 # 3 and 5 refused, 6 of unknown outcome
    assert w._lost(A, 6, {3, 5, 6}) == 0
    assert w._unacked_seen(A, {3, 5, 6}) == 1   # 6 was applied by Redis after all
    assert w._lost(A, 6, {3}) == 1              # 5 acknowledged and missing
    assert w._lost(A, 8, {3, 5}) == 2           # 7 and 8 acknowledged, never came


def test_control_answers_split_anywhere():
    t = clusterload.ControlTarget.__new__(clusterload.ControlTarget)
    data = (b'{"ok": true, "id": "1-0", "delivered": 3}\n'
            b'{"ok": false, "error": "cluster unavailable: Redis closed the connection"}\n'
            b'{"ok": false, "error": "cluster unavailable: outcome unknown (x)"}\n')
    for cut in range(len(data)):
        t.buf = b""
        got = t.answers(data[:cut]) + t.answers(data[cut:])
        assert [ok for ok, _ in got] == [True, False, False]
        assert "outcome unknown" in got[2][1]


def test_http_answers_pipelined_and_split_anywhere():
    t = clusterload.HttpTarget.__new__(clusterload.HttpTarget)
    body = b"queued messages: 1\r\nlast requested: 0 sec. ago\r\n"
    one = b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    bad = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
    data = one + bad + one
    for cut in range(len(data)):
        t.buf = b""
        got = t.answers(data[:cut]) + t.answers(data[cut:])
        assert [ok for ok, _ in got] == [True, False, True], cut
        assert got[1][1].startswith("HTTP 503")
