"""The benchmark's load client (bench/streams.py) counts right, and bench/load.py runs end to end
against the daemon. Correctness only: no figure here is a speed."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import report  # noqa: E402
import streams  # noqa: E402

NOW = 1_000_000_000_000
FD = 7


def ev(seq, t=NOW - 25_000, eid=None, crlf=False):
    text = f"id: {eid or seq}\ndata: seq={seq} t={t}\n\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode()


def feed(chunks):
    w = streams.Worker(pipe=None)
    for c in chunks:
        w.consume(FD, c, NOW)
    return w


def ways(data):
    """Whole, byte by byte, and cut in two at every place."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


STREAM = (b"retry: 3000\n\nid: 1-0\n\n: keepalive\n\n" + ev(1) + b"event: other\ndata: hello\n\n"
          + ev(2) + ev(3))


@pytest.mark.parametrize("crlf", [False, True])
def test_stream_in_order_counts_every_event_once_however_the_bytes_are_cut(crlf):
    data = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    for chunks in ways(data):
        w = feed(chunks)
        assert (w.received(), w.last[FD], w.dups, w.ooo, w.lost(FD, 3)) == (3, 3, 0, 0, 0), chunks
        assert w.hist == {2: 3}          # 25 us late: the 20-30 us bucket


def test_incomplete_trailing_event_is_not_counted_until_its_blank_line():
    w = feed([ev(1) + b"id: 2\ndata: seq=2 t=5"])
    assert (w.received(), w.last[FD], w.lost(FD, 2)) == (1, 1, 1)
    w.consume(FD, b"\n\n", NOW)
    assert (w.received(), w.last[FD], w.lost(FD, 2)) == (2, 2, 0)


def test_gap_is_lost_until_filled_then_counted_out_of_order():
    w = feed([ev(1) + ev(4)])
    assert w.lost(FD, 4) == 2 and w.ooo == 0
    w.consume(FD, ev(3), NOW)
    assert w.lost(FD, 4) == 1 and w.ooo == 1
    w.consume(FD, ev(2), NOW)
    assert (w.lost(FD, 4), w.ooo, w.dups) == (0, 2, 0)


def test_repeats_are_duplicates_and_events_never_seen_at_the_end_are_lost():
    w = feed([ev(1) + ev(2) + ev(2) + ev(1)])
    assert (w.dups, w.ooo, w.lost(FD, 5)) == (2, 0, 3)


def test_latency_percentiles_come_from_the_bucket_upper_edges():
    hist = {0: 50, 9: 49, 99_999: 1}      # 50 under 10 us, 49 at 90-100 us, one at ~1 s
    assert report.hist_percentiles(hist) == (0.01, 0.1, 1000.0)


def test_change_against_previous_run_in_percent():
    assert [report.change(*x) for x in [(110, 100), (90, 100), (100, 100), (0, 0), (3, 0), (None, 1)]] \
        == ["+10%", "-10%", "=", "=", "+3", "-"]


def test_load_benchmark_runs_against_the_daemon_and_records_every_delivery(tmp_path):
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.fail("the benchmark pins the daemon to CPU 0 and the load to CPU 1: needs both")
    history = tmp_path / "history.jsonl"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "load.py"), "--n", "30",
                          "--rates", "20", "--duration", "0.5", "--settle", "0", "--grace", "3",
                          "--history", str(history)],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    (rec,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert rec["scenario"] == "n30-r20" and rec["connected"] == 30 and rec["published"] == 10
    assert (rec["received"], rec["lost"], rec["dup"], rec["ooo"], rec["closed"]) == (300, 0, 0, 0, 0)
    assert rec["daemon_delivered"] == 300 and rec["pub_errors"] == 0
    assert "| n30-r20 | 30 | 20 |" in out.stdout and "Conditions:" in out.stdout


def test_connect_storm_serves_every_connection_in_process():
    """bench/connect.py's storm (what valgrind counts) opens and serves every stream."""
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "connect.py"),
                          "--storm", "50"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "served 50 of 50" in out.stdout
