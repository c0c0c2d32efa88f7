"""Reload under load (SPEC section 8): 1000 streams on a service that does not change stay open
and get every event, in order, while a publisher publishes throughout and services are added,
removed and changed by SIGHUP and by `reload`; a removed service's streams are closed; an
invalid config changes nothing and `reload` answers with its FILE:LINE errors.

The 1000 streams are read by one selectors loop in a thread of the test; every wait is
bounded (a condition with a timeout, `wait_log`, stream reads).
"""
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading

import pytest

from conftest import TIMEOUT, ControlClient, env
from ssed.sse import EventParser

STREAMS = 1000

TOP = """
max_clients_per_ip = 5000
max_clients = 5000
"""

BASE = """
[/keep]
history = 5000

[/gone]

[/change]
history = 50
"""

ADDED = BASE + """
[/new]
"""

REMOVED = """
[/keep]
history = 5000

[/change]
history = 50

[/new]
"""

CHANGED = """
[/keep]
history = 5000

[/change]
history = 60
event = changed

[/new]
"""

INVALID = CHANGED + """
[/bad]
source = nope
intervall = 3
"""


def raise_nofile(n=4096):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if want < STREAMS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {STREAMS + 200}")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class ManyStreams:
    """`n` streams read by one selectors loop in a thread: raw bytes per stream, EOFs."""

    def __init__(self, port, target, n):
        self.socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.setblocking(False)
            self.socks.append(s)
        self.bufs = [bytearray() for _ in range(n)]
        self.eof = set()
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, i)
        while self.running:
            ready = sel.select(0.1)
            with self.cond:
                for key, _ in ready:
                    try:
                        data = key.fileobj.recv(262144)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        self.bufs[key.data] += data
                    else:
                        self.eof.add(key.data)
                        sel.unregister(key.fileobj)
                self.cond.notify_all()
        sel.close()

    def wait(self, predicate, what, timeout=TIMEOUT):
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"{what}: not within {timeout} s; {len(self.eof)} EOFs")

    def close(self):
        self.running = False
        self.thread.join(TIMEOUT)
        for s in self.socks:
            s.close()


def events_of(buf):
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return [(e.id, e.type, e.data) for e in EventParser().feed(body)]


class Publisher:
    """Publishes p0, p1, ... to a service as fast as answers come, on one control connection."""

    def __init__(self, control, service):
        self.acked = []
        self.errors = []
        self.cond = threading.Condition()
        self.running = True
        self.thread = threading.Thread(target=self._run, args=(control, service), daemon=True)
        self.thread.start()

    def _run(self, control, service):
        with ControlClient(control) as c:
            n = 0
            while self.running:
                ans = c.request({"cmd": "publish", "service": service, "data": f"p{n}"})
                if not ans.get("ok"):
                    self.errors.append(ans)
                    return
                with self.cond:
                    self.acked.append((ans["id"], "message", f"p{n}"))
                    self.cond.notify_all()
                n += 1

    def more(self, k=3):
        """Wait (bounded) until `k` more publishes are acknowledged: the reloads around this
        call happen while events flow."""
        with self.cond:
            goal = len(self.acked) + k
            assert self.cond.wait_for(lambda: len(self.acked) >= goal or self.errors,
                                      TIMEOUT), "the publisher stalled"
            assert not self.errors, self.errors

    def stop(self):
        self.running = False
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive() and self.errors == []
        return self.acked


def write(d, body):
    d.ini.write_text(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n{TOP}\n{body}")


def sighup(d, expect):
    d.proc.send_signal(signal.SIGHUP)
    return d.wait_log(expect)


def test_1000_streams_miss_nothing_while_services_are_added_removed_and_changed(daemon):
    raise_nofile()
    d = daemon(BASE, top=TOP, preexec_fn=raise_nofile)
    many = ManyStreams(d.port, "/keep", STREAMS)
    try:
        gone = [d.stream("/gone") for _ in range(5)]
        change = d.stream("/change")
        before_change = d.publish("/change", "before the change")["id"]
        change.wait_events(1)
        # Every stream is open and primed before the publisher starts.
        many.wait(lambda m: all(b"\r\n\r\n" in b and b.endswith(b"\n\n") for b in m.bufs),
                  "all streams open")
        assert d.ctl({"cmd": "list"})["services"][0]["clients"] == STREAMS
        publisher = Publisher(d.control, "/keep")

        publisher.more()
        write(d, ADDED)
        assert d.ctl({"cmd": "reload"}) == {"ok": True, "changes": ["added /new"]}

        publisher.more()
        write(d, REMOVED)
        sighup(d, r"reloaded: removed /gone$")
        for s in gone:
            s.wait_closed()

        publisher.more()
        write(d, CHANGED)
        answer = d.ctl({"cmd": "reload"})
        assert answer["ok"] and len(answer["changes"]) == 1, answer
        assert answer["changes"][0].startswith("changed /change")

        publisher.more()
        write(d, INVALID)
        lines = d.ini.read_text().split("\n")
        bad = [f"{d.ini}:{lines.index(text) + 1}:" for text in ("source = nope",
                                                                 "intervall = 3")]
        answer = d.ctl({"cmd": "reload"})
        assert answer["ok"] is False and len(answer["errors"]) == 2, answer
        assert [e.split(" ")[0] for e in answer["errors"]] == bad, answer
        assert answer["error"].startswith(f"config not valid, nothing changed: {bad[0]}")
        publisher.more()
        sighup(d, r"reload refused, config unchanged")

        publisher.more()
        write(d, CHANGED)
        assert d.ctl({"cmd": "reload"}) == {"ok": True, "changes": []}
        publisher.more()
        acked = publisher.stop()

        marker = d.publish("/keep", "marker")
        acked.append((marker["id"], "message", "marker"))
        end = f"id: {marker['id']}\ndata: marker\n\n".encode()
        many.wait(lambda m: all(b.endswith(end) for b in m.bufs) or m.eof,
                  "every stream got the marker", timeout=2 * TIMEOUT)
        assert many.eof == set(), f"{len(many.eof)} of the unchanged service's streams closed"
        wrong = [i for i, buf in enumerate(many.bufs) if events_of(buf) != acked]
        assert wrong == [], f"{len(wrong)} streams missed or reordered events"

        # The services are as the last valid config says; the invalid one changed nothing.
        listed = {s["path"]: s["clients"] for s in d.ctl({"cmd": "list"})["services"]}
        assert listed == {"/keep": STREAMS, "/change": 1, "/new": 0}
        # The changed service kept its stream and its history, and took its new settings.
        after = d.publish("/change", "after the change")["id"]
        assert [(e.id, e.type) for e in change.wait_events(2)] == [
            (before_change, "message"), (after, "changed")]
        replay = d.stream("/change", ["Last-Event-ID: 0-0"])
        assert [e.id for e in replay.wait_events(2)] == [before_change, after]
        assert d.ctl({"cmd": "publish", "service": "/gone", "data": "x"})["ok"] is False
    finally:
        many.close()


def test_an_invalid_config_by_sighup_changes_nothing_and_logs_file_line(daemon):
    d = daemon(BASE, top=TOP)
    s = d.stream("/gone")
    write(d, "[/keep]\n[/x]\nsource = nope\n")
    line = d.ini.read_text().split("\n").index("source = nope") + 1
    logged = sighup(d, r"reload refused, config unchanged")
    assert re.search(re.escape(f"{d.ini}:{line}: "), logged), logged
    assert {x["path"] for x in d.ctl({"cmd": "list"})["services"]} == {"/keep", "/gone",
                                                                      "/change"}
    assert d.publish("/gone", "still")["delivered"] == 1
    assert s.wait_events(1)[0].data == "still"


def ssectl(d, *args):
    return subprocess.run([sys.executable, "-m", "ssed.ctl", "-s", d.control, *args],
                          env=env(), capture_output=True, text=True, timeout=TIMEOUT)


def test_ssectl_reload_shows_every_file_line_error_then_the_changes(daemon):
    d = daemon(BASE, top=TOP)
    write(d, INVALID)
    lines = d.ini.read_text().split("\n")
    bad = [f"{d.ini}:{lines.index(text) + 1}: " for text in ("source = nope", "intervall = 3")]
    done = ssectl(d, "reload")
    assert done.returncode == 1 and done.stdout == "", done
    first, *rest = done.stderr.splitlines()
    assert first.startswith(f"ssectl: config not valid, nothing changed: {bad[0]}")
    assert [line.strip()[:len(b)] for line, b in zip(rest, bad)] == bad and len(rest) == 2
    write(d, ADDED)
    done = ssectl(d, "reload")
    assert (done.returncode, done.stdout) == (0, "added /new\n"), done


# -- refused reloads: each logged, nothing changed ---------------------------------------------

def reload_refused(d, pattern):
    """SIGHUP, then the "reload refused" line with what follows it (the FILE:LINE errors)."""
    d.proc.send_signal(signal.SIGHUP)
    first = d.wait_log(r"reload refused, config unchanged")
    return first if re.search(pattern, first) else d.wait_log(pattern)


def still_serving(d, s, service="/gone"):
    assert {x["path"] for x in d.ctl({"cmd": "list"})["services"]} == {"/keep", "/gone",
                                                                      "/change"}
    assert d.publish(service, "still")["delivered"] == 1
    assert s.wait_events(1)[0].data == "still"


@pytest.mark.parametrize("text", ["", "[ssed]\nlisten = 127.0.0.1:0\n", "[ssed]\nlisten = 127"])
def test_a_half_written_config_is_refused_and_every_service_stays(daemon, text):
    d = daemon(BASE, top=TOP)
    s = d.stream("/gone")
    d.ini.write_text(text)
    reload_refused(d, r"no service sections|expected")
    still_serving(d, s)
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] is False and answer["errors"], answer


def test_a_reload_that_would_remove_every_service_is_refused(daemon):
    d = daemon(BASE, top=TOP)
    s = d.stream("/gone")
    write(d, "[/other]\n")
    line = reload_refused(d, "remove every service")
    assert "would remove every service (/keep, /gone, /change)" in line, line
    still_serving(d, s)
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] is False and "remove every service" in answer["error"]


def test_a_sighup_reload_that_cannot_bind_logs_why_and_changes_nothing(daemon):
    d = daemon(BASE, top=TOP)
    s = d.stream("/gone")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        d.ini.write_text(d.ini.read_text().replace("127.0.0.1:0", f"127.0.0.1:0 127.0.0.1:{port}")
                         + "\n[/new]\n")
        line = reload_refused(d, "cannot listen")
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line, line
    still_serving(d, s)


def test_a_reload_that_adds_a_file_source_on_a_fifo_is_refused_without_blocking(daemon):
    d = daemon(BASE, top=TOP)
    s = d.stream("/gone")
    os.mkfifo(d.dir / "fifo")       # no writer: a blocking open() would freeze the loop
    write(d, BASE + "\n[/pipe]\nsource = file\nfile = fifo\n")
    with d.control_conn() as c:
        c.sock.settimeout(3.0)
        answer = c.request({"cmd": "reload"})
    assert answer["ok"] is False, answer
    line = d.ini.read_text().split("\n").index("file = fifo") + 1
    assert answer["errors"] == [f"{d.ini}:{line}: file: {d.dir}/fifo is not a regular file "
                                "(a FIFO); not read"]
    d.wait_log(r"reload refused, config unchanged")
    still_serving(d, s)
