"""Graceful shutdown on SIGTERM (SPEC section 2): stop accepting, send every stream a `retry:`
drawn from [retry, 10 x retry] so that reconnects spread out, flush what is queued for up to
`shutdown_timeout`, exit 0. Every wait is bounded (stream reads, `wait_log`, `proc.wait`).
"""
import os
import re
import signal
import socket
import statistics
import time

from conftest import TIMEOUT

TWO = """
    [/a]
    [/b]
"""


def retries(stream):
    return [int(v) for v in re.findall(rb"^retry: (\d+)$", bytes(stream.body), re.M)]


def stuck_stream(d, target, rcvbuf=4096):
    """A stream whose reader never reads, with a small receive window."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect(("127.0.0.1", d.port))
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def fill_queue(d, service, client_id, chunk=65536):
    """Publish big events until the daemon holds bytes queued for `client_id`; how many."""
    for n in range(1, 200):
        d.publish(service, "x" * chunk)
        [info] = [c for c in d.ctl({"cmd": "clients", "service": service})["clients"]
                  if c["id"] == client_id]
        if info["bytes_queued"] > 0:
            return n
    raise AssertionError("the daemon never had to queue for the stuck stream")


def test_sigterm_sends_every_stream_a_spread_out_retry_then_eof_and_exits_0(daemon):
    d = daemon(TWO, top="retry = 200")
    streams = [d.stream("/a") for _ in range(20)] + [d.stream("/b") for _ in range(20)]
    streams += [d.stream("/?service=/a&service=/b") for _ in range(10)]
    for s in streams:
        s.wait_bytes(b"\n\n")
    last = d.publish("/a", "last words")["id"]
    d.proc.send_signal(signal.SIGTERM)
    values = []
    for s in streams:
        s.wait_closed()
        first, *rest = retries(s)
        assert first == 200                      # the one sent when the stream opened
        assert len(rest) == 1, bytes(s.body)     # one per stream, even multiplexed
        values.append(rest[0])
        # The retry comes after every event the stream was sent, and the stream ends there.
        assert bytes(s.body).endswith(b"retry: %d\n\n" % rest[0]) or \
            bytes(s.body).endswith(b"retry: %d\n" % rest[0]), bytes(s.body)[-80:]
    for s in streams[:20] + streams[40:]:
        assert [e.id for e in s.events] == [last]
    assert d.proc.wait(TIMEOUT) == 0
    assert all(200 <= v <= 2000 for v in values), values
    # Spread out: thousands of clients must not all come back in the same instant.
    assert len(set(values)) >= 25, sorted(values)
    assert max(values) - min(values) >= 900, sorted(values)
    assert statistics.pstdev(values) > 200, sorted(values)
    d.wait_log(r"SIGTERM: shutting down")
    d.wait_log(r"stopped")


def test_with_retry_0_the_shutdown_retry_is_drawn_from_3_to_30_seconds(daemon):
    d = daemon(TWO, top="retry = 0")
    s = d.stream("/a")
    s.wait_bytes(b"\n\n")
    assert retries(s) == []
    d.proc.send_signal(signal.SIGTERM)
    s.wait_closed()
    [value] = retries(s)
    assert 3000 <= value <= 30000
    assert d.proc.wait(TIMEOUT) == 0


def test_queued_events_are_flushed_before_the_close(daemon):
    d = daemon(TWO, top="send_buffer = 67108864\nshutdown_timeout = 5")
    slow = stuck_stream(d, "/a?client=slow")
    n = fill_queue(d, "/a", "slow")
    d.proc.send_signal(signal.SIGTERM)
    d.wait_log(r"SIGTERM: shutting down")
    # Now read: every event queued before the signal arrives, then the retry, then EOF.
    data = bytearray()
    slow.settimeout(TIMEOUT)
    while chunk := slow.recv(1 << 20):
        data += chunk
    slow.close()
    assert data.count(b"data: " + b"x" * 65536 + b"\n\n") == n
    assert re.search(rb"\nretry: \d+\n\n?\Z", bytes(data)), bytes(data)[-60:]
    assert d.proc.wait(TIMEOUT) == 0


def test_a_stream_that_does_not_read_holds_the_exit_only_for_shutdown_timeout(daemon):
    d = daemon(TWO, top="send_buffer = 67108864\nshutdown_timeout = 1")
    stuck = stuck_stream(d, "/a?client=stuck")
    reader = d.stream("/b")
    reader.wait_bytes(b"\n\n")
    fill_queue(d, "/a", "stuck")
    start = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    reader.wait_closed()            # a stream that reads is done at once
    assert retries(reader)[-1] >= 3000
    d.wait_log(r"SIGTERM: shutting down")
    # During the flush nothing new gets in: refused, or at most a 503.
    try:
        with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as c:
            c.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = c.recv(4096)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
    except (ConnectionRefusedError, ConnectionResetError):
        pass
    assert d.proc.poll() is None, "exited before shutdown_timeout: the check proved nothing"
    assert d.proc.wait(TIMEOUT) == 0
    took = time.monotonic() - start
    assert 0.9 <= took < 1 + 1.5, took      # waited for the stuck stream, but not for long
    stuck.close()


# -- the processes of commands ---------------------------------------------------------------

def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def alive(pid):
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_no_process_a_command_started_outlives_the_daemon_not_even_in_its_own_session(daemon):
    # The grandchild leaves the command's session and process group (setsid), so killing
    # the group misses it; its shell exits at once. It writes its pid, the command prints it.
    d = daemon("""
        [/orphans]
        source = command
        command = setsid sh -c 'echo $$ > grandchild.pid; exec sleep 1000' &
            while [ ! -s grandchild.pid ]; do :; done; cat grandchild.pid
        interval = 60
    """)
    s = d.stream("/orphans?lastEventId=0-0")
    pid = int(s.wait_events(1)[0].data)
    try:
        # Orphaned when the shell exited: adopted by the daemon (its subreaper), not by init.
        deadline = time.monotonic() + TIMEOUT
        while parent_of(pid) != d.proc.pid:
            assert time.monotonic() < deadline, f"{pid} has parent {parent_of(pid)}"
            os.sched_yield()
        assert alive(pid)
        assert d.stop() == 0
        deadline = time.monotonic() + TIMEOUT
        while alive(pid):
            assert time.monotonic() < deadline, f"{pid} outlived the daemon"
            os.sched_yield()
        d.wait_log(r"killed 1 process\(es\) that commands had left running")
        d.wait_log(r"\bstopped$")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_an_adopted_orphan_is_reaped_when_it_exits_and_the_commands_own_status_is_kept(daemon):
    # The command starts a job in a session of its own, then fails with status 3: the daemon
    # must still see that status (reaping its adopted orphans must not take its shells'),
    # and reap the orphan once it exits, leaving no zombie.
    d = daemon("""
        [/o]
        source = command
        command = setsid sh -c 'echo $$ > orphan.pid; exec sleep 3' &
            while [ ! -s orphan.pid ]; do :; done; exit 3
        interval = 60
    """)
    d.wait_log(r"/o: command fail\w*: exit status 3")
    pid = int((d.dir / "orphan.pid").read_text())
    try:
        assert parent_of(pid) == d.proc.pid        # still sleeping: adopted, not init's
    except FileNotFoundError:
        raise AssertionError("the orphan was gone before it could be looked at") from None
    deadline = time.monotonic() + TIMEOUT
    while os.path.exists(f"/proc/{pid}"):           # a zombie still has its /proc entry
        assert time.monotonic() < deadline, f"{pid} not reaped"
        os.sched_yield()
    assert d.proc.poll() is None
