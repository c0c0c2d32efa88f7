"""The loop's connections, one class per kind of file descriptor: an HTTP request being
read, an open stream, a control connection, the stdin console (a command's pipes: children.py).

Each has `ready(mask)` for the selector, `close(reason)`, and `expired()` for its deadline.
They belong to `loop.py` (the only owner of descriptors) and are split out to keep it short.
"""
import errno
import os
import selectors
import socket
import struct
import sys
import traceback
from collections import deque

from . import web
from .control import LineSplitter
from .http1 import HttpError, RequestParser, error_reply, whole_request

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
LINGER = 2.0                # seconds to drain a peer after our reply before closing
CONTROL_READ = 65536        # bytes read from a control client (or stdin) at once
CONTROL_LINES = 64          # its request lines answered per loop turn (~1 ms of `stats`)
CONTROL_AHEAD = 1 << 20     # answers waiting unsent past which a client is not read or answered
MAX_UNREAD = 1 << 20        # answers a kept-alive HTTP client may leave unread


def _send(sock, chunks):
    """Send what the socket takes of `chunks` (a list, joined into one write); the rest."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    try:
        n = sock.send(data)
    except BlockingIOError:
        n = 0
    return n, ([data[n:]] if n < len(data) else [])


def failed(exc):
    """The close reason for a stream's socket error. ETIMEDOUT is the kernel saying what
    `send_timeout` says (TCP_USER_TIMEOUT is set to it; keepalive gave up): no progress."""
    if exc.errno == errno.ETIMEDOUT:
        return "stalled"
    # A peer that closed with bytes unread (RST) or went away mid-write: it left, not a drop.
    return "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE) else "error"


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
                 "deadline", "watched")

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
        self.watched = False    # in the selector yet (the loop reads at accept first)

    def watch(self, events, handler):
        if self.watched:
            self.loop.selector.modify(self.sock, events, handler)
        else:
            self.loop.selector.register(self.sock, events, handler)
            self.watched = True

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
            return self.close("eof")
        if self.replied:
            return      # draining what the peer still sends after our reply
        # Pipelined requests behind a kept-alive answer are taken in turn, in this loop.
        while data is not None and not (self.closed or self.replied):
            data = self._feed(data)

    def _feed(self, data):
        """Parse; route a whole request. The bytes after it, when the connection stays."""
        try:
            if self.parser is None:
                request = whole_request(data)
                if request is None:
                    self.parser = RequestParser(self.loop.hub.config.max_body)
                    request = self.parser.feed(data)
            else:
                request = self.parser.feed(data)
        except HttpError as exc:
            return self.reply(exc.reply(), f"http_{exc.status}")
        except Exception:
            self.loop.log("error", "bug: request parser raised\n" + traceback.format_exc())
            return self.reply(error_reply(500, "internal error"), "bug")
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
        """Carry out what routing `request` gave: a reply, or the stream taking the socket."""
        if isinstance(result, web.Reply):
            if result.keep:
                return self._answer(result.data)
            return self.reply(result.data, result.refused)
        if result.head_only:
            return self.reply(result.data, None)
        self.closed = True      # this object is done; the stream owns the socket now
        self.parser = None
        self.loop.request_done(self)
        self.loop.open_stream(self.sock, result, request.target, watched=self.watched)

    def _answer(self, data):
        """Answer and wait for the next request on the same connection (keep-alive)."""
        trailing = self.parser.trailing if self.parser is not None else b""
        self.out.append(data)
        self._flush()
        if self.closed:
            return None
        if sum(map(len, self.out)) > MAX_UNREAD:     # pipelining without reading answers
            return self.close("slow")
        self.parser = None
        self.served += 1
        self.loop.deadline(self, self.loop.hub.now + self.loop.hub.config.header_timeout)
        return trailing or None

    def reply(self, data, refused):
        """Send `data`, then close gently (after the peer has seen it)."""
        if refused:
            self.loop.hub.refused[refused] += 1
        self.loop.request_done(self)
        self.replied = True
        self.loop.lingering += 1
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
            return self.close("error")
        if self.out:
            self.watch(READ | WRITE, self)
            return
        self.watch(READ, self)
        if self.replied:
            # Half-close and drain, so the peer reads our reply instead of a reset.
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close("error")

    def expired(self):
        if self.replied:
            self.close("done")
        elif self.served and not (self.parser is not None and self.parser.buffer):
            self.close("idle")      # a kept-alive connection nobody used again: no 408
        else:
            self.reply(error_reply(408, "request head not complete in time"), "header_timeout")

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.parser = None
        self.out = []
        if self.replied:
            self.loop.lingering -= 1
        self.loop.request_done(self)
        if self.watched:
            self.loop.selector.unregister(self.sock)
        self.sock.close()


class StreamConn:
    """An open stream; its client record holds what is queued for it."""
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
        self.loop.selector.modify(self.sock, READ | WRITE, self)

    def ready(self, mask):
        if mask & WRITE:
            self._flush()
        if mask & READ and not self.closed and _recv(self, 4096) == b"":
            self.close("eof")

    def _flush(self):
        client = self.client
        if not client.pending:
            return
        before = client.queued
        try:
            n, client.pending = _send(self.sock, client.pending)
        except OSError as exc:
            return self.close(failed(exc))
        client.sent += n
        client.queued = before - n
        self.loop.hub.stats["bytes_sent"] += n
        if not client.pending:
            client.pending = None
            client.queued = 0
            del self.loop.writing[client]
            self.loop.selector.modify(self.sock, READ, self)
        elif n:
            self.loop.writing[client] = self.loop.hub.now

    def expired(self):
        pass

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.loop.writing.pop(self.client, None)
        try:
            self.loop.selector.unregister(self.sock)
        except KeyError:
            pass        # closed by a bug before it was watched (Loop.open_stream)
        self.sock.close()
        if self.loop.debug:
            self.loop.log("debug", f"stream {self.client.id} closed: {reason}")
        self.loop.hub.detach(self.client, reason)


def peer_credentials(sock):
    """(pid, uid, gid) of a UNIX socket's peer, where the system tells."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)
    except (OSError, AttributeError):
        return None


class ControlConn:
    """A control socket connection: request lines in, one answer line each out.

    A client may pipeline. Its lines wait here and at most CONTROL_LINES of them are
    answered per loop turn (the loop does not sleep while any wait), so a flood on one
    connection costs the others one batch, not the flood. It is read only when no line
    waits, and while over CONTROL_AHEAD bytes of answers wait unsent it is neither read nor
    answered (backpressure): a client that never reads holds a bounded buffer and no CPU.
    """

    def __init__(self, loop, sock):
        self.loop = loop
        self.sock = sock
        self.splitter = LineSplitter()
        self.lines = deque()    # request lines read, not yet answered
        self.out = []
        self.queued = 0
        self.events = 0         # what the selector watches it for (0: not registered)
        self.eof = False
        self.closed = False
        self.held_back = False  # logged that its answers wait unread (once per connection)
        self.deadline = None
        cred = peer_credentials(sock)
        self.peer = f"pid={cred[0]} uid={cred[1]} gid={cred[2]}" if cred else "peer unknown"
        self._watch(READ)

    def ready(self, mask):
        if mask & WRITE:
            self._flush()
        if mask & READ and not self.closed:
            data = _recv(self, CONTROL_READ)
            if data is None:
                return
            if data:
                self.lines.extend(self.splitter.feed(data))
            else:
                self.eof = True
            self._next()

    def work(self):
        """Answer a batch of the waiting lines (the loop's turn calls this)."""
        lines = self.lines
        for _ in range(min(CONTROL_LINES, len(lines))):
            if self.queued > CONTROL_AHEAD or self.closed:
                break
            self._answer(lines.popleft())
        self._flush()

    def _answer(self, line):
        answer, request = self.loop.control_line(line)
        cmd = request.get("cmd") if request is not None else None
        if cmd in CHANGES_STATE:
            # Publishes can come thousands a second: at debug only. Other changes always.
            if cmd != "publish":
                self.loop.log("info", f"control ({self.peer}): {_describe(request)}")
            elif self.loop.debug:
                self.loop.log("debug", f"control ({self.peer}): {_describe(request)}")
        self.out.append(answer)
        self.queued += len(answer)

    def _flush(self):
        if self.closed:
            return
        if self.out:
            try:
                n, self.out = _send(self.sock, self.out)
            except OSError:
                return self.close("error")
            self.queued = sum(map(len, self.out))
        self._next()

    def _next(self):
        """Say what comes next: answering (the loop's backlog), reading, writing, closing."""
        ahead = self.queued > CONTROL_AHEAD
        if self.lines and not ahead:
            self.loop.backlog.add(self)
        else:
            self.loop.backlog.discard(self)
            if self.eof and not self.lines and not self.out:
                return self.close("eof")
        if ahead and not self.held_back:
            self.held_back = True
            self.loop.log("info", f"control ({self.peer}): {self.queued} bytes of answers "
                          "wait unread; its next requests are read as it reads them (logged "
                          "once per connection)")
        reading = not (self.eof or self.lines or ahead)
        self._watch((READ if reading else 0) | (WRITE if self.out else 0))

    def _watch(self, events):
        if events == self.events:
            return
        selector = self.loop.selector
        if not events:
            selector.unregister(self.sock)
        elif not self.events:
            selector.register(self.sock, events, self)
        else:
            selector.modify(self.sock, events, self)
        self.events = events

    def expired(self):
        pass

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.loop.backlog.discard(self)
        self.lines.clear()
        if self.events:
            self.loop.selector.unregister(self.sock)
        self.sock.close()


def _describe(request):
    """A state-changing command for the log, without its data."""
    shown = {k: v for k, v in request.items() if k not in ("data",)}
    if "data" in request and isinstance(request["data"], str):
        shown["bytes"] = len(request["data"].encode("utf-8", "replace"))
    return " ".join(f"{k}={v}" for k, v in shown.items())


CHANGES_STATE = ("publish", "kick", "ban", "unban", "reload", "admin")


class Console:
    """`--console`: control commands typed on stdin, answers on stdout; like a control
    connection, CONTROL_LINES a turn, stdin read only when no line waits."""

    def __init__(self, loop, stream):
        self.loop = loop
        self.fd = stream.fileno()
        self.splitter = LineSplitter()
        self.lines = deque()
        self.closed = False
        self.deadline = None
        loop.selector.register(self.fd, READ, self)    # before going non-blocking: may fail
        os.set_blocking(self.fd, False)

    def ready(self, mask):
        try:
            data = os.read(self.fd, CONTROL_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close("eof")
            self.loop.log("info", "console: end of input")
            return
        self.lines.extend(self.splitter.feed(data))
        if self.lines:
            self.loop.selector.unregister(self.fd)
            self.loop.backlog.add(self)

    def work(self):
        for _ in range(min(CONTROL_LINES, len(self.lines))):
            answer, _ = self.loop.control_line(self.lines.popleft())
            try:
                sys.stdout.write(answer.decode())
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
        if not self.lines and not self.closed:
            self.loop.backlog.discard(self)
            self.loop.selector.register(self.fd, READ, self)

    def expired(self):
        pass

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.loop.backlog.discard(self)
        if self.fd in self.loop.selector.get_map():
            self.loop.selector.unregister(self.fd)

