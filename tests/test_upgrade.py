"""Live upgrade (SPEC 13) on the wire: `upgrade` / SIGUSR2 hands every stream to a new
process that carries on where the old one stopped: raw-socket subscribers never see EOF and
receive every event exactly once in order, a slow reader's queued bytes arrive byte-exact,
and a new process that fails (bad config, a crash mid-handover) leaves the old one serving.

The new process is not the test's child (the old one started it): `successors` kills what
a test leaves running. Every wait is bounded.
"""
import json
import os
import signal
import socket
import textwrap
import threading
import time

import pytest

from conftest import TIMEOUT, ControlClient, plugin_env
from ssed import sse
from test_sources import alive

CHAT = textwrap.dedent("""
    [/chat]
    source = none
""")


@pytest.fixture
def successors():
    pids = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def upgrade(d, successors, expect_ok=True):
    """`upgrade` on a fresh control connection; the answer. On success the old process
    has exited 0 (within the timeout) and the new pid is recorded for cleanup."""
    answer = d.ctl({"cmd": "upgrade"})
    if answer.get("ok"):
        successors.append(answer["pid"])
    if expect_ok:
        assert answer["ok"], answer
        assert d.proc.wait(TIMEOUT) == 0
    return answer


def test_upgrade_hands_streams_to_a_new_process_that_carries_on(daemon, successors):
    d = daemon(CHAT)
    old = d.proc.pid
    clients = [d.stream(f"/chat?client=c{i}") for i in range(5)]
    first = [d.publish("/chat", f"before {i}")["id"] for i in range(3)]
    for c in clients:
        c.wait_events(3)
    answer = upgrade(d, successors)
    assert answer["pid"] != old and alive(answer["pid"])
    assert answer["streams"] == 5 and answer["ms"] >= 0
    d.wait_log(r"handed over to pid")
    after = [d.publish("/chat", f"after {i}")["id"] for i in range(3)]
    for c in clients:
        events = c.wait_events(6)
        assert [e.data for e in events] == [f"before {i}" for i in range(3)] + \
            [f"after {i}" for i in range(3)]
        assert [e.id for e in events] == first + after
    # Ids go on from the old clock; the same control socket, answered by the new process.
    assert min(map(_key, after)) > max(map(_key, first))
    listed = d.ctl({"cmd": "clients", "service": "/chat"})
    assert sorted(c["id"] for c in listed["clients"]) == [f"c{i}" for i in range(5)]
    assert os.path.exists(d.control)
    # Replay after the upgrade holds the events from before it.
    late = d.stream("/chat", headers=[f"Last-Event-ID: {first[0]}"])
    assert [e.data for e in late.wait_events(5)] == ["before 1", "before 2"] + \
        [f"after {i}" for i in range(3)]


def _key(event_id):
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def test_the_old_process_sends_no_retry_and_the_stream_sees_no_close(daemon, successors):
    d = daemon(CHAT, top="retry = 1234\n")
    c = d.stream("/chat")
    c.wait_bytes(b"retry: 1234\n")
    upgrade(d, successors)
    d.publish("/chat", "next")
    c.wait_events(1)
    # Only the stream's own `retry:` (at open): no shutdown retry, no second preamble.
    assert bytes(c.body).count(b"retry:") == 1
    assert bytes(c.body).count(b"id:") == 2     # the priming id, then the event's


def test_five_upgrades_under_continuous_publishing_lose_and_repeat_nothing(daemon, successors):
    d = daemon(CHAT)
    clients = [d.stream("/chat") for _ in range(3)]
    pub = Publisher(d.control)
    upgrades_under(pub, d, successors, 5)
    acked = pub.acked
    assert d.proc.wait(TIMEOUT) == 0
    expected = [data for _, data in acked]
    for c in clients:
        try:
            events = c.wait_events(len(expected))
        except (AssertionError, OSError):
            got = [e.data for e in c.events]
            raise AssertionError(f"{len(got)} of {len(expected)}; missing {[x for x in expected if x not in got][:20]} extra {[x for x in got if x not in expected][:5]}")
        assert [e.data for e in events] == expected
        assert [e.id for e in events] == [i for i, _ in acked]
        assert not _more(c)
    assert all(not alive(pid) for pid in successors[:-1]) and alive(successors[-1])


class Publisher:
    """Publishes e0, e1, ... to /chat over the control socket at `path`, from a thread, until
    stopped. A connection a process that handed over closed is made again (what it did not
    answer was not published): `acked` holds (id, data) of each publish answered ok."""

    def __init__(self, path, pause=0.0):
        self.path, self.pause = path, pause
        self.acked, self.stopping = [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        n, conn = 0, None
        while not self.stopping.is_set():
            try:
                conn = conn or ControlClient(self.path)
                answer = conn.request({"cmd": "publish", "service": "/chat", "data": f"e{n}"})
            except (OSError, AssertionError):
                conn = None         # the old process closed it: not published, send again
                time.sleep(0.005)
                continue
            if answer.get("ok"):
                self.acked.append((answer["id"], f"e{n}"))
                n += 1
            if self.pause:
                time.sleep(self.pause)

    def wait_acked(self, count):
        _wait_for(lambda: len(self.acked) >= count)

    def stop(self):
        self.stopping.set()
        self.thread.join(TIMEOUT)


def upgrades_under(pub, d, successors, times):
    """`times` upgrades of `d`, each once `pub` has had 20 more publishes answered; then
    `pub` stops."""
    try:
        for _ in range(times):
            pub.wait_acked(20)
            answer = d.ctl({"cmd": "upgrade"})
            assert answer["ok"], answer
            successors.append(answer["pid"])
            pub.wait_acked(len(pub.acked) + 20)
    finally:
        pub.stop()


def _wait_for(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _more(client):
    """Whether anything more arrives within a short read (nothing should)."""
    client.sock.settimeout(0.3)
    try:
        data = client.sock.recv(65536)
    except socket.timeout:
        return False
    return data


def test_a_slow_readers_queued_bytes_cross_byte_exact(daemon, successors):
    d = daemon(CHAT, top="send_buffer = 33554432\nsend_timeout = 60\n")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(TIMEOUT)
    slow.connect(("127.0.0.1", d.port))
    slow.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += slow.recv(1)
    frames, queued = [], 0
    while queued < 300_000:     # past what the kernel buffers, it waits in the old process
        assert len(frames) < 2000
        data = f"{len(frames):04d} " + "x" * 8000 + "\n" + "y" * 2000
        answer = d.publish("/chat", data)
        frames.append(sse.frame(data, None, answer["id"]))
        [info] = d.ctl({"cmd": "clients", "service": "/chat"})["clients"]
        queued = info["bytes_queued"]
    upgrade(d, successors)
    d.publish("/chat", "last")
    want = b"".join(frames)
    body = bytearray()
    deadline = time.monotonic() + TIMEOUT
    while not body.endswith(b"data: last\n\n"):
        assert time.monotonic() < deadline
        chunk = slow.recv(65536)
        assert chunk, "EOF"
        body += chunk
    # The preamble (priming id), then every frame byte-exact, then the next event.
    assert bytes(body).index(want) > 0
    assert body.endswith(want + sse.frame("last", None, _last_id(body)))
    slow.close()


def _last_id(body):
    return bytes(body).rsplit(b"id: ", 1)[1].split(b"\n", 1)[0].decode()


def test_a_bad_config_rolls_back_and_the_old_process_serves_on(daemon, successors):
    d = daemon(CHAT)
    c = d.stream("/chat")
    d.publish("/chat", "one")
    c.wait_events(1)
    good = d.ini.read_text()
    d.ini.write_text(good + "\n[/bad]\nsource = nonsense\n")
    answer = upgrade(d, successors, expect_ok=False)
    assert not answer["ok"]
    assert "exited with status 1 before it was ready" in answer["error"]
    assert "ssed.ini:" in answer["stderr"] and "nonsense" in answer["stderr"]
    assert d.proc.poll() is None
    d.publish("/chat", "two")
    assert [e.data for e in c.wait_events(2)] == ["one", "two"]
    # Fixed, the next upgrade goes through, the same stream still open.
    d.ini.write_text(good)
    upgrade(d, successors)
    d.publish("/chat", "three")
    assert [e.data for e in c.wait_events(3)] == ["one", "two", "three"]


CRASHER = '''
import os
from ssed.service import Service

class Crasher(Service):
    def on_start(self):
        if os.path.exists(os.path.join(os.path.dirname(__file__), "crash-now")):
            os._exit(3)     # after it has been handed every socket, before it says "took"
'''


def test_a_new_process_that_crashes_mid_handover_rolls_back(daemon, successors, tmp_path):
    d = daemon(CHAT + "\n[/boom]\nclass = crasher:Crasher\n",
               env=plugin_env(tmp_path, "crasher", CRASHER))
    plugins = tmp_path / "plugins"
    c = d.stream("/chat")
    d.publish("/chat", "one")
    c.wait_events(1)
    (plugins / "crash-now").write_text("")
    answer = upgrade(d, successors, expect_ok=False)
    assert not answer["ok"]
    assert "exited with status 3 while taking the sockets" in answer["error"], answer
    assert d.proc.poll() is None
    # The old process still owns the stream, the listener and the control socket.
    d.publish("/chat", "two")
    assert [e.data for e in c.wait_events(2)] == ["one", "two"]
    fresh = d.stream("/chat", headers=["Last-Event-ID: 0-0"])
    assert [e.data for e in fresh.wait_events(2)] == ["one", "two"]


def test_sigusr2_upgrades_too(daemon, successors):
    d = daemon(CHAT)
    c = d.stream("/chat")
    d.proc.send_signal(signal.SIGUSR2)
    line = d.wait_log(r"upgrade: pid \d+ took over 1 streams")
    successors.append(int(line.split("upgrade: pid ")[1].split()[0]))
    assert d.proc.wait(TIMEOUT) == 0
    d.publish("/chat", "after")
    assert c.wait_events(1)[0].data == "after"


def test_a_request_half_sent_finishes_in_the_new_process_and_idle_ones_close(daemon,
                                                                              successors):
    d = daemon(CHAT)
    half = socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT)
    half.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\n")
    idle = socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200" in idle.recv(65536)
    other = ControlClient(d.control)
    assert other.request({"cmd": "stats"})["ok"]
    upgrade(d, successors)
    assert idle.recv(65536) == b""          # a kept-alive connection nobody used: closed
    assert other.sock.recv(65536) == b""    # another control connection: closed
    half.sendall(b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = half.recv(65536)
        assert chunk
        head += chunk
    assert head.startswith(b"HTTP/1.1 200")
    d.publish("/chat", "hello")
    while b"data: hello" not in head:
        head += half.recv(65536)


def test_a_second_upgrade_while_one_runs_is_refused(daemon, successors):
    d = daemon(CHAT)
    with ControlClient(d.control) as a, ControlClient(d.control) as b:
        a.send_line(json.dumps({"cmd": "upgrade"}))
        b.send_line(json.dumps({"cmd": "upgrade"}))
        answers = [json.loads(a.read_line()), json.loads(b.read_line())]
    ok = [x for x in answers if x["ok"]]
    refused = [x for x in answers if not x["ok"]]
    assert len(ok) == 1 and len(refused) == 1, answers
    successors.append(ok[0]["pid"])
    assert "already in progress" in refused[0]["error"]


SLEEPER = '''
import os, time
if os.path.exists(os.path.join(os.path.dirname(__file__), "sleep-now")):
    time.sleep(60)      # an import that hangs: the new process is never ready
from ssed.service import Service

class Sleeper(Service):
    pass
'''


def test_a_new_process_not_ready_within_10_s_is_killed_and_the_old_serves_on(
        daemon, successors, tmp_path):
    d = daemon(CHAT + "\n[/zz]\nclass = sleeper:Sleeper\n",
               env=plugin_env(tmp_path, "sleeper", SLEEPER))
    plugins = tmp_path / "plugins"
    c = d.stream("/chat")
    (plugins / "sleep-now").write_text("")
    started = time.monotonic()
    with ControlClient(d.control) as ctl:
        ctl.sock.settimeout(TIMEOUT + 10)      # the answer takes the 10 s
        answer = ctl.request({"cmd": "upgrade"})
    assert 9.5 < time.monotonic() - started < TIMEOUT + 5
    assert answer["error"] == "upgrade failed: the new process was not ready within 10 s"
    assert d.proc.poll() is None
    d.publish("/chat", "still here")
    assert c.wait_events(1)[0].data == "still here"


def test_a_rollback_after_the_freeze_keeps_a_slow_readers_queue_exact(daemon, successors,
                                                                     tmp_path):
    d = daemon(CHAT + "\n[/boom]\nclass = crasher:Crasher\n",
               top="send_buffer = 33554432\nsend_timeout = 60\n",
               env=plugin_env(tmp_path, "crasher", CRASHER))
    plugins = tmp_path / "plugins"
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(TIMEOUT)
    slow.connect(("127.0.0.1", d.port))
    slow.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
    frames, queued = [], 0
    while queued < 300_000:
        assert len(frames) < 2000
        data = f"{len(frames):04d} " + "z" * 10000
        frames.append(sse.frame(data, None, d.publish("/chat", data)["id"]))
        queued = d.ctl({"cmd": "clients", "service": "/chat"})["clients"][0]["bytes_queued"]
    (plugins / "crash-now").write_text("")
    assert not upgrade(d, successors, expect_ok=False)["ok"]
    frames.append(sse.frame("after", None, d.publish("/chat", "after")["id"]))
    want, body = b"".join(frames), bytearray()
    while not body.endswith(want):
        chunk = slow.recv(65536)
        assert chunk, "EOF"
        body += chunk
        assert len(body) < len(want) + 4096
    slow.close()


def test_streams_of_a_template_channel_cross_and_one_of_a_removed_service_ends(
        daemon, successors):
    d = daemon(CHAT + "\n[/user/*]\n\n[/gone]\n")
    user = d.stream("/user/alice")
    gone = d.stream("/gone")
    d.publish("/user/alice", "one")
    user.wait_events(1)
    d.ini.write_text(d.ini.read_text().replace("[/gone]\n", ""))
    upgrade(d, successors)
    d.publish("/user/alice", "two")
    assert [e.data for e in user.wait_events(2)] == ["one", "two"]
    gone.wait_closed()
    assert [c["path"] for c in d.ctl({"cmd": "channels", "template": "/user/*"})["channels"]] \
        == ["/user/alice"]


def test_a_streams_token_expiry_crosses_and_closes_it_in_the_new_process(tmp_path,
                                                                          successors):
    import subprocess
    import sys
    from conftest import Daemon, env, reap
    (tmp_path / "jwt.secret").write_text("s" * 40)
    d = Daemon(tmp_path, "[/chat]\nauth = jwt\n",
               top=f"jwt_key = hs256:{tmp_path / 'jwt.secret'}\njwt_leeway = 0\n")
    try:
        token = subprocess.run([sys.executable, "-m", "ssed.ctl", "-c", str(d.ini), "token",
                                "--sub", "alice", "--subscribe", "/chat", "--ttl", "4"],
                               capture_output=True, text=True, env=env(), timeout=TIMEOUT,
                               check=True).stdout.strip()
        c = d.stream("/chat", headers=[f"Authorization: Bearer {token}"])
        assert c.status == 200
        opened = time.monotonic()
        upgrade(d, successors)
        d.publish("/chat", "before expiry")
        assert c.wait_events(1)[0].data == "before expiry"
        c.wait_closed(timeout=TIMEOUT)          # at exp, by the new process
        assert 2.0 < time.monotonic() - opened < 8
        assert d.ctl({"cmd": "stats"})["dropped"] == {"expired": 1}
    finally:
        reap(d.proc)
