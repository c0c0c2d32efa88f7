"""Live upgrade in two parts (SPEC 13): every stream's socket is sent before the freeze,
what changed at it. Streams that close or open between the two parts, and a new process
that dies between them, on the wire. `$SSED_TEST_HOLD` (takeover._hold) holds the new
process between the parts until the test lets it go; every wait is bounded.
"""
import os
import re
import resource
import signal
import socket
import struct
import threading
import time

from conftest import TIMEOUT
from test_upgrade import CHAT, alive, successors, upgrade  # noqa: F401 (a fixture)


def _held(tmp_path):
    """The hold's path, and a wait for the new process to reach it: its pid."""
    hold = str(tmp_path / "hold")

    def reached():
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                with open(hold + ".waiting") as f:
                    text = f.read()
                if text:
                    return int(text)
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        raise AssertionError("the new process never reached the hold")
    return hold, reached


def _upgrade_in_background(d, successors):  # noqa: F811
    out = {}
    t = threading.Thread(target=lambda: out.update(answer=upgrade(d, successors,
                                                                  expect_ok=False)))
    t.start()
    return t, out


def _count(d):
    return len(d.ctl({"cmd": "clients", "service": "/chat"})["clients"])


def test_streams_closed_and_opened_between_the_parts_are_handed_over_as_they_are(
        daemon, successors, tmp_path):  # noqa: F811
    hold, reached = _held(tmp_path)
    d = daemon(CHAT, env={"SSED_TEST_HOLD": hold})
    stays = d.stream("/chat?client=stays")
    leaves = d.stream("/chat?client=leaves")
    kicked = d.stream("/chat?client=kicked")
    d.publish("/chat", "before")
    for c in (stays, leaves, kicked):
        c.wait_events(1)
    t, out = _upgrade_in_background(d, successors)
    reached()
    # The old process still serves: one stream leaves, one is kicked, one opens, an event
    # goes out; the new process holds the first part (duplicates, unused).
    leaves.close()
    assert d.ctl({"cmd": "kick", "service": "/chat", "client": "kicked"})["closed"]
    deadline = time.monotonic() + TIMEOUT
    while _count(d) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    opened = d.stream("/chat?client=opened")
    d.publish("/chat", "between")
    assert [e.data for e in stays.wait_events(2)] == ["before", "between"]
    assert [e.data for e in opened.wait_events(1)] == ["between"]
    open(hold, "w").close()
    t.join(TIMEOUT)
    answer = out["answer"]
    assert answer["ok"] and answer["streams"] == 2, answer
    assert d.proc.wait(TIMEOUT) == 0
    # The kicked stream ends (its duplicate in the new process is let go at the freeze).
    kicked.wait_closed()
    listed = d.ctl({"cmd": "clients", "service": "/chat"})["clients"]
    assert sorted(c["id"] for c in listed) == ["opened", "stays"]
    d.publish("/chat", "after")
    assert [e.data for e in stays.wait_events(3)] == ["before", "between", "after"]
    assert [e.data for e in opened.wait_events(2)] == ["between", "after"]


def test_a_new_process_killed_between_the_parts_rolls_back_and_no_stream_notices(
        daemon, successors, tmp_path):  # noqa: F811
    hold, reached = _held(tmp_path)
    d = daemon(CHAT, env={"SSED_TEST_HOLD": hold})
    c = d.stream("/chat")
    d.publish("/chat", "one")
    c.wait_events(1)
    t, out = _upgrade_in_background(d, successors)
    pid = reached()
    os.kill(pid, signal.SIGKILL)    # with every stream's duplicate
    t.join(TIMEOUT)
    answer = out["answer"]
    assert not answer["ok"]
    assert "killed by SIGKILL while taking the sockets" in answer["error"], answer
    assert d.proc.poll() is None and not alive(pid)
    d.publish("/chat", "two")
    assert [e.data for e in c.wait_events(2)] == ["one", "two"]
    assert bytes(c.body).count(b"retry:") <= 1
    # And the next upgrade goes through.
    open(hold, "w").close()
    assert upgrade(d, successors)["streams"] == 1
    d.publish("/chat", "three")
    assert [e.data for e in c.wait_events(3)] == ["one", "two", "three"]


def test_a_first_part_of_many_batches_goes_over_several_turns_while_streams_close(
        daemon, successors):  # noqa: F811
    """Past FIRST_BATCH streams the first part is sent over several turns, the loop serving
    in between; streams closed meanwhile (before or after their socket went) are left out,
    and every other stream gets the next event once."""
    count, leaving = 2600, 600
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * count), hard))
    d = daemon(CHAT, top=f"max_clients_per_ip = {count}\nkeepalive = 60\n")
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT)
        s.sendall(b"GET /chat?client=s%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        socks.append(s)
    deadline = time.monotonic() + TIMEOUT
    while _count(d) != count:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t, out = _upgrade_in_background(d, successors)
    for s in socks[-leaving:]:      # while the first part goes: a reset each
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    t.join(TIMEOUT)
    answer = out["answer"]
    assert answer["ok"] and answer["streams"] <= count, answer
    assert d.proc.wait(TIMEOUT) == 0
    line = d.wait_log(r"first part before it sent in (\d+) turns over (\d+) ms")
    turns, took = map(int, re.search(r"in (\d+) turns over (\d+) ms", line).groups())
    # Turn after turn at once, though the loop is idle (keepalive 60 s, nothing published).
    assert turns >= 2 and took < 400, line
    deadline = time.monotonic() + TIMEOUT
    while _count(d) != count - leaving:     # (a reset may reach the new process)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    d.publish("/chat", "after")
    for s in socks[:-leaving]:
        body = b""
        while b"data: after\n\n" not in body:
            chunk = s.recv(65536)
            assert chunk, body
            body += chunk
        assert body.count(b"data: ") == 1
        s.close()
