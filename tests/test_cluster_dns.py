"""A node follows its Redis host name (SPEC 12): while Redis is down it looks the name up again,
in a child process (ssed/lookup.py), and connects to what it resolves to now.

The daemon runs in a mount namespace of its own with private files bind-mounted over
/etc/hosts (and /etc/nsswitch.conf, /etc/resolv.conf): the test repoints the name by rewriting
its hosts file in place (same inode), without touching the machine's. Redis A listens on
127.0.0.1:P, Redis B on 127.0.0.2:P (all of 127/8 is loopback on Linux; a name maps to an
address, the port is the URL's). A lookup is made to hang with a DNS server that never answers:
a UDP socket of the test's own that the private resolv.conf names.
"""
import os
import random
import shlex
import socket
import subprocess
import time

import pytest

from clusterkit import cluster_info, node, subscribe, survived, wait_for, wait_up
from redisserver import RedisServer
from test_upgrade import successors, upgrade  # noqa: F401 (a fixture)
from ssed import lookup, values
from ssed.orders import Spawn
from ssed.redisconn import resolve

NAME = "redis.ssed.test"
FILES_ONLY = "hosts: files\n"
SYSTEM = {"hosts": "/etc/hosts", "nsswitch": "/etc/nsswitch.conf", "resolv": "/etc/resolv.conf"}


@pytest.fixture(autouse=True)
def no_node_died():
    yield from survived()


def unshare():
    """The command prefix that gives a process a mount namespace of its own, or a skip saying
    why this machine cannot (not root and no user namespaces, no `unshare`, a sandbox that
    forbids mounts). Never a failure under CI: whether a CI machine allows it is not ours to
    know, and the unit tests below hold the lookup's contract without it."""
    prefix = ["unshare", "--mount"] if os.geteuid() == 0 else \
        ["unshare", "--map-root-user", "--mount"]
    probe = f"/tmp/ssed-probe-hosts-{os.getpid()}"
    with open(probe, "w") as f:
        f.write("127.0.0.9 probe.ssed.test\n")
    try:
        done = subprocess.run([*prefix, "sh", "-c", f"mount --bind {probe} /etc/hosts && "
                               "getent ahosts probe.ssed.test"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run unshare: {exc}")
    finally:
        os.unlink(probe)
    if "127.0.0.9" not in done.stdout:
        pytest.skip("cannot bind-mount a private /etc/hosts in a mount namespace "
                    f"({' '.join(prefix)}: {done.stderr.strip() or done.returncode})")
    return prefix


def private(tmp_path, **files):
    """Write each file (hosts=..., nsswitch=..., resolv=...) under tmp_path; the `wrap` that
    runs the daemon with them over /etc/hosts, /etc/nsswitch.conf, /etc/resolv.conf."""
    mounts = []
    for name, text in files.items():
        path = tmp_path / f"private-{name}"
        path.write_text(text)
        mounts.append(f"mount --bind {shlex.quote(str(path))} {SYSTEM[name]}")
    return [*unshare(), "sh", "-c", " && ".join(mounts) + ' && exec "$@"', "sh"]


def repoint(tmp_path, text):
    """Rewrite the private hosts file in place: the bind mount follows the inode."""
    with open(tmp_path / "private-hosts", "r+") as f:
        f.truncate(0)
        f.write(text)


def two_redis(make_redis):
    a = make_redis()
    b = RedisServer(host="127.0.0.2", port=a.port)
    try:
        b.start()
    except RuntimeError as exc:
        b.close()
        pytest.skip(f"a redis-server cannot bind 127.0.0.2: {exc}")
    return a, b


def named(a):
    return f"redis://{NAME}:{a.port}/0"


def lines(d, text):
    return [line for line in d.log if text in line]


def test_a_node_follows_its_redis_host_name_to_another_address(daemon, make_redis, tmp_path):
    a, b = two_redis(make_redis)
    try:
        wrap = private(tmp_path, hosts=f"127.0.0.1 {NAME}\n", nsswitch=FILES_ONLY)
        d = node(daemon, named(a), "n0", wrap=wrap)
        assert cluster_info(d)["redis"] == f"127.0.0.1:{a.port}"
        s = subscribe(d, "/chat")
        repoint(tmp_path, f"127.0.0.2 {NAME}\n")
        a.stop()
        d.wait_log(f"cluster: {NAME} now resolves to 127.0.0.2:{a.port} \\(was 127.0.0.1\\)")
        info = wait_up(d)
        assert info["redis"] == f"127.0.0.2:{a.port}"
        answer = d.publish("/chat", "on B")
        assert [(e.id, e.data) for e in s.wait_events(1)] == [(answer["id"], "on B")]
        assert [entry[0].decode() for entry in b.call("XRANGE", "{ssed}:events", "-", "+")] \
            == [answer["id"]]
        assert len(lines(d, "now resolves to")) == 1
    finally:
        b.close()


def test_a_failed_lookup_keeps_the_old_address_and_the_node_reconnects_there(
        daemon, make_redis, tmp_path):
    a = make_redis()
    wrap = private(tmp_path, hosts=f"127.0.0.1 {NAME}\n", nsswitch=FILES_ONLY)
    d = node(daemon, named(a), "n0", wrap=wrap)
    repoint(tmp_path, "")       # the name is gone: every lookup fails
    a.stop()
    d.wait_log(f"cluster: looking up {NAME} failing: Name or service not known; keeps "
               f"connecting to 127.0.0.1:{a.port}")
    # Lookups go on (one a second at most): several attempts, still one line.
    wait_for("a few reconnects", lambda: metric(d, "ssed_cluster_reconnects_total") >= 4)
    a.start()
    info = wait_up(d)
    assert info["redis"] == f"127.0.0.1:{a.port}"
    assert d.publish("/chat", "back on A")["delivered"] == 0
    assert len(lines(d, f"looking up {NAME}")) == 1
    assert not lines(d, "now resolves to")


def test_a_hanging_lookup_never_blocks_the_loop_and_is_killed_at_its_deadline(
        daemon, make_redis, tmp_path):
    a = make_redis()
    dns = silent_dns()
    try:
        wrap = private(tmp_path, hosts=f"127.0.0.1 {NAME}\n", nsswitch="hosts: files dns\n",
                       resolv=f"nameserver {dns.getsockname()[0]}\n"
                              "options timeout:30 attempts:1\n")
        d = node(daemon, named(a), "n0", wrap=wrap)     # (timeout = 1: the lookup's deadline)
        s = subscribe(d, "/chat")
        repoint(tmp_path, "")   # not in the hosts file: asked of the DNS server, which is mute
        a.stop()
        dns.settimeout(10)
        query, _ = dns.recvfrom(512)            # a lookup is in flight, and hangs
        assert NAME.split(".")[0].encode() in query
        asked = time.monotonic()
        seen = len(s.body)
        slowest = 0.0
        while time.monotonic() - asked < 0.8:   # (the lookup is killed at 1 s)
            start = time.monotonic()
            assert d.ctl({"cmd": "stats"})["ok"]
            slowest = max(slowest, time.monotonic() - start)
        assert slowest < 0.5, slowest
        while b": keepalive" not in s.body[seen:]:  # keepalive = 1: one within ~1 s
            assert s.read_some(2.0), "stream closed"
        d.wait_log(f"cluster: looking up {NAME} failing: killed after 1 s")
        a.start()
        assert wait_up(d)["redis"] == f"127.0.0.1:{a.port}"
    finally:
        dns.close()


def silent_dns():
    """A UDP socket on port 53 of a loopback address that reads queries and answers none."""
    for _ in range(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((f"127.0.{random.randrange(53, 250)}.{random.randrange(2, 250)}", 53))
            return sock
        except OSError:
            sock.close()
    pytest.skip("no loopback address with port 53 free for a mute DNS server")


def metric(d, name):
    _, _, body = d.request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") \
        .partition(b"\r\n\r\n")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in {body!r}")


# -- the lookup alone ------------------------------------------------------------------------

def address(url):
    return values.redis_url(url)


def make(url, log=None, moved=None, timeout=1.0):
    log = [] if log is None else log
    return lookup.Lookup(address(url), timeout, lambda level, text: log.append((level, text)),
                         ([] if moved is None else moved).append, lambda: 100.0)


@pytest.mark.parametrize("url", ["redis://10.0.0.5:6379", "redis://[::1]:6379/1",
                                 "unix:///run/redis.sock"])
def test_a_numeric_address_or_a_socket_is_never_looked_up_again(url):
    one = make(url)
    assert not lookup.needed(address(url))
    assert [one.again(now, resolve(address(url))) for now in (0.0, 5.0, 60.0)] == [None] * 3


def test_a_name_is_looked_up_one_at_a_time_and_at_most_once_a_second():
    one = make("redis://redis.internal:6379")
    old = (socket.AF_INET, ("10.0.0.5", 6379))
    first = one.again(0.0, old)
    assert type(first) is Spawn and first.timeout == 1.0
    assert "redis.internal 6379" in first.command
    assert one.again(0.5, old) is None          # one in flight
    first.done(b"2 10.0.0.5 6379\n", None)
    assert one.again(0.9, old) is None          # under a second since the last began
    assert type(one.again(1.0, old)) is Spawn


def test_a_changed_address_is_logged_once_and_a_failed_lookup_keeps_the_old_one():
    log, moved = [], []
    one = make("redis://redis.internal:6379", log, moved, timeout=0.2)
    old = (socket.AF_INET, ("10.0.0.5", 6379))
    spawn = one.again(0.0, old)
    assert spawn.timeout == lookup.MIN_DEADLINE     # not below a Python start
    spawn.done(b"", "killed after 1 s")
    one.again(1.0, old).done(b"error Temporary failure in name resolution\n", None)
    assert moved == []
    assert log == [("warning", "cluster: looking up redis.internal failing: killed after 1 s; "
                    "keeps connecting to 10.0.0.5:6379 (logged once until it recovers)")]
    one.again(2.0, old).done(b"2 10.0.0.5 6379\n", None)       # the same: nothing to say
    assert moved == [] and len(log) == 1
    one.again(3.0, old).done(b"10 fd00::7 6379 0 0\n", None)
    assert moved == [(socket.AF_INET6, ("fd00::7", 6379, 0, 0))]
    assert log[-1] == ("warning", "cluster: redis.internal now resolves to [fd00::7]:6379 "
                       "(was 10.0.0.5)")
    one.over(4.0)
    assert "recovered after 2 failures" in log[-1][1]


@pytest.mark.parametrize("output, parsed", [
    (b"2 10.0.0.7 6379\n", (socket.AF_INET, ("10.0.0.7", 6379))),
    (b"10 fd00::7 6379 0 3\n", (socket.AF_INET6, ("fd00::7", 6379, 0, 3))),
    (b"error Name or service not known\n", "Name or service not known"),
    (b"error\n", "unknown error"),
    (b"", "unexpected answer b''"),
    (b"2 10.0.0.7\n", "unexpected answer b'2 10.0.0.7\\n'"),
    (b"x 10.0.0.7 6379\n", "unexpected answer b'x 10.0.0.7 6379\\n'"),
])
def test_the_lookup_output_parsed(output, parsed):
    assert lookup.parse(output) == parsed


def test_the_lookup_program_resolves_as_the_start_does():
    for url in ("redis://localhost:6380", "redis://no-such-host.invalid:6379"):
        where = address(url)
        output = subprocess.run(["/bin/sh", "-c", lookup.command(where.host, where.port)],
                                capture_output=True, timeout=10).stdout
        try:
            assert lookup.parse(output) == resolve(where)
        except OSError as exc:
            assert lookup.parse(output) == exc.strerror


def test_an_upgrade_while_the_name_does_not_resolve_keeps_the_address(
        daemon, make_redis, tmp_path, successors):  # noqa: F811
    """The new process resolves Redis's name at its start; with DNS down it connects where
    the old one did (handed over in the record) instead of failing the upgrade."""
    a = make_redis()
    wrap = private(tmp_path, hosts=f"127.0.0.1 {NAME}\n", nsswitch=FILES_ONLY)
    d = node(daemon, named(a), "n0", wrap=wrap)
    s = subscribe(d, "/chat")
    repoint(tmp_path, "")       # the name is gone
    answer = upgrade(d, successors)
    assert answer["ok"] and answer["streams"] == 1, answer
    d.wait_log(f"cannot resolve {NAME}: .*; connecting to 127.0.0.1:{a.port}, where the "
               "previous process did")
    assert wait_up(d)["redis"] == f"127.0.0.1:{a.port}"
    sent = d.publish("/chat", "after the upgrade")
    assert [(e.id, e.data) for e in s.wait_events(1)] == [(sent["id"], "after the upgrade")]


def test_the_handed_over_address_is_used_only_for_the_same_redis_and_when_well_formed():
    from ssed.cli import _handed_target
    settings = type("S", (), {"redis": values.redis_url("redis://redis.ssed.test:6400/0")})
    good = {"address": "redis://redis.ssed.test:6400/0", "family": int(socket.AF_INET),
            "sockaddr": ["10.0.0.5", 6400]}
    assert _handed_target(settings, {"redis": good}) == (socket.AF_INET, ("10.0.0.5", 6400))
    unix = {"address": "redis://redis.ssed.test:6400/0", "family": int(socket.AF_UNIX),
            "sockaddr": "/run/redis.sock"}
    assert _handed_target(settings, {"redis": unix}) == (socket.AF_UNIX, "/run/redis.sock")
    for bad in (None, {}, {"redis": "10.0.0.5"},
                {"redis": {**good, "address": "redis://other:6400/0"}},
                {"redis": {**good, "family": 999}}, {"redis": {**good, "family": "x"}},
                {"redis": {**good, "sockaddr": None}}, {"redis": {"address": good["address"]}}):
        assert _handed_target(settings, bad) is None, bad
