"""A real redis-server for the cluster tests (SPEC 12), and a tiny blocking client for it.

`RedisServer` runs its own `redis-server` (never the system's service) on a free TCP port of
127.0.0.1, in a temporary directory, with no RDB snapshots (`--save ''`) unless `appendonly`
(then `appendfsync always`: what the README asks of a cluster's Redis). Every wait is bounded;
`stop()` and `close()` leave no process, and the server dies with the test run even if the
run itself is killed (PR_SET_PDEATHSIG). The client speaks RESP2 through `ssed.resp`.

Without `redis-server`, `require_redis()` fails the test under CI=true (.ci/run installs it)
and skips it elsewhere, saying how to install it.
"""
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from urllib.parse import quote

import pytest

from ports import free_port
from ssed.resp import NEED, Parser, command

TIMEOUT = 10.0
MISSING = "redis-server not installed (apt-get install redis-server)"


def require_redis():
    """The path of redis-server; in CI a missing one fails the test loudly, elsewhere skips."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(MISSING + "; .ci/run installs it", pytrace=False)
        pytest.skip(MISSING)
    return path



_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: SIGKILL it when the test run that started it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path, lines=30):
    """The last `lines` of a server's log file, for a failure message."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class Client:
    """One blocking connection; every read bounded by `timeout` (TimeoutError past it).
    Error replies come back as `resp.Error` values, as the daemon sees them."""

    def __init__(self, port=None, password=None, timeout=TIMEOUT, unixsocket=None,
                 host="127.0.0.1"):
        if unixsocket:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(unixsocket)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.parser = Parser()
        if password is not None:
            answer = self.call("AUTH", password)
            if answer != "OK":
                self.close()
                raise ConnectionError(f"AUTH refused: {answer}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, *args):
        self.sock.sendall(command(*args))

    def read(self, timeout=None):
        """The next reply, waiting at most `timeout` (default: the client's) for all of it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while (reply := self.parser.get()) is NEED:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no whole reply from redis in time")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.parser.feed(data)
        return reply

    def call(self, *args, timeout=None):
        self.send(*args)
        return self.read(timeout)


class RedisServer:
    """redis-server on a free port in its own directory; see the module's docstring."""

    def __init__(self, password=None, appendonly=False, unixsocket=False, dir=None,
                 host="127.0.0.1", port=None):
        """`host`: the loopback address to bind (all of 127/8 is loopback on Linux); `port`:
        a given one (two servers on two addresses may share it), else a free one."""
        self.binary = require_redis()       # before making a directory: a skip leaves none
        self.host = host
        self.password = password
        self.appendonly = appendonly
        self._own_dir = dir is None
        self.dir = str(dir) if dir is not None else tempfile.mkdtemp(prefix="ssed-redis-")
        self.port = port or free_port()
        # A short path: a UNIX socket's path must fit in 108 bytes.
        self.unixsocket = os.path.join(self.dir, "redis.sock") if unixsocket else None
        self.log = os.path.join(self.dir, "redis.log")
        self.proc = None

    @property
    def url(self):
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def unix_url(self):
        return f"unix://{self.unixsocket}?db=0" if self.unixsocket else None

    def args(self):
        args = [self.binary, "--port", str(self.port), "--bind", self.host,
                "--dir", self.dir, "--daemonize", "no", "--logfile", self.log,
                "--dbfilename", "dump.rdb", "--appenddirname", "appendonlydir",
                "--enable-debug-command", "local"]     # DEBUG SLEEP: a slow Redis on demand
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.unixsocket:
            args += ["--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
        return args

    def start(self, timeout=TIMEOUT):
        """Start it and wait (bounded) until PING answers PONG; raises with its log if not."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     cwd=self.dir, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        answer = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n"
                                   + self.log_tail())
            try:
                answer = self.call("PING", timeout=0.25)
            except OSError as exc:      # refused before it listens; reset while it loads
                answer = exc
            if answer == "PONG":
                return self
            time.sleep(0.02)            # the port is not open yet: nothing to wait on
        self.kill()
        raise RuntimeError(f"redis-server not answering PING in {timeout} s (last: {answer!r}):\n"
                           + self.log_tail())

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=TIMEOUT):
        """SIGTERM (after SIGCONT, in case it is paused), SIGKILL past `timeout`; reaped."""
        if self.running():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self

    def kill(self):
        """SIGKILL, as a crash would: no shutdown, no last write."""
        if self.running():
            self.proc.kill()
            self.proc.wait()
        return self

    def close(self):
        """Stop it and remove the directory it was given by us."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self):
        """SIGSTOP, and wait until the kernel has stopped it: connects still succeed (the
        listen queue), answers never come."""
        self.proc.send_signal(signal.SIGSTOP)
        self._wait_state(lambda stopped: stopped, "stopped")

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self._wait_state(lambda stopped: not stopped, "running")

    def restart(self, keep_data=True, timeout=TIMEOUT):
        """Stop (if running) and start again on the same port. keep_data=False deletes the
        dump and the AOF first: a Redis that lost everything. Without `appendonly` nothing is
        on disk (--save ''), so the restarted server is empty either way."""
        self.stop()
        if not keep_data:
            for name in ("dump.rdb", "appendonly.aof"):
                path = os.path.join(self.dir, name)
                if os.path.exists(path):
                    os.remove(path)
            shutil.rmtree(os.path.join(self.dir, "appendonlydir"), ignore_errors=True)
        return self.start(timeout)

    def client(self, timeout=TIMEOUT, unix=False):
        """A new connection (AUTH done when there is a password); close it, or use `with`."""
        return Client(self.port, self.password, timeout, self.unixsocket if unix else None,
                      self.host)

    def call(self, *args, timeout=TIMEOUT):
        """One command on a fresh connection; its reply (an error reply as `resp.Error`)."""
        with self.client(timeout) as c:
            return c.call(*args)

    def log_tail(self, lines=30):
        return log_tail(self.log, lines)

    def _state(self):
        """The process's state letter from /proc (R, S, T...), or None once it is gone."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return None

    def _wait_state(self, want, name, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while not want(self._state() in ("T", "t")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not {name} after {timeout} s")
            time.sleep(0.005)           # signal delivery: nothing to wait on but /proc
