"""Durable history against the daemon (issue 4): events are journaled before the publisher's
answer, so a `kill -9` in the middle of a burst loses no acknowledged event; after a restart
the history is back, ids continue above it, and a client resuming with its Last-Event-ID gets
exactly what it missed. Torn tails, compaction, `journal =` and `[ssed] state_dir`.

Both runs of a test share one config directory (`confdir.start_in`), so the journal paths in
it are the same files. Every wait is bounded.
"""
import os
import re
import resource
import signal
import socket
import threading

import pytest

from conftest import TIMEOUT, ControlClient
from confdir import start_in
from ssed import journal


def logged(d, pattern):
    """The line the daemon logged before it was ready that matches `pattern` (the fixture has
    read those lines already while waiting for "ready")."""
    found = [line for line in d.log if re.search(pattern, line)]
    assert found, f"no line matching {pattern!r} in:\n" + "\n".join(d.log)
    return found[0]


def id_key(text):
    ms, seq = text.split("-")
    return int(ms), int(seq)


def burst(d, stop_after, service="/chat"):
    """Publish e0, e1, ... on one control connection as fast as answers come, from a thread,
    and SIGKILL the daemon once `stop_after` are acknowledged. The acknowledged (id, data)
    pairs and the data of the one publish in flight when it died (or None)."""
    acked, in_flight, enough = [], [None], threading.Event()

    def publisher():
        try:
            with ControlClient(d.control) as c:
                for n in range(1_000_000):
                    in_flight[0] = f"e{n}"
                    ans = c.request({"cmd": "publish", "service": service, "data": f"e{n}"})
                    assert ans["ok"], ans
                    acked.append((ans["id"], f"e{n}"))
                    in_flight[0] = None
                    if len(acked) >= stop_after:
                        enough.set()
        except (OSError, AssertionError, ValueError):
            enough.set()        # the daemon died under us: that is the point

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    assert enough.wait(TIMEOUT), f"only {len(acked)} acknowledged"
    d.proc.send_signal(signal.SIGKILL)      # mid-burst: the publisher is still sending
    d.proc.wait(TIMEOUT)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return list(acked), in_flight[0]


@pytest.mark.parametrize("sync", ["always", "everysec", "no"])
def test_kill_9_mid_burst_loses_no_acknowledged_event(daemon, tmp_path, sync):
    conf = tmp_path / "conf"
    body = "[/chat]\nhistory = 100000\njournal = chat.journal\n"
    top = f"journal_sync = {sync}"
    d = start_in(daemon, conf, body, top=top)
    acked, in_flight = burst(d, stop_after=1000)
    assert d.proc.returncode == -signal.SIGKILL
    assert len(acked) >= 1000

    again = start_in(daemon, conf, body, top=top)
    logged(again, r"service /chat: \d+ events restored from .*chat\.journal")
    first_id = acked[0][0]
    s = again.stream("/chat", [f"Last-Event-ID: {first_id}"])
    # Every acknowledged event after the first, in order; then at most the one in flight.
    expected = acked[1:]
    seen = s.wait_events(len(expected))
    lost = [pair for pair in expected if pair not in [(e.id, e.data) for e in seen]]
    assert lost == [], f"{len(lost)} acknowledged events lost, e.g. {lost[:3]}"
    assert [(e.id, e.data) for e in seen] == expected
    # The one in flight may or may not have been journaled; nothing else may be there.
    listed = again.ctl({"cmd": "list"})["services"][0]
    assert listed["last_id"] == acked[-1][0] or in_flight is not None
    if listed["last_id"] != acked[-1][0]:
        extra = s.wait_events(len(expected) + 1)[-1]
        assert extra.data == in_flight and id_key(extra.id) > id_key(acked[-1][0])
    # New ids go above every old one, and the resumed stream gets the live event.
    before = len(s.events)
    new = again.publish("/chat", "after restart")
    assert id_key(new["id"]) > id_key(listed["last_id"])
    assert [(e.id, e.data) for e in s.wait_events(before + 1)[before:]] == [
        (new["id"], "after restart")]


def test_a_client_resuming_after_a_crash_gets_exactly_what_it_missed(daemon, tmp_path):
    conf = tmp_path / "conf"
    body = "[/chat]\njournal = chat.journal\n"
    d = start_in(daemon, conf, body)
    s = d.stream("/chat")
    seen = [d.publish("/chat", f"seen {n}")["id"] for n in range(3)]
    assert [e.id for e in s.wait_events(3)] == seen
    s.close()
    missed = [d.publish("/chat", f"missed {n}")["id"] for n in range(4)]
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(TIMEOUT)

    again = start_in(daemon, conf, body)
    back = again.stream("/chat", [f"Last-Event-ID: {seen[-1]}"])
    live = again.publish("/chat", "live")["id"]
    events = back.wait_events(5)
    assert [(e.id, e.data) for e in events] == (
        [(i, f"missed {n}") for n, i in enumerate(missed)] + [(live, "live")])
    # Nothing more: a duplicate or a re-sent old event would show up before this marker.
    marker = again.publish("/chat", "marker")["id"]
    assert [e.id for e in back.wait_events(6)][-1] == marker
    # A client that had seen everything gets no replay, only what comes next.
    up_to_date = again.stream("/chat", [f"Last-Event-ID: {marker}"])
    after = again.publish("/chat", "next")["id"]
    assert [e.id for e in up_to_date.wait_events(1)] == [after]


def test_restored_history_keeps_its_event_types_and_multiline_data(daemon, tmp_path):
    conf = tmp_path / "conf"
    body = "[/chat]\njournal = chat.journal\n"
    d = start_in(daemon, conf, body)
    sent = [d.publish("/chat", "a\nb\r\nc", event="note")["id"],
            d.publish("/chat", "é ✓ 😀")["id"]]
    assert d.stop() == 0
    again = start_in(daemon, conf, body)
    s = again.stream("/chat", ["Last-Event-ID: 0-0"])
    got = [(e.id, e.type, e.data) for e in s.wait_events(2)]
    assert got == [(sent[0], "note", "a\nb\nc"), (sent[1], "message", "é ✓ 😀")]


def test_a_torn_last_record_is_skipped_with_a_warning_not_fatal(daemon, tmp_path):
    conf = tmp_path / "conf"
    body = "[/chat]\njournal = chat.journal\n"
    d = start_in(daemon, conf, body)
    ids = [d.publish("/chat", f"e{n}")["id"] for n in range(5)]
    assert d.stop() == 0
    journal = conf / "chat.journal"
    data = journal.read_bytes()
    journal.write_bytes(data[:-7])          # a crash in the middle of the last write

    again = start_in(daemon, conf, body)
    logged(again, r"warning journal .*chat\.journal: bad record at byte \d+ "
                   r"\(\d+ bytes skipped\)")
    logged(again, r"service /chat: 4 events restored")
    s = again.stream("/chat", ["Last-Event-ID: 0-0"])
    assert [e.id for e in s.wait_events(4)] == ids[:4]
    new = again.publish("/chat", "after")["id"]
    assert id_key(new) > id_key(ids[3])
    assert s.wait_events(5)[-1].id == new
    # The torn bytes were cut: the new record follows good data and reloads cleanly.
    assert again.stop() == 0
    third = start_in(daemon, conf, body)
    logged(third, r"service /chat: 5 events restored")
    assert not any("bad record" in line for line in third.log)


def test_the_journal_stays_bounded_by_compaction(daemon, tmp_path):
    conf = tmp_path / "conf"
    body = "[/chat]\nhistory = 10\njournal = chat.journal\n"
    d = start_in(daemon, conf, body)
    journal = conf / "chat.journal"
    ids = []
    biggest = 0
    with d.control_conn() as c:
        for n in range(300):
            ids.append(c.request({"cmd": "publish", "service": "/chat", "data": f"e{n}"})["id"])
            biggest = max(biggest, journal.read_bytes().count(b"\n"))
    assert biggest <= 21, biggest           # compacted once it passes 2 x history
    assert d.stop() == 0
    again = start_in(daemon, conf, body)
    s = again.stream("/chat", ["Last-Event-ID: 0-0"])
    assert [e.id for e in s.wait_events(10)] == ids[-10:]


def test_state_dir_journals_every_service_unless_it_names_its_own(daemon, tmp_path):
    conf = tmp_path / "conf"
    body = """
        [/a]
        [/deep/path]
        [/b]
        journal = own/b.log
    """
    top = "state_dir = state\njournal_sync = always"
    d = start_in(daemon, conf, body, top=top)
    ids = {path: d.publish(path, f"for {path}")["id"] for path in ("/a", "/deep/path", "/b")}
    assert sorted(p.name for p in (conf / "state").iterdir()) == ["a.journal",
                                                                   "deep%2Fpath.journal"]
    assert (conf / "own" / "b.log").exists()
    assert b"for /b" in (conf / "own" / "b.log").read_bytes()
    assert b"for /b" not in (conf / "state" / "a.journal").read_bytes()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(TIMEOUT)
    again = start_in(daemon, conf, body, top=top)
    for path, event_id in ids.items():
        s = again.stream(path, ["Last-Event-ID: 0-0"])
        assert [(e.id, e.data) for e in s.wait_events(1)] == [(event_id, f"for {path}")]
        s.close()
    assert {s["path"]: s["last_id"] for s in again.ctl({"cmd": "list"})["services"]} == ids


def test_journal_off_keeps_a_service_out_of_state_dir(daemon, tmp_path):
    conf = tmp_path / "conf"
    body = "[/kept]\n[/volatile]\njournal = off\n"
    top = "state_dir = state\njournal_sync = always"
    d = start_in(daemon, conf, body, top=top)
    kept = d.publish("/kept", "kept")["id"]
    d.publish("/volatile", "gone")
    assert [p.name for p in (conf / "state").iterdir()] == ["kept.journal"]
    assert not (conf / "off").exists()
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(TIMEOUT)
    again = start_in(daemon, conf, body, top=top)
    assert {s["path"]: s["last_id"] for s in again.ctl({"cmd": "list"})["services"]} == {
        "/kept": kept, "/volatile": None}


def test_without_a_journal_history_is_gone_after_a_restart(daemon, tmp_path):
    conf = tmp_path / "conf"
    d = start_in(daemon, conf, "[/chat]\n")
    old = d.publish("/chat", "volatile")["id"]
    assert d.stop() == 0
    again = start_in(daemon, conf, "[/chat]\n")
    assert again.ctl({"cmd": "list"})["services"][0]["last_id"] is None
    # Ids still never go backwards across the restart (they come from the wall clock).
    assert id_key(again.publish("/chat", "new")["id"]) > id_key(old)


def test_a_journal_that_cannot_be_opened_is_logged_and_the_service_runs(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "blocker").write_text("a file where a directory should be")
    d = start_in(daemon, conf, "[/chat]\njournal = blocker/chat.journal\n")
    logged(d, r"error service /chat: journal .*blocker/chat\.journal: .*history will not "
               r"survive a restart")
    s = d.stream("/chat")
    assert d.publish("/chat", "still works")["delivered"] == 1
    assert s.wait_events(1)[0].data == "still works"


# -- a journal that cannot be written (a full disk) ----------------------------------------------

NOTED = '''
import ssed


class Noted(ssed.Service):
    def on_stop(self):
        self.log("on_stop ran")
'''


def file_size_limit(limit):
    """preexec_fn: writes past `limit` bytes fail with EFBIG, as a full disk fails with ENOSPC
    (SIGXFSZ ignored, so the write fails instead of killing the daemon)."""
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return preexec


def healthz(d):
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def publish_until_refused(d, service, data):
    acked = []
    while True:
        ans = d.ctl({"cmd": "publish", "service": service, "data": data})
        if not ans["ok"]:
            return acked, ans["error"]
        acked.append((ans["id"], data))
        assert len(acked) < 1000, "never refused"


def test_a_failing_journal_is_logged_once_counted_shown_and_recovers(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "noted.py").write_text(NOTED)
    body = ("[/chat]\njournal = chat.journal\n\n"
            "[/other]\nclass = noted:Noted\njournal = other.journal\n")
    d = start_in(daemon, conf, body, preexec_fn=file_size_limit(4000))
    s = d.stream("/chat")
    acked, error = publish_until_refused(d, "/chat", "x" * 100)
    assert error == "/chat: journal write failed: File too large"
    for _ in range(5):
        assert d.ctl({"cmd": "publish", "service": "/chat", "data": "x" * 100})["ok"] is False
    d.ctl({"cmd": "reload"})        # a line logged after every refusal's
    d.wait_log("reloaded: no changes")
    failing = [line for line in d.log if re.search(r"journal \S+ (still )?failing", line)]
    assert len(failing) == 1 and re.search(
        r"error journal .*/chat\.journal failing: write failed: File too large; publishes are "
        r"refused \(logged once until it recovers\)", failing[0]), failing
    assert d.ctl({"cmd": "stats"})["journal_failures"] == 6
    assert healthz(d) == (503, b"journal failing\n")
    metrics = d.request(b"GET /metrics HTTP/1.0\r\n\r\n").decode()
    assert 'ssed_journal_failures_total{service="/chat"} 6\n' in metrics
    assert 'ssed_journal_failures_total{service="/other"} 0\n' in metrics

    # The disk has room again: the next publish is kept, and that is logged once.
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE,
                     (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    after = d.publish("/chat", "room again")
    acked.append((after["id"], "room again"))
    d.wait_log(r"info journal .*/chat\.journal recovered after 6 failures")
    assert healthz(d) == (200, b"ok\n")
    # Subscribers got exactly the acknowledged events, and so did the file: nothing of a
    # refused record (a write cut short at the limit) is left in it.
    assert [(e.id, e.data) for e in s.wait_events(len(acked))] == acked
    records = (conf / "chat.journal").read_bytes().split(b"\n")
    assert records[-1] == b"" and [journal.decode(r)[2] for r in records[:-1]] == \
        [data for _, data in acked]

    # Failing again at SIGTERM: every service still stops, cleanly.
    size = (conf / "chat.journal").stat().st_size
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
    assert d.ctl({"cmd": "publish", "service": "/chat", "data": "z" * 100})["ok"] is False
    assert d.stop() == 0
    d.wait_log("stopped")
    assert any(re.search(r"/other: on_stop ran", line) for line in d.log), d.log
    assert not [line for line in d.log if "bug" in line or "Traceback" in line], d.log


def test_a_journal_path_that_is_a_fifo_is_refused_without_blocking(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    os.mkfifo(conf / "chat.journal")      # a plain open() for reading waits for a writer
    d = start_in(daemon, conf, "[/chat]\njournal = chat.journal\n")
    logged(d, r"error service /chat: journal .*chat\.journal: not a regular file; history will "
              r"not survive a restart")
    assert d.publish("/chat", "still works")["ok"]
