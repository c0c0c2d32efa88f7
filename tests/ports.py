"""Free TCP ports for the tests that must name a port before a process binds it (a proxy
in front of ssed, Redis, the cluster demo, reuse_port, socket activation).

A port the kernel hands out for bind(("", 0)) comes from the ephemeral range, and so does
the local port of every outgoing connection: between picking it and the process binding it,
another test's client (or the other pytest-xdist worker's bind(0)) can take it, and the
process fails with "Address already in use" (seen in CI). So ports come from below the
ephemeral range, where the kernel never picks, each xdist worker from a slice of its own,
in turn; each is checked free (bound with SO_REUSEADDR, as ssed, Redis, nginx, HAProxy and
Caddy bind) before it is given out.
"""
import itertools
import os
import socket

LOWEST = 20000


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _slice():
    """This process's ports: its xdist worker's share of [LOWEST, ephemeral range)."""
    top = max(_ephemeral_low(), LOWEST + 1000)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").lstrip("gw") or 0)
    size = (top - LOWEST) // max(workers, 1)
    start = LOWEST + (worker % max(workers, 1)) * size
    return start, size


_START, _SIZE = _slice()
# Starting where the last run is unlikely to have stopped keeps TIME_WAIT leftovers apart.
_NEXT = itertools.count(os.getpid() % _SIZE)


def free_port():
    """A TCP port of 127.0.0.1 that nothing holds now and no kernel choice will take."""
    for _ in range(_SIZE):
        port = _START + next(_NEXT) % _SIZE
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {_START}-{_START + _SIZE - 1}")
