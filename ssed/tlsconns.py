"""Native TLS (SPEC 14), the connections' side: the handshake of a connection on an HTTPS
listener, run inside the loop, and `TlsSocket`, what the connection is once it is done.

`start(loop, context, sock, address, deadline)` takes a socket just accepted (and let in by
accept.py), nothing of it read yet. It is the one hook: a PROXY header (SPEC 14, read
before any TLS) must be consumed from the raw socket exactly (peeked, then read to its end),
since the ClientHello's bytes cannot be given back to OpenSSL once read. The handshake and
the request head share one deadline, `header_timeout` from accept: `deadline` is passed on
to `loop.take_request`. A handshake that stalls is watched for the one readiness it waits
for, never spun on, and closed at its deadline; until its first byte it holds a descriptor
and its deadline (0.4 KiB measured), after it OpenSSL's state too (~42 KiB RSS).

`TlsSocket` makes an `SSLSocket` look like the plain sockets conns.py, outbox.py and the
loop already use, so that none of them branches per byte: the branch is the type of
`conn.sock` (and of `client.send`), chosen once per connection. Its two rules:
- `send`: OpenSSL takes a write whole or not at all (CPython does not set
  SSL_MODE_ENABLE_PARTIAL_WRITE), and a write that met SSLWantWriteError must be retried
  with the same bytes. It says "nothing taken" (BlockingIOError) and keeps those bytes in
  flight; its callers keep them too and offer them again, with more behind them, so the
  retry writes exactly the bytes in flight and reports them taken. SSLWantReadError on a
  write (OpenSSL reading a record first) is handled the same way; the stream is watched for
  reading anyway, and the outbox's `send_timeout` bounds a write that never gets on.
- `recv`: a record read only in part stays in OpenSSL, where the selector cannot see it:
  what is pending is read at once, with the rest.

`is_tls(sock)` tells a TLS connection (a live upgrade cannot hand one over, SPEC 13).
"""
import errno
import os
import selectors
import socket
import ssl
import _socket

from . import reasons
from .admission import Refusal

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
_GONE = (ssl.SSLEOFError, ssl.SSLSyscallError)
# At most this much is offered to OpenSSL in one write. A write in flight shows no progress
# until the whole of it is taken, and the outbox drops a stream whose queue shows none for
# `send_timeout`: a slow reader behind 1 MiB of backlog still moves in visible steps.
MAX_WRITE = 65536
# OpenSSL's word for a first record that is an HTTP request: someone typed http:// .
_PLAIN_HTTP = Refusal(400, "this port speaks HTTPS: use https://", reasons.TLS_HANDSHAKE)


def is_tls(sock):
    """Whether a connection's socket speaks TLS."""
    return type(sock) is TlsSocket


def start(loop, context, sock, address, deadline):
    """Begin the handshake of `sock` (non-blocking, just accepted, not read from)."""
    try:
        # OpenSSL sends TLS 1.3's session tickets in a write of their own once the handshake
        # is done; with Nagle on, our answer then waited for the client's delayed ACK of
        # them: 40 ms per connection (47 ms a connect measured, 1.4 ms without Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return sock.close()     # the peer is gone already
    Handshake(loop, TlsSocket(sock), address, context).begin(deadline)


class TlsSocket:
    """An SSLSocket with plain-socket semantics: BlockingIOError for "not now". (Until
    the handshake begins, `ssl` is the plain socket: see Handshake.)"""
    __slots__ = ("ssl", "inflight")

    def __init__(self, ssl_sock):
        self.ssl = ssl_sock
        self.inflight = None    # bytes a write left half done: retried, the same, first

    def fileno(self):
        return self.ssl.fileno()

    def send(self, data):
        """How much of `data` was sent: all of it (up to MAX_WRITE), or (bytes left in
        flight before) the length of those; BlockingIOError if none. The caller offers what
        was not taken again, starting with the bytes in flight."""
        inflight = self.inflight
        try:
            if inflight is None:
                if len(data) > MAX_WRITE:
                    data = memoryview(data)[:MAX_WRITE]
                return self.ssl.send(data)
            _raise_pending_error(self.ssl)
            n = self.ssl.send(inflight)
        except _WANT:
            if inflight is None:
                self.inflight = data
            raise BlockingIOError from None
        except _GONE:
            # A failed send() under OpenSSL, its errno dropped (see _raise_pending_error):
            # the peer reset or left (a stall shows first as the pending error, read above).
            raise ConnectionResetError(errno.ECONNRESET, "the peer went away") from None
        self.inflight = None
        return n

    def recv(self, size):
        ssl_sock = self.ssl
        _raise_pending_error(ssl_sock)
        try:
            data = ssl_sock.recv(size)
            while data and ssl_sock.pending():
                data += ssl_sock.recv(ssl_sock.pending())
        except _WANT:
            raise BlockingIOError from None
        except ssl.SSLZeroReturnError:
            return b""
        return data

    def shutdown(self, how):
        # Drops the TLS layer (no close_notify): what the peer still sends is drained raw.
        self.ssl.shutdown(how)

    def close(self):
        self.inflight = None
        self.ssl.close()


class Handshake:
    """A connection whose TLS handshake is under way; then a request (loop.take_request).
    OpenSSL's state for a connection (~40 KiB of RSS measured) is made only once the
    ClientHello's first bytes are there: a client that connects and sends nothing holds a
    descriptor, this object and its deadline."""
    __slots__ = ("loop", "sock", "address", "context", "deadline", "closed")

    def __init__(self, loop, sock, address, context):
        self.loop = loop
        self.sock = sock
        self.address = address
        self.context = context      # until the socket is wrapped; then None
        self.deadline = None
        self.closed = False

    def begin(self, deadline):
        """Count it as a request still arriving (the limits on those apply), and go."""
        self.loop.acceptor.waiting(self)
        self.loop.deadline(self, deadline)
        self.step()

    def ready(self, mask):
        self.step()

    def step(self):
        if self.context is not None and not self._wrap():
            return
        try:
            self.sock.ssl.do_handshake()
        except ssl.SSLWantReadError:
            return self.loop.watch(self.sock, self, READ)
        except ssl.SSLWantWriteError:
            return self.loop.watch(self.sock, self, WRITE)
        except OSError as exc:
            return self._failed(exc)
        self._leave()
        self.loop.take_request(self.sock, self.address, self.deadline)

    def _wrap(self):
        """Wrap the socket once the peer has sent something; whether it is wrapped."""
        raw = self.sock.ssl
        try:
            if not raw.recv(1, socket.MSG_PEEK):
                self.close(reasons.EOF_)    # connected and left (a port check): no count
                return False
        except BlockingIOError:
            self.loop.watch(self.sock, self, READ)
            return False
        except OSError:
            self.close(reasons.RESET)
            return False
        self.sock.ssl = self.context.wrap_socket(raw, server_side=True,
                                                 do_handshake_on_connect=False)
        self.context = None
        return True

    def _leave(self):
        """This object is done with the connection: it goes on as a request, or closes."""
        self.closed = True
        self.loop.acceptor.done(self)
        self.loop.unwatch(self.sock)

    def _failed(self, exc):
        """A broken handshake: plain HTTP gets a plain 400 saying so; anything else (garbage,
        no common cipher, a reset) is closed. Counted, and logged at most once a minute per
        kind of failure."""
        why = getattr(exc, "reason", None) or type(exc).__name__
        loop = self.loop
        loop.throttle(("tls", why), loop.hub.now, "info",
                      f"TLS handshake from {self.address} failed: {_words(exc)}")
        self._leave()
        if why == "HTTP_REQUEST":
            raw = _socket.socket(self.sock.ssl.family, socket.SOCK_STREAM, 0,
                                 self.sock.ssl.detach())
            return loop.acceptor.refuse(raw, _PLAIN_HTTP, self.address)
        loop.hub.refused[reasons.TLS_HANDSHAKE] += 1
        self.sock.close()

    def expired(self):
        """No handshake by `header_timeout`: closed (an answer would need one)."""
        self.loop.hub.refused[reasons.HEADER_TIMEOUT] += 1
        self.close(reasons.HEADER_TIMEOUT)

    def close(self, reason):
        if self.closed:
            return
        self._leave()
        self.sock.close()


def _raise_pending_error(sock):
    """Raise the socket's pending error, if any, as the OSError a plain socket would.
    CPython (3.11, SSL_write_ex/SSL_read_ex) turns a failed syscall under OpenSSL into
    SSLEOFError and drops its errno, so a stream the kernel gave up on (TCP_USER_TIMEOUT,
    set to `send_timeout`: ETIMEDOUT, a stall) would read as an "error" drop. Asked before a
    read and before a write's retry (the streams that wait), never on the hot first write."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def _words(exc):
    reason = getattr(exc, "reason", None)
    if reason:
        return reason.lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
