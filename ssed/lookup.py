"""Redis's host name looked up again while Redis is down (SPEC 12), so that a node follows a
name whose address changes (a container recreated, a failover that moves a DNS name).

`getaddrinfo` blocks, for seconds when DNS is down, and the daemon is one thread: the lookup
runs in a child process, started and bounded as a service's command is (an orders.Spawn the
loop carries out: its stdout a pipe the loop watches, killed at its deadline). The child
makes the very call of the start (redisconn.resolve: same arguments, first answer), so a
lookup and the start agree. It costs a Python start (~20 ms of CPU, ~90 ms on a loaded
2-core machine, against ~2 ms for `getent ahosts`), paid at most once a second and only
during an outage; in return the reason of a failure is the resolver's own ("Temporary failure
in name resolution" is DNS down, "Name or service not known" a name that went), where
`getent` only exits 2, and nothing beyond the interpreter is needed.

One lookup at a time, at most one per reconnect attempt (the cluster asks after each failed
one) and EVERY seconds apart. A numeric address and a UNIX socket are never looked up. A
lookup that fails keeps the last good address; pure but for the order it hands out.
"""
import ipaddress
import shlex
import socket
import sys

from .log import Episode
from .orders import Spawn

PROGRAM = """\
import socket, sys
try:
    info = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), type=socket.SOCK_STREAM)[0]
except OSError as exc:
    print("error", exc.strerror or exc)
else:
    print(int(info[0]), *info[4])
"""
EVERY = 1.0         # seconds between the starts of two lookups, at least
MIN_DEADLINE = 1.0  # a lookup's deadline is the cluster's `timeout`, but not below a Python start


def needed(address):
    """Whether a parsed `redis` address names a host (rather than an IP or a socket path)."""
    if address.path is not None:
        return False
    try:
        ipaddress.ip_address(address.host)
        return False
    except ValueError:
        return True


def command(host, port, python=None):
    """The child's command line, for `/bin/sh -c` (as every Spawn is run)."""
    return shlex.join([python or sys.executable or "python3", "-I", "-S", "-c", PROGRAM,
                       host, str(port)])


def parse(output):
    """The child's output: (family, sockaddr) as redisconn.resolve gives it, or the reason it
    failed as a str."""
    words = output.decode("utf-8", "replace").split()
    if words[:1] == ["error"]:
        return " ".join(words[1:]) or "unknown error"
    try:
        family = socket.AddressFamily(int(words[0]))
        host, port, *rest = words[1:]
        return family, (host, int(port), *map(int, rest))
    except (ValueError, IndexError):
        return f"unexpected answer {output[:200]!r}"


def shown(target, port=True):
    """An address as a line shows it: 10.0.0.7:6379, [fd00::7]:6379, or the socket's path."""
    family, sockaddr = target
    if family == socket.AF_UNIX:
        return sockaddr
    host = f"[{sockaddr[0]}]" if family == socket.AF_INET6 and port else sockaddr[0]
    return f"{host}:{sockaddr[1]}" if port else host


class Lookup:
    """The lookups of one `redis` address; `moved(target)` when it resolves elsewhere."""

    def __init__(self, address, timeout, log, moved, clock):
        self.host, self.port = address.host, address.port
        self.wanted = needed(address)
        self.deadline = max(timeout, MIN_DEADLINE)
        self.log = log
        self.moved = moved
        self.clock = clock          # the loop's time (hub.now), read when a lookup ends
        self.running = None         # the Spawn of the lookup in flight
        self.was = None             # the address it was started with
        self.next_at = 0.0
        self.trouble = Episode(log, f"cluster: looking up {self.host}")

    def again(self, now, current):
        """Redis is down, at `current` (family, sockaddr): the order of a lookup to run, or
        None (a numeric address, one in flight, or one started less than EVERY ago)."""
        if not self.wanted or self.running is not None or now < self.next_at:
            return None
        self.next_at, self.was = now + EVERY, current
        self.running = Spawn(command(self.host, self.port), self.deadline, self.done,
                             "cluster: lookup", None)
        return self.running

    def done(self, output, error):
        """The child is over (`error`: why it failed, killed at its deadline included)."""
        self.running, now = None, self.clock()
        found = parse(output) if error is None else error
        if isinstance(found, str):
            self.trouble.failed(now, f"{found}; keeps connecting to {shown(self.was)}", "warning")
        elif found != self.was:
            self.log("warning", f"cluster: {self.host} now resolves to {shown(found)} (was "
                     f"{shown(self.was, port=False)})")
            self.moved(found)

    def over(self, now):
        """The cluster's outage is over: a lookup failing again is a new episode."""
        self.trouble.recovered(now)
