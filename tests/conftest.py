"""Shared fixtures: the daemon as a subprocess, and clients that talk to it over sockets.

`daemon(ini_body)` writes a config with `listen = 127.0.0.1:0` and a control socket in a
temporary directory, starts `python3 -m ssed`, and waits (bounded) for its "ready" log line,
from which it learns the port. Every read has a timeout; nothing sleeps to synchronise.
`redis` and `make_redis(...)` give a real redis-server of the test's own (tests/redisserver.py).
"""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ssed.sse import EventParser  # noqa: E402
from redisserver import RedisServer  # noqa: E402

TIMEOUT = 10.0


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("JOURNAL_STREAM", None)
    e.pop("NOTIFY_SOCKET", None)
    return e


_env = env      # the Daemon's `env=` parameter shadows the function in __init__


class Daemon:
    def __init__(self, tmp_path, body, args=(), top="", stdin=None, listen="127.0.0.1:0",
                 preexec_fn=None, env=None, wrap=()):
        """`listen` replaces the one address; `preexec_fn` runs in the child (e.g. setrlimit);
        `env` adds variables to the daemon's environment (NOTIFY_SOCKET, WATCHDOG_USEC...);
        `wrap`: a command that execs the daemon's (given as its last arguments), e.g. one
        that gives it a mount namespace of its own."""
        self.dir = tmp_path
        self.control = str(tmp_path / "ssed.sock")
        self.ini = tmp_path / "ssed.ini"
        self.ini.write_text(f"[ssed]\nlisten = {listen}\ncontrol = ssed.sock\n"
                            f"{textwrap.dedent(top)}\n{textwrap.dedent(body)}")
        self.lines = queue.Queue()
        self.log = []
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, "-m", "ssed", "-c", str(self.ini), *args],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**_env(), **(env or {})},
            cwd=str(tmp_path), preexec_fn=preexec_fn)
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = None
        self.wait_log("ready", on_line=self._port)

    def _pump(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def ports(self):
        """{host: port} of each "listening on" line (IPv6 hosts without brackets)."""
        found = (re.search(r"listening on \[?([^\]\s]*?)\]?:(\d+)$", line) for line in self.log)
        return {m.group(1): int(m.group(2)) for m in found if m}

    def _port(self, line):
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m and self.port is None:
            self.port = int(m.group(1))

    def wait_log(self, pattern, timeout=TIMEOUT, on_line=None):
        """Read log lines until one matches `pattern`; that line."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no log line matching {pattern!r}; log:\n"
                                     + "\n".join(self.log))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"daemon exited ({self.proc.wait()}) before "
                                     f"{pattern!r}; log:\n" + "\n".join(self.log))
            if on_line:
                on_line(line)
            if re.search(pattern, line):
                return line

    # -- clients ------------------------------------------------------------------------

    def control_conn(self):
        return ControlClient(self.control)

    def ctl(self, *line):
        """One JSON request over a fresh control connection; the answer dict."""
        with self.control_conn() as c:
            return c.request(*line)

    def publish(self, service, data, event=None, client=None):
        ans = self.ctl({"cmd": "publish", "service": service, "data": data, "event": event,
                        "client": client})
        assert ans["ok"], ans
        return ans

    def stream(self, target, headers=(), version="1.1"):
        return StreamClient(self.port, target, headers, version)

    def request(self, raw, timeout=TIMEOUT):
        """Send raw bytes, read until the server closes; the whole response."""
        return raw_request(self.port, raw, timeout)

    def stop(self, sig=signal.SIGTERM, timeout=TIMEOUT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def reap(proc):
    """Kill a child a test left running (a failed assertion skipped its clean stop)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def raw_request(port, raw, timeout=TIMEOUT):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


class ControlClient:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.rfile = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.rfile.close()
        self.sock.close()

    def send_line(self, line):
        self.sock.sendall(line if isinstance(line, bytes) else line.encode() + b"\n")

    def read_line(self):
        line = self.rfile.readline()
        assert line.endswith(b"\n"), f"no answer line: {line!r}"
        return line.decode()

    def request(self, req):
        """A dict is sent as JSON and the answer parsed; a str is sent as text."""
        if isinstance(req, dict):
            self.send_line(json.dumps(req))
            return json.loads(self.read_line())
        self.send_line(req)
        return self.read_line().rstrip("\n")


class StreamClient:
    """An SSE subscriber over a raw socket: the response head, then parsed events."""

    def __init__(self, port, target, headers=(), version="1.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        head = [f"GET {target} HTTP/{version}", "Host: 127.0.0.1",
                "Accept: text/event-stream", *headers, "", ""]
        self.sock.sendall("\r\n".join(head).encode())
        self._begin()

    def _begin(self):
        """Read the response head (the request is sent); parse what came after it."""
        self.parser = EventParser()
        self.raw = bytearray()
        self.events = []
        self.status, self.headers, rest = self._head()
        self.body = bytearray(rest)
        self.events.extend(self.parser.feed(rest))

    def _head(self):
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"closed before the head: {buf!r}")
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers, rest

    def read_some(self, timeout=TIMEOUT):
        """Read once (bounded); False at EOF."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            return False
        self.body += data
        self.events.extend(self.parser.feed(data))
        return True

    def wait_events(self, n, timeout=TIMEOUT):
        """Until at least `n` events (fired ones) have arrived; the first n."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_some(left):
                raise AssertionError(f"got {len(self.events)} of {n} events; body "
                                     f"{bytes(self.body)[-500:]!r}")
        return self.events[:n]

    def wait_type(self, event_type, n, timeout=TIMEOUT):
        """Until at least `n` events of `event_type` have arrived, among any others."""
        deadline = time.monotonic() + timeout
        while sum(ev.type == event_type for ev in self.events) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_some(left):
                raise AssertionError(f"fewer than {n} {event_type!r} events: "
                                     f"{[ev.type for ev in self.events]}")

    def wait_bytes(self, needle, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while needle not in self.body:
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_some(left):
                raise AssertionError(f"{needle!r} not in {bytes(self.body)[-500:]!r}")

    def wait_closed(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("stream not closed")
            try:
                if not self.read_some(left):
                    return
            except ConnectionResetError:
                return

    def close(self):
        self.sock.close()


@pytest.fixture
def daemon(tmp_path):
    """daemon(body, top="", args=(), stdin=None): a started Daemon; killed after the test."""
    started = []

    def start(body="", **kw):
        path = tmp_path / f"d{len(started)}"
        path.mkdir()
        started.append(Daemon(path, body, **kw))
        return started[-1]

    yield start
    for d in started:
        reap(d.proc)


@pytest.fixture
def redis():
    """A started RedisServer (tests/redisserver.py) of its own; stopped after the test."""
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def make_redis():
    """make_redis(password=None, appendonly=False, unixsocket=False): a started RedisServer;
    every one made is stopped after the test."""
    made = []

    def make(**kw):
        made.append(RedisServer(**kw))
        return made[-1].start()

    yield make
    for server in made:
        server.close()


def plugin_env(tmp_path, name, source):
    """A module `name` in a directory of its own, on the daemon's import path: `env=`."""
    where = tmp_path / "plugins"
    where.mkdir(exist_ok=True)
    (where / f"{name}.py").write_text(source)
    return {"PYTHONPATH": os.pathsep.join([ROOT, str(where)])}
