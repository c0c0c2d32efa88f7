"""Accepting connections: the listeners and the control socket, bursts of accepts, the
pause when descriptors run out, the refusals made before a byte is read, and the count of
requests still arriving (in all and per address), which those refusals are made from.

Owned by the loop: it registers through `loop.watch`, and hands what it accepted to the
loop (`loop.take_request`, `ControlConn`).
"""
import errno
import functools
import socket
import _socket
import time

from . import admission, reasons, tlsconns
from .addresses import in_networks, peer_host
from .conns import HttpConn
from .controlconns import ControlConn
from .proxyconn import ProxyHeaderConn

ACCEPT_BURST = 64
EMFILE_PAUSE = 0.5
MAX_LINGERING = 1024    # refused-at-accept connections drained at once, at most
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# accept(2) errors that belong to the one connection being taken (Linux passes a pending
# network error on; a firewall can refuse it): skip it and go on.
PEER_GONE = (errno.ECONNABORTED, errno.EPROTO, errno.ENOPROTOOPT, errno.EHOSTDOWN,
             errno.ENONET, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.EPERM)


class Acceptor:
    def __init__(self, loop, listeners, control_sock):
        self.loop = loop
        self.listeners = listeners
        self.control_sock = control_sock
        self.paused_until = None        # accepting paused after EMFILE until then
        self.accept_failed = False      # logged once per episode of EMFILE
        self.pending = set()            # HTTP connections still sending their request
        self.pending_per_ip = admission.PerAddress()
        self.lingering = 0              # answered connections draining before they close
        self.tls = None                 # the SSLContext of the HTTPS listeners (SPEC 14)
        self.https = set()              # the listeners that speak HTTPS

    def use_tls(self, context, https):
        """From now on the listeners in `https` take new connections with a handshake made
        with `context` (at start, and on reload: a new pair); the others stay plain."""
        self.tls = context
        self.https = set(https) if context is not None else set()

    def start(self):
        for sock in self.listeners:
            sock.setblocking(False)
            tune_listener(sock, self.loop.hub.config.send_timeout)
        if self.control_sock is not None:
            self.control_sock.setblocking(False)
        self._resume()

    def accept(self, listener, take=None):
        """Accept a burst from `listener`, each handed to `take(sock, peer)` (default: a
        new HTTP connection), `peer` being the address, or for IPv4 just its host; on
        EMFILE and its kin, pause instead of spinning."""
        take = take or (self._new_tls if listener in self.https else self._new_http)
        family = int(listener.family)
        ipv4 = family == socket.AF_INET
        for _ in range(ACCEPT_BURST):
            try:
                # socket.accept() less its two IntEnum conversions: ~1 us of a connect.
                fd, addr = listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in PEER_GONE:
                    continue        # that connection failed before we took it; the next
                self._pause(exc) if exc.errno in OUT_OF_RESOURCES else self._drop(listener, exc)
                return
            if self.accept_failed:
                self.accept_failed = False
                self.loop.log("info", "accepting connections again")
            # The C socket type, not socket.socket: that Python subclass adds only makefile()
            # bookkeeping we never use, and is tracked by the cyclic GC, which then walks
            # every open connection on each full collection (-13 % instructions a connect).
            take(_socket.socket(family, socket.SOCK_STREAM, 0, fd), addr[0] if ipv4 else addr)

    def _new_http(self, sock, peer, deadline=None):
        """Refuse what can be refused before reading a request; else the loop takes it.
        Under `proxy_protocol` the PROXY header comes first: ProxyHeaderConn reads it, then
        calls this again with the address it names and `deadline`, the request head's, set
        at accept (given: the header is read). One method, not two: a call is ~1 % of the
        instructions of a connect (bench/connect.py)."""
        address = peer if type(peer) is str else peer_host(peer)
        loop = self.loop
        if deadline is None:
            sock.setblocking(False)
            if loop.hub.config.proxy_protocol:
                return ProxyHeaderConn(loop, sock, address, self._new_http)  # watches itself
        refused = self._refusal(address)
        if refused is not None:
            return self.refuse(sock, refused, address)
        loop.take_request(sock, address, deadline)

    def _new_tls(self, sock, peer, deadline=None):
        """An HTTPS listener's connection: refused before a byte is read as on a plain one,
        but closed without an answer (an answer would need the handshake first); else the
        handshake (tlsconns.py), then the request, under one `header_timeout` from accept.
        On a proxy_protocol listener the PROXY header is read first (ProxyHeaderConn calls
        this again): the handshake starts right after its last byte."""
        address = peer if type(peer) is str else peer_host(peer)
        loop = self.loop
        hub = loop.hub
        if deadline is None:
            sock.setblocking(False)
            if hub.config.proxy_protocol:
                return ProxyHeaderConn(loop, sock, address, self._new_tls)
            deadline = hub.now + hub.config.header_timeout
        refused = self._refusal(address)
        if refused is not None:
            hub.refused[refused.reason] += 1
            return sock.close()
        tlsconns.start(loop, self.tls, sock, address, deadline)

    def _refusal(self, address):
        config = self.loop.hub.config
        waiting = self.pending_per_ip.get(address, 0)
        # A trusted proxy's connections are many clients': they are limited per client's
        # address once its request is read (web.handle), not all as one here.
        if config.trusted_proxies and in_networks(address, config.trusted_proxies):
            waiting = 0
        return admission.refusal("connect", config, waiting, len(self.pending),
                                 self.loop.stopping is not None,
                                 self.loop.hub.banned(address))

    def waiting(self, conn):
        """`conn` waits for (the rest of) its request: it counts against the limits."""
        self.pending.add(conn)
        self.pending_per_ip.add(conn.address)

    def done(self, conn, lingering=0):
        """An HTTP connection stopped waiting for its request (answered, streaming, gone);
        `lingering` +1: it drains after our reply now, -1: it closed after one."""
        self.lingering += lingering
        if conn in self.pending:
            self.pending.discard(conn)
            self.pending_per_ip.remove(conn.address)

    def refuse(self, sock, refused, address="-"):
        """Answer before reading the request (an admission.Refusal). The answer lingers
        (half-close, drain) so the peer reads it rather than a reset for the request it was
        still sending; past MAX_LINGERING such connections (a flood) they are simply closed."""
        data = refused.reply()
        if self.lingering >= MAX_LINGERING:
            self.loop.hub.refused[refused.reason] += 1
            try:
                sock.send(data)
            except OSError:
                pass
            sock.close()
            return
        HttpConn(self.loop, sock, address).reply(data, refused.reason)

    def _pause(self, exc):
        """Out of descriptors: stop accepting (HTTP and control) for a moment instead of
        spinning on EMFILE. Another listener's event of the same turn may land here again."""
        if self.paused_until is not None:
            return
        if not self.accept_failed:
            self.accept_failed = True
            self.loop.log("error", f"accept failed ({exc.strerror}): pausing new connections "
                          "until descriptors free up")
        self.loop.hub.refused[reasons.OUT_OF_DESCRIPTORS] += 1
        for sock, _ in self._acceptors():
            self.loop.unwatch(sock)
        self.paused_until = time.time() + EMFILE_PAUSE

    def _drop(self, listener, exc):
        """An accept error that is neither "try later" nor one peer's: retrying would spin
        (a datagram socket stays readable), so stop watching the listener, say so once."""
        if self.paused_until is None:
            self.loop.unwatch(listener)
        try:
            what = f"fd {listener.fileno()} ({listener.getsockname()})"
        except OSError:
            what = f"fd {listener.fileno()}"
        if listener is self.control_sock:
            self.control_sock = None
            what = "the control socket " + what
        else:
            self.listeners = [s for s in self.listeners if s is not listener]
        self.loop.log("error", f"accept on {what} failed ({exc.strerror or exc}): no longer "
                      f"accepting on it; {len(self.listeners)} listeners left")

    def set_listeners(self, listeners, gone):
        """A reload changed `listen`: serve on `listeners` from now on, close `gone`."""
        if self.paused_until is None:
            for sock in self.listeners:
                self.loop.unwatch(sock)
        for sock in gone:
            sock.close()
        self.listeners = listeners
        for sock in listeners:
            sock.setblocking(False)
            tune_listener(sock, self.loop.hub.config.send_timeout)
            if self.paused_until is None:
                self.loop.watch(sock, functools.partial(self.accept, sock))

    def stop_listening(self):
        """Shutting down: close the listeners; the control socket goes on."""
        for sock in self.listeners:
            if self.paused_until is None:
                self.loop.unwatch(sock)
            sock.close()
        self.listeners = []
        if self.paused_until is not None:
            self._resume()        # the control socket, paused with the listeners

    def check(self, now):
        """The pause after EMFILE ends; when it will (inf if none)."""
        if self.paused_until is not None and self.paused_until <= now:
            self._resume()
        return self.paused_until if self.paused_until is not None else float("inf")

    def _resume(self):
        self.paused_until = None
        for sock, handler in self._acceptors():
            self.loop.watch(sock, handler)

    def _acceptors(self):
        pairs = [(sock, functools.partial(self.accept, sock)) for sock in self.listeners]
        if self.control_sock is not None:
            pairs.append((self.control_sock, self._accept_control))
        return pairs

    def _accept_control(self):
        self.accept(self.control_sock, self._new_control)

    def _new_control(self, sock, _addr):
        sock.setblocking(False)
        ControlConn(self.loop, sock)     # it watches itself


def tune_listener(sock, send_timeout):
    """Options accepted sockets inherit (Linux): TCP keepalive, so half-open peers go away,
    and TCP_USER_TIMEOUT, so unacknowledged data cannot hold a connection forever."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6),
                        ("TCP_USER_TIMEOUT", int(send_timeout * 1000))):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            pass
