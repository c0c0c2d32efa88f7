"""Real reverse proxies in front of the daemon, for tests/test_real_proxies.py (SPEC 14):
nginx, HAProxy and Caddy, each run as a subprocess of its own on a free port of 127.0.0.1,
in a temporary directory, with a config the test writes, forwarding to ssed on 127.0.0.1.

The configs are the README's ("Behind a proxy"), taken from between its
`<!-- proxy-NAME:begin -->` / `end` markers, with only the addresses replaced (each
replacement must hit exactly once) and what a test run needs around them (nginx: its own
pid, log and temp paths, `daemon off`; Caddy: no admin endpoint, no saved config; HAProxy:
nothing). What users copy is what is tested.

`stop()` is bounded (SIGTERM, then SIGKILL to the whole process group: nginx's workers
too) and removes the directory; the proxy also dies with the test run (PR_SET_PDEATHSIG).
Without the binary, `require()` fails the test under CI=true (.ci/run installs nginx-light,
haproxy and caddy) and skips it elsewhere, saying how to install it.

`ProxiedStream` is an SSE client from a chosen source address (any of 127/8): the proxies
re-frame a stream (nginx and Caddy send it chunked), so the body is de-chunked before it is
parsed, and each event keeps the time its bytes were read.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from ssed.sse import EventParser
from ssed.sseclient import Dechunker, read_head

from hostile import connect, get
from ports import free_port
from redisserver import _die_with_parent, log_tail

TIMEOUT = 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PACKAGES = {"nginx": "nginx-light", "haproxy": "haproxy", "caddy": "caddy"}
README_PORT = "127.0.0.1:8080"      # where the README's configs send requests: ssed


def require(binary):
    """The path of `binary`; in CI a missing one fails the test loudly, elsewhere skips."""
    path = shutil.which(binary, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        missing = f"{binary} not installed (apt-get install {PACKAGES[binary]})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing + "; .ci/run installs it", pytrace=False)
        pytest.skip(missing)
    return path


def readme_config(name):
    """The code block of the README between `<!-- proxy-NAME:begin -->` and its end."""
    text = open(README, encoding="utf-8").read()
    m = re.search(rf"<!-- proxy-{name}:begin -->\n```\w*\n(.*?)```\n<!-- proxy-{name}:end -->",
                  text, re.S)
    assert m, f"README has no proxy-{name} config block"
    return m.group(1)


def replace_once(text, old, new):
    assert text.count(old) == 1, f"{old!r} is not in the config exactly once:\n{text}"
    return text.replace(old, new)


class Proxy:
    """A proxy process forwarding 127.0.0.1:`port` to ssed on 127.0.0.1:`upstream`."""

    binary = None

    def __init__(self, upstream):
        self.path = require(self.binary)    # before making a directory: a skip leaves none
        self.upstream = upstream
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"ssed-{self.binary}-")
        self.log = os.path.join(self.dir, "proxy.log")
        self.proc = None

    def file(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def start(self, timeout=TIMEOUT):
        """Start it and wait (bounded) until its port accepts connections."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, cwd=self.dir, env=self.env(),
                                         start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited ({self.proc.returncode}):\n"
                                   + self.log_tail())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.binary} not listening in {timeout} s:\n"
                                   + self.log_tail())
            time.sleep(0.02)            # the port is not open yet: nothing to wait on

    def env(self):
        return dict(os.environ)

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL to its process group past `timeout`; the directory removed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)    # workers left behind, if any
            except ProcessLookupError:
                pass
            if self.proc.poll() is None:
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines=30):
        return log_tail(self.log, lines)


class Nginx(Proxy):
    binary = "nginx"

    def args(self):
        site = replace_once(readme_config("nginx"), f"server {README_PORT};",
                            f"server 127.0.0.1:{self.upstream};")
        site = replace_once(site, "listen 80;", f"listen 127.0.0.1:{self.port};")
        temp = "\n".join(f"    {kind}_temp_path {self.dir}/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = self.file("nginx.conf", f"""\
daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp}
{site}
}}
""")
        return [self.path, "-p", self.dir, "-e", self.log, "-c", conf]


class HAProxy(Proxy):
    binary = "haproxy"

    def args(self):
        conf = replace_once(readme_config("haproxy"), f"server ssed {README_PORT} ",
                            f"server ssed 127.0.0.1:{self.upstream} ")
        conf = replace_once(conf, "bind :80", f"bind 127.0.0.1:{self.port}")
        return [self.path, "-db", "-f", self.file("haproxy.cfg", conf)]


class Caddy(Proxy):
    binary = "caddy"

    def args(self):
        site = replace_once(readme_config("caddy"), f"reverse_proxy {README_PORT}",
                            f"reverse_proxy 127.0.0.1:{self.upstream}")
        # Any Host (the tests' is not the site's name), on 127.0.0.1 alone.
        site = replace_once(site, "example.com {",
                            f"http://:{self.port} {{\n\tbind 127.0.0.1")
        # No admin endpoint (a fixed port: tests run side by side), a short
        # shutdown (its default waits for every open stream to end).
        conf = self.file("Caddyfile", "{\n\tadmin off\n"
                                      "\tgrace_period 1s\n}\n" + site)
        return [self.path, "run", "--adapter", "caddyfile", "--config", conf]

    def env(self):
        return dict(os.environ, HOME=self.dir, XDG_DATA_HOME=self.dir,
                    XDG_CONFIG_HOME=self.dir)


PROXIES = {"nginx": Nginx, "haproxy": HAProxy, "caddy": Caddy}


class ProxiedStream:
    """GET `target` on `port` from `source`: the response head, then events as they come
    (`events`, and `arrived`: the monotonic time of the read that completed each)."""

    def __init__(self, port, target, source="127.0.0.2", headers=()):
        self.sock = connect(port, source)
        self.sock.sendall(get(target, ("Accept: text/event-stream", *headers)))
        self.status, self.headers, rest = read_head(self.sock)
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self.dechunker = Dechunker() if chunked else None
        self.parser = EventParser()
        self.events, self.arrived = [], []
        self.ended = False
        self._feed(rest, time.monotonic())

    def _feed(self, data, when):
        if self.dechunker is not None:
            data = self.dechunker.feed(data)
            self.ended = self.ended or self.dechunker.done
        new = self.parser.feed(data)
        self.events += new
        self.arrived += [when] * len(new)

    def read_some(self, timeout):
        """One read (bounded); False once the body has ended."""
        if self.ended:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True             # nothing yet: the caller's deadline decides
        except ConnectionResetError:
            data = b""
        if not data:
            self.ended = True
            return False
        self._feed(data, time.monotonic())
        return not self.ended

    def wait_events(self, n, timeout=TIMEOUT):
        """Until at least `n` events have arrived; the first n."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.read_some(left):
                raise AssertionError(f"got {len(self.events)} of {n} events: {self.events}")
        return self.events[:n]

    def wait_ended(self, timeout=TIMEOUT):
        """Until the body ends (the proxy's last chunk, or a close)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stream not ended in {timeout} s")
            if not self.read_some(left):
                return

    def close(self):
        self.sock.close()
