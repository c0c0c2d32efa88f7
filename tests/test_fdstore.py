"""SPEC 13 under systemd, with a fake service manager (the test machines do not run systemd
as PID 1): a datagram socket that takes the notify messages and their descriptors
(SCM_RIGHTS) as systemd's fd store would, then starts the next daemon with them in
LISTEN_FDS / LISTEN_FDNAMES / LISTEN_PID (in a scrambled order: the daemon matches them by
inode), as `systemctl restart` does. And the upgrade's MAINPID= / READY=1.
"""
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import TIMEOUT, Daemon, env, reap
from test_upgrade import alive, successors  # noqa: F401  (a fixture)

CHAT = textwrap.dedent("""
    [/chat]
    source = none
""")


class Manager:
    """systemd's side of NOTIFY_SOCKET: fields of each datagram, and an fd store by name."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.name = f"@ssed-fdstore-{os.getpid()}-{id(self)}"
        self.sock.bind("\0" + self.name[1:])
        self.store = {}         # name -> [fd, ...] in the order they came
        self.seen = []          # the fields of every datagram

    def close(self):
        self.sock.close()
        for fds in self.store.values():
            for fd in fds:
                os.close(fd)

    def recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, 65536, 1024)
        except socket.timeout:
            return None
        assert not flags & socket.MSG_CTRUNC
        fields = dict(line.partition("=")[::2] for line in data.decode().split("\n"))
        self.seen.append(fields)
        if fields.get("FDSTORE") == "1":
            self.store.setdefault(fields["FDNAME"], []).extend(fds)
        else:
            assert not fds, fields
        if fields.get("FDSTOREREMOVE") == "1":
            for fd in self.store.pop(fields["FDNAME"], []):
                os.close(fd)
        return fields

    def wait(self, field, value=None, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            got = self.recv(deadline - time.monotonic())
            assert got is not None, f"no {field} within {timeout} s; got {self.seen}"
            if field in got and (value is None or got[field] == value):
                return got

    def drain(self, quiet=0.3):
        while self.recv(quiet) is not None:
            pass


@pytest.fixture
def manager():
    m = Manager()
    yield m
    m.close()


LAUNCH = """
import fcntl, os, sys
fds, names = [int(x) for x in sys.argv[1].split(",")], sys.argv[2]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 1000) for fd in fds]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=names)
os.execv(sys.executable, [sys.executable, "-m", "ssed", *sys.argv[3:]])
"""


class Restarted(Daemon):
    """The next start of a daemon, handed `passed` [(name, fd)] the way systemd does."""

    def __init__(self, first, passed, extra_env):
        self.dir, self.control, self.ini = first.dir, first.control, first.ini
        self.lines, self.log, self.port = queue.Queue(), [], None
        fds = [fd for _, fd in passed]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, ",".join(map(str, fds)),
             ":".join(name for name, _ in passed), "-c", str(self.ini)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**env(), **extra_env}, cwd=str(self.dir), pass_fds=fds)
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_log("ready", on_line=self._port)
        self.port = first.port


def stored(manager):
    """What the store holds as (name, fd) pairs, in reverse: no order is promised."""
    pairs = [(name, fd) for name, fds in manager.store.items() for fd in fds]
    return pairs[::-1]


@pytest.mark.parametrize("how", ["FDSTORE", "fdstore = true"])
def test_sigterm_puts_streams_in_the_fd_store_and_the_next_start_serves_them(
        daemon, manager, how, tmp_path):
    extra = {"NOTIFY_SOCKET": manager.name}
    if how == "FDSTORE":
        extra["FDSTORE"] = "64"
    d = daemon(CHAT, env=extra, top="fdstore = true\n" if how != "FDSTORE" else "")
    manager.wait("READY")
    clients = [d.stream(f"/chat?client=c{i}") for i in range(4)]
    first = [d.publish("/chat", f"before {i}")["id"] for i in range(3)]
    for c in clients:
        c.wait_events(3)
    assert d.stop() == 0
    manager.wait("STOPPING")
    assert "ssed-state" in manager.store and "ssed-0" in manager.store, "\n".join(d.log)
    # listener, control socket, 4 streams in one batch; the memfd of state
    assert len(manager.store["ssed-0"]) == 6 and len(manager.store["ssed-state"]) == 1
    assert os.path.exists(d.control)        # kept for the next start
    # A stray descriptor under our prefix that the state does not name: closed, forgotten.
    r, w = os.pipe()
    manager.store["ssed-stray"] = [r]
    os.close(w)
    names = sorted(manager.store)
    nxt = Restarted(d, stored(manager), extra)
    try:
        log = "\n".join(nxt.log)     # (read up to "ready" by Restarted)
        assert "took over 4 streams and 0 requests from systemd's fd store" in log
        assert "fd store: 1 descriptors the record does not name (closed)" in log
        removed = set()
        while removed != set(names):
            removed.add(manager.wait("FDSTOREREMOVE")["FDNAME"])
        after = [nxt.publish("/chat", f"after {i}")["id"] for i in range(2)]
        for c in clients:
            events = c.wait_events(5)
            assert [e.id for e in events] == first + after
            assert b"retry:" not in bytes(c.body).split(b"\n\n", 1)[1]   # no shutdown retry
        assert nxt.ctl({"cmd": "stats"})["clients"] == 4
        late = nxt.stream("/chat", headers=[f"Last-Event-ID: {first[1]}"])
        assert [e.data for e in late.wait_events(3)] == ["before 2", "after 0", "after 1"]
    finally:
        reap(nxt.proc)


def test_without_a_store_sigterm_shuts_down_as_before(daemon, manager):
    d = daemon(CHAT, env={"NOTIFY_SOCKET": manager.name})
    manager.wait("READY")
    c = d.stream("/chat")
    assert d.stop() == 0
    c.wait_closed()
    assert b"retry:" in bytes(c.body).split(b"\n\n", 1)[1]
    manager.drain()
    assert not manager.store


def test_the_new_process_of_an_upgrade_tells_systemd_it_is_the_main_one(
        daemon, manager, successors):  # noqa: F811
    d = daemon(CHAT, env={"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "2000000",
                          "WATCHDOG_PID": "1"})
    manager.wait("READY")
    answer = d.ctl({"cmd": "upgrade"})
    assert answer["ok"], answer
    successors.append(answer["pid"])
    main = manager.wait("MAINPID")
    assert main["MAINPID"] == str(answer["pid"])
    manager.wait("READY")
    # The watchdog follows the new process (the old one's WATCHDOG_PID is not passed on).
    assert d.proc.wait(TIMEOUT) == 0
    manager.wait("WATCHDOG")
    manager.wait("WATCHDOG")
    assert alive(answer["pid"])


def test_three_restarts_through_the_store_under_publishing_lose_and_repeat_nothing(
        daemon, manager):
    from test_upgrade import Publisher
    extra = {"NOTIFY_SOCKET": manager.name, "FDSTORE": "64"}
    d = daemon(CHAT, env=extra)
    manager.wait("READY")
    clients = [d.stream("/chat") for _ in range(3)]
    running = [d]
    pub = Publisher(d.control)
    try:
        for _ in range(3):
            pub.wait_acked(20)
            current = running[-1]
            current.proc.send_signal(signal.SIGTERM)
            manager.wait("FDNAME", "ssed-state")
            assert current.proc.wait(TIMEOUT) == 0
            running.append(Restarted(d, stored(manager), extra))
            while manager.store:
                manager.wait("FDSTOREREMOVE")
            pub.wait_acked(len(pub.acked) + 20)
        pub.stop()
        # Read before the last process is killed: an answered publish may still be on its
        # way out of it (the answer can leave in the turn before the event's writes).
        want = [i for i, _ in pub.acked]
        for c in clients:
            assert [e.id for e in c.wait_events(len(want))] == want
    finally:
        pub.stop()
        for r in running[1:]:
            reap(r.proc)


def test_a_socket_activated_daemon_upgrades_and_keeps_systemds_sockets(tmp_path, successors):  # noqa: F811
    """Socket activation (systemd owns the listener and the control socket): the new process
    serves on the same passed sockets, still binds nothing of `listen`, and leaves the
    systemd-owned control socket's path alone, as the old one would."""
    from ports import free_port
    from test_systemd import Activated, listening_tcp_ports
    import shutil
    import tempfile
    from conftest import ControlClient
    port, configured = free_port(), free_port()
    short = tempfile.mkdtemp(prefix="ssed-u")
    ctl_path = os.path.join(short, "ctl.sock")
    d = Activated(tmp_path, CHAT, [f"127.0.0.1:{port}", ctl_path], names=["http", "control"],
                  listen=f"127.0.0.1:{configured}")
    try:
        d.port = port
        s = d.stream("/chat")
        d.wait_log(r"ready: 1 services")
        with ControlClient(ctl_path) as c:
            answer = c.request({"cmd": "upgrade"})
        assert answer["ok"], answer
        successors.append(answer["pid"])
        assert listening_tcp_ports(answer["pid"]) == {port}
        with ControlClient(ctl_path) as c:
            assert c.request({"cmd": "publish", "service": "/chat", "data": "via new"})["ok"]
        assert s.wait_events(1)[0].data == "via new"
        assert os.path.exists(ctl_path)
    finally:
        reap(d.proc)
        shutil.rmtree(short, ignore_errors=True)
