"""The loop's HTTP connections: a request being read (and our reply to it), and an open
stream. (Control connections and the console: controlconns.py; a command's pipes:
children.py.)

Each has `ready(mask)` for the selector, `close(reason)`, and `expired()` for its deadline.
They belong to `loop.py` (the only owner of descriptors) and ask it for what they need
through its public methods (`watch`, `deadline`, `route`, `open_stream`, `outbox`,
`acceptor`).
"""
import selectors
import socket
import traceback

from . import reasons, web
from .http1 import HttpError, RequestParser, whole_request
from .responses import error_reply
from .later import Later
from .outbox import failed

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
LINGER = 2.0                # seconds to drain a peer after our reply before closing
MAX_UNREAD = 1 << 20        # answers a kept-alive HTTP client may leave unread


def _send(sock, chunks):
    """Send what the socket takes of `chunks` (a list, joined into one write); the rest."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    try:
        n = sock.send(data)
    except BlockingIOError:
        n = 0
    return n, ([data[n:]] if n < len(data) else [])


def _recv(conn, size):
    """What the peer sent (b"" at EOF), or None: nothing yet, or an error that closed it."""
    try:
        return conn.sock.recv(size)
    except BlockingIOError:
        return None
    except OSError as exc:
        conn.close(failed(exc))
        return None


class HttpConn:
    """A connection whose request head (and body) is still arriving, or our reply to it."""
    __slots__ = ("loop", "sock", "address", "parser", "out", "replied", "served", "closed",
                 "deadline", "waiting")

    def __init__(self, loop, sock, address):
        self.loop = loop
        self.sock = sock
        self.address = address
        self.parser = None      # made only when a request does not come whole in one read
        self.out = []
        self.replied = False
        self.served = 0         # requests answered on this connection (keep-alive)
        self.closed = False
        self.deadline = None
        self.waiting = False    # for the answer to a publish Redis has yet to take

    def watch(self, events):
        self.loop.watch(self.sock, self, events)

    def ready(self, mask):
        if mask & WRITE:
            self._flush()
        if mask & READ and not self.closed:
            self._read()

    def _read(self):
        data = _recv(self, 65536)
        if data is not None:
            self.take(data)

    def take(self, data):
        """Bytes the peer sent (b"" at EOF): parse them and answer what they complete."""
        if not data:
            return self.close(reasons.EOF_)
        if self.replied:
            return      # draining what the peer still sends after our reply
        # Pipelined requests behind a kept-alive answer are taken in turn, in this loop.
        while data is not None and not (self.closed or self.replied):
            data = self._feed(data)

    def _feed(self, data):
        """Parse; route a whole request. The bytes after it, when the connection stays."""
        try:
            if self.parser is None:
                hub = self.loop.hub
                request = whole_request(data, hub.max_head)
                if request is None:
                    self.parser = RequestParser(hub.config.max_body, hub.max_head)
                    request = self.parser.feed(data)
            else:
                request = self.parser.feed(data)
        except HttpError as exc:
            # An error found after the head was read carries the CORS of its service.
            request = self.parser.request if self.parser is not None else None
            return self.reply(web.http_error(self.loop.hub, exc, request),
                              reasons.http(exc.status))
        except Exception:
            self.loop.log("error", "bug: request parser raised\n" + traceback.format_exc())
            return self.reply(error_reply(500, "internal error"), reasons.BUG)
        if request is None:
            if self.parser.continue_needed:
                self.parser.continue_needed = False
                self.out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._flush()
            return None
        return self._route(request)

    def _route(self, request):
        return self.respond(self.loop.route(request, self.address), request)

    def respond(self, result, request):
        """Carry out what routing `request` gave: a reply, the stream taking the socket, or
        (a publish in a cluster) a Later of the reply; meanwhile the connection is not read,
        so that a pipelined request is answered after it."""
        if type(result) is Later:
            self.waiting = True
            self.loop.unwatch(self.sock)
            result.then(lambda done: self._settled(done, request))
            return None
        if isinstance(result, web.Reply):
            if result.keep:
                return self._answer(result.data)
            return self.reply(result.data, result.refused)
        if result.head_only:
            return self.reply(result.data, None)
        self.closed = True      # this object is done; the stream owns the socket now
        self.parser = None
        self.loop.acceptor.done(self)
        self.loop.open_stream(self.sock, result, request.target)

    def _settled(self, result, request):
        self.waiting = False
        if self.closed:
            return
        try:
            rest = self.respond(result, request)
            if not (self.closed or self.replied) and self not in self.loop.acceptor.pending:
                self.loop.acceptor.waiting(self)    # (kept alive: for its next request)
            if rest:
                self.take(rest)
            elif not (self.closed or self.replied):
                self.watch(READ | WRITE if self.out else READ)
        except Exception:
            self.loop._bug(self)

    def _answer(self, data):
        """Answer and wait for the next request on the same connection (keep-alive)."""
        trailing = self.parser.trailing if self.parser is not None else b""
        self.out.append(data)
        self._flush()
        if self.closed:
            return None
        if sum(map(len, self.out)) > MAX_UNREAD:     # pipelining without reading answers
            return self.close(reasons.SLOW)
        self.parser = None
        self.served += 1
        self.loop.deadline(self, self.loop.hub.now + self.loop.hub.config.header_timeout)
        return trailing or None

    def reply(self, data, refused):
        """Send `data`, then close gently (after the peer has seen it)."""
        if refused:
            self.loop.hub.refused[refused] += 1
        self.loop.acceptor.done(self, lingering=1)
        self.replied = True
        # The deadline heap keeps this object until header_timeout: keep no buffers in it.
        self.parser = None
        self.out.append(data)
        self.loop.deadline(self, self.loop.hub.now + LINGER)
        self._flush()

    def _flush(self):
        if not self.out:
            return
        try:
            _, self.out = _send(self.sock, self.out)
        except OSError:
            return self.close(reasons.ERROR)
        if self.out:
            self.watch(READ | WRITE)
            return
        self.watch(READ)
        if self.replied:
            # Half-close and drain, so the peer reads our reply instead of a reset.
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close(reasons.ERROR)

    def expired(self):
        if self.waiting:
            return      # the cluster answers (or gives up on Redis) within its timeout
        if self.replied:
            self.close(reasons.DONE)
        elif self.served and not (self.parser is not None and self.parser.buffer):
            self.close(reasons.IDLE)      # a kept-alive connection nobody used again: no 408
        else:
            self.reply(error_reply(408, "request head not complete in time"), reasons.HEADER_TIMEOUT)

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.parser = None
        self.out = []
        self.loop.acceptor.done(self, lingering=-1 if self.replied else 0)
        self.loop.unwatch(self.sock)
        self.sock.close()


class StreamConn:
    """An open stream; what waits to be sent to it is in the loop's outbox."""
    __slots__ = ("loop", "sock", "client", "closed", "deadline")

    def __init__(self, loop, sock, client):
        self.loop = loop
        self.sock = sock
        self.client = client
        self.closed = False
        self.deadline = None
        client.conn = self
        client.send = sock.send

    def want_write(self):
        self.loop.rewatch(self.sock, self, READ | WRITE)

    def ready(self, mask):
        if mask & WRITE:
            self._flush()
        if mask & READ and not self.closed and _recv(self, 4096) == b"":
            self.close("eof")

    def _flush(self):
        try:
            done = self.loop.outbox.flush(self.client, self.loop.hub.now)
        except OSError as exc:
            return self.close(failed(exc))
        if done:
            self.loop.rewatch(self.sock, self, READ)

    def expired(self):
        pass

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.loop.outbox.forget(self.client)
        self.loop.unwatch(self.sock)    # (never watched if a bug closed it while opening)
        self.sock.close()
        if self.loop.debug:
            self.loop.log("debug", f"stream {self.client.id} closed: {reason}")
        self.loop.hub.detach(self.client, reason)
