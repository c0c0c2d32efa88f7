"""Helpers for the cluster's daemon-level tests (SPEC 12): nodes as daemons sharing one test
Redis, the HTTP bits they are checked through, and a TCP proxy that can cut one node off
Redis while the others keep it.

A node is a `daemon` fixture's Daemon whose config has a `[cluster]` section pointing at the
test's Redis, with a short `timeout` and `lease` so that failures show quickly. `wait_up`
waits (bounded) until the node says, through the `cluster` command, that Redis is up: a
node reads the cluster's events from when it is up, so a test publishes only after that.
"""
import json
import re
import socket
import subprocess
import sys
import threading
import time

from conftest import TIMEOUT, env

PTOK = "sixteen-bytes-ptok"
TIMEOUT_S = 1       # [cluster] timeout: Redis counts as down after 1 s without an answer
LEASE_S = 1.5       # [cluster] lease

SERVICES = f"""
[/chat]
history = 1000
publish_token = {PTOK}

[/user/*]
history = 20
publish_token = {PTOK}

[/local]
cluster = false
publish_token = {PTOK}
"""


STARTED = []        # the nodes node() started in this test


def survived():
    """An autouse fixture's body: after the test, no node crashed or logged a bug, whatever
    Redis went through (exit 0 after a stop, or -9 when the test killed it)."""
    STARTED.clear()
    yield
    made, STARTED[:] = list(STARTED), []
    for d in made:
        bugs = [line for line in d.log if "Traceback" in line or " bug: " in line]
        assert not bugs, bugs
        assert d.proc.poll() in (None, 0, -9), (d.proc.returncode, d.log[-20:])


def cluster_section(url, name, prefix="ssed", timeout=TIMEOUT_S, lease=LEASE_S, maxlen=None):
    """`name` None: no `node` key (the default name); `maxlen` None: the default."""
    return (f"\n[cluster]\nredis = {url}\nprefix = {prefix}\n"
            + (f"node = {name}\n" if name is not None else "")
            + (f"maxlen = {maxlen}\n" if maxlen is not None else "")
            + f"timeout = {timeout}\nlease = {lease}\n")


def node(daemon, url, name, body=SERVICES, up=True, top="keepalive = 1\n", **kw):
    """A started node named `name`, `kw` going to its [cluster] section (prefix, timeout,
    lease) except `env` and `wrap` (the Daemon's); with `up`, once its Redis is up."""
    extra_env, wrap = kw.pop("env", None), kw.pop("wrap", ())
    d = daemon(body + cluster_section(url, name, **kw), top=top, env=extra_env, wrap=wrap)
    d.name = name
    STARTED.append(d)
    if up:
        wait_up(d)
    return d


def nodes(daemon, redis, count, **kw):
    return [node(daemon, redis.url, f"n{i}", **kw) for i in range(count)]


def cluster_info(d):
    answer = d.ctl({"cmd": "cluster"})
    assert answer["ok"], answer
    return answer


def wait_for(what, check, timeout=TIMEOUT, every=0.02):
    """Poll `check()` until it returns something true (bounded); that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s (last: {value!r})")
        time.sleep(every)       # polling a state the daemon shows no event for


def wait_up(d, up=True, timeout=TIMEOUT):
    return wait_for(f"{d.name} {'up' if up else 'down'}",
                    lambda: cluster_info(d)["up"] == up and cluster_info(d), timeout)


def subscribe(d, target, headers=()):
    """A stream that has had its priming id or first replayed event (so it is live)."""
    s = d.stream(target, headers)
    assert s.status == 200, (s.status, bytes(s.body))
    s.wait_bytes(b"\n\n")
    return s


def pairs(events):
    return [(e.id, e.data) for e in events]


def id_key(event_id):
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def http(d, method, path, headers=(), body=b""):
    """One request (Connection: close); (status, {lowercase header: value}, body)."""
    head = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close", *headers]
    if method == "POST":
        head.append(f"Content-Length: {len(body)}")
    raw = d.request(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                           for line in lines[1:])}
    return int(lines[0].split()[1]), fields, rest


def post(d, path, data, token=PTOK):
    return http(d, "POST", path, ["Content-Type: text/plain",
                                  f"Authorization: Bearer {token}"], data.encode())


def healthz(d):
    status, _, body = http(d, "GET", "/healthz")
    return status, body.decode()


def metric(d, name):
    """The value of an unlabelled sample of /metrics, and that its TYPE line is there."""
    status, _, body = http(d, "GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert re.search(rf"(?m)^# TYPE {name} (gauge|counter)$", text), text
    return float(re.search(rf"(?m)^{name} (\S+)$", text)[1])


def publish_many(conns, lines):
    """Pipelined publishes: every line of `lines[i]` sent on `conns[i]` before any answer
    is read, then the answers (JSON dicts), in order, per connection."""
    for c, reqs in zip(conns, lines):
        c.send_line("".join(json.dumps(r) + "\n" for r in reqs).encode())
    return [[json.loads(c.read_line()) for _ in reqs] for c, reqs in zip(conns, lines)]


def ssectl(d, *args):
    return subprocess.run([sys.executable, "-m", "ssed.ctl", "-s", d.control, *args],
                          env=env(), capture_output=True, text=True, timeout=TIMEOUT)


class Proxy:
    """A TCP relay to Redis for one node: `cut()` closes every relayed connection and
    refuses new ones (that node has lost Redis; the others have not), `heal()` lets them
    through again. Threads, all daemonic; every socket closed by `close()`."""

    def __init__(self, port):
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = set()
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.refusing:
                    conn.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=TIMEOUT)
                except OSError:
                    conn.close()
                    continue
                upstream.settimeout(None)
                self.open |= {conn, upstream}
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            self._drop(s)

    def _drop(self, s):
        with self.lock:
            self.open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self):
        with self.lock:
            self.refusing = True
            doomed = list(self.open)
        for s in doomed:
            self._drop(s)

    def heal(self):
        with self.lock:
            self.refusing = False

    def close(self):
        self.cut()
        self.listener.close()
