"""Helpers for the hostile-client tests (limits, slow clients, bans, control hardening):
raw sockets from a chosen source address, response heads, and the daemon's counters.
"""
import re
import socket
import time

from conftest import TIMEOUT, StreamClient


def connect(port, source="127.0.0.1", host="127.0.0.1", rcvbuf=None, timeout=TIMEOUT):
    """A TCP connection to the daemon from `source` (any 127/8 address works on Linux);
    `rcvbuf` shrinks the receive buffer before connecting (so the window stays small)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def get(path, headers=()):
    lines = [f"GET {path} HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode()


def read_all(sock, timeout=TIMEOUT):
    """Everything until the server closes (bounded)."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not closed in {timeout} s; got {b''.join(chunks)[:300]!r}")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def request_from(port, raw, source="127.0.0.1", host="127.0.0.1"):
    """Send `raw` from `source`; (status, headers dict, body) of the whole response."""
    with connect(port, source, host) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass    # refused before reading: the answer is already waiting
        return parse_response(read_all(sock))


def status_of(port, target, source="127.0.0.1", host="127.0.0.1"):
    """The status of GET `target` from `source`, read from the head alone (a 200 stream
    stays open; we close it)."""
    with connect(port, source, host) as sock:
        sock.sendall(get(target))
        return parse_response(read_head(sock))[0]


def read_head(sock):
    """What the peer sends up to the end of a response head (or until it closes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf


def read_response(sock):
    """One response with a Content-Length or chunked body (the connection may stay open):
    (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, f"closed after {buf!r}"
        buf += data
    status, headers, body = parse_response(buf)
    if "chunked" in headers.get("transfer-encoding", ""):
        while not body.endswith(b"0\r\n\r\n"):
            body += sock.recv(65536)
    else:
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
    return status, body


def parse_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), f"not a response: {data[:200]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


class SourcedStream(StreamClient):
    """A StreamClient whose socket comes from `connect` (a source address, IPv6, rcvbuf)."""

    def __init__(self, port, target, source="127.0.0.1", host="127.0.0.1", rcvbuf=None,
                 headers=()):
        self.sock = connect(port, source, host, rcvbuf)
        self.sock.sendall(get(target, headers))
        self._begin()


def stats(d):
    ans = d.ctl({"cmd": "stats"})
    assert ans["ok"], ans
    return ans


def metrics(d):
    status, _, body = request_from(d.port, get("/metrics"))
    assert status == 200, body
    return body.decode()


def metric(text, name, reason):
    """The value of `name{reason="..."}` in a /metrics text, or None."""
    m = re.search(rf'^{name}\{{reason="{re.escape(reason)}"\}} (\S+)$', text, re.M)
    return None if m is None else float(m.group(1))


def wait_until(predicate, timeout=TIMEOUT, what="condition"):
    """Poll `predicate()` (each call is a round trip to the daemon) until true; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
