"""A connection on a `proxy_protocol` listener until its PROXY header is read (SPEC 14).

The header is read exactly, no byte past it (peek, then take what proxyproto says is
header), so that what follows (the HTTP request, or a TLS handshake) is read from the socket
by whoever comes next, as on any other connection. Then `then(sock, address, deadline)` is
called: the client's address from the header (the peer's own for LOCAL/UNKNOWN) and the
deadline set at accept, which the request head (and any handshake) shares. A peer that sends
anything else, or nothing in `header_timeout`, is closed without a reply: it does not speak
PROXY, and an HTTP answer would only reach whoever is pretending.

Belongs to loop.py, like conns.py's connections: `ready(mask)`, `expired()`, `close(reason)`.
"""
import socket

from . import reasons
from .proxyproto import MAX_HEADER, ProxyError, parse


class ProxyHeaderConn:
    __slots__ = ("loop", "sock", "peer", "then", "got", "closed", "deadline")

    def __init__(self, loop, sock, peer, then):
        self.loop = loop
        self.sock = sock
        self.peer = peer        # the proxy's address (text)
        self.then = then
        self.got = b""          # header bytes taken from the socket so far
        self.closed = False
        self.deadline = None
        loop.watch(sock, self)
        loop.deadline(self, loop.hub.now + loop.hub.config.header_timeout)

    def ready(self, mask):
        sock = self.sock
        try:
            peeked = sock.recv(MAX_HEADER - len(self.got), socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            return self.close(reasons.ERROR)
        if not peeked:
            return self.close(reasons.EOF_)
        try:
            header = parse(self.got + peeked)
        except ProxyError as exc:
            return self.refuse(str(exc))
        # "Need more": all of it is header; else exactly the rest of the header.
        want = len(peeked) if header is None else header.size - len(self.got)
        try:
            self.got += sock.recv(want)     # peeked already: there, whole
        except OSError:
            return self.close(reasons.ERROR)
        if header is None:
            return
        self.closed = True      # done here: the socket goes on without this object
        self.loop.unwatch(sock)
        self.then(sock, header.address or self.peer, self.deadline)

    def refuse(self, why):
        hub = self.loop.hub
        hub.refused[reasons.PROXY_HEADER] += 1
        # One line a minute however many come (loop.throttle): a misconfigured proxy, or
        # a stranger reaching a listener meant for the proxy only.
        self.loop.throttle(("proxy header",), hub.now, "warning",
                           f"connection from {self.peer} closed: {why} "
                           "(proxy_protocol is on: every connection must start with one)")
        self.close(reasons.PROXY_HEADER)

    def expired(self):
        self.loop.hub.refused[reasons.HEADER_TIMEOUT] += 1
        self.close(reasons.HEADER_TIMEOUT)

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.got = b""
        self.loop.unwatch(self.sock)
        self.sock.close()
