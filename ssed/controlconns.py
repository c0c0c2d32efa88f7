"""The loop's control connections: the UNIX control socket's clients and the stdin console.
Request lines in, one answer line each out (control.py answers them).

They belong to `loop.py` (the only owner of descriptors), like conns.py's.
"""
import os
import selectors
import socket
import struct
import sys
from collections import deque

from . import reasons
from .conns import _recv, _send
from .control import LineSplitter, log_line
from .later import Later, settled

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
CONTROL_READ = 65536        # bytes read from a control client (or stdin) at once
CONTROL_LINES = 64          # its request lines answered per loop turn (~1 ms of `stats`)
CONTROL_AHEAD = 1 << 20     # answers waiting unsent past which a client is not read or answered
CONTROL_WAITING = 4096      # answers waiting for Redis (publishes in a cluster) likewise


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
        self.waiting = deque()  # answers in order, the first of them not settled yet (Laters)
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
            if self._ahead() or self.closed:
                break
            self._answer(lines.popleft())
        self._flush()

    def _answer(self, line):
        answer, request = self.loop.control_line(line)
        entry = log_line(request, self.loop.debug)
        if entry is not None:
            self.loop.log(entry[0], f"control ({self.peer}): {entry[1]}")
        if type(answer) is Later or self.waiting:
            # Answers go out in the order of the requests: behind one that waits for
            # Redis, the others wait too.
            later = answer if type(answer) is Later else settled(answer)
            self.waiting.append(later)
            later.then(self._settled)
            return
        self.out.append(answer)
        self.queued += len(answer)

    def _settled(self, _):
        """Answers that came from Redis go out in order, in one write at the end of the
        turn (the loop's backlog calls `work`), not one write each."""
        waiting = self.waiting
        while waiting and waiting[0].settled:
            answer = waiting.popleft().value
            self.out.append(answer)
            self.queued += len(answer)
        if not self.closed:
            self.loop.lines_waiting(self, True)

    def _flush(self):
        if self.closed:
            return
        if self.out:
            try:
                n, self.out = _send(self.sock, self.out)
            except OSError:
                return self.close(reasons.ERROR)
            self.queued = sum(map(len, self.out))
        self._next()

    def _next(self):
        """Say what comes next: answering (the loop's backlog), reading, writing, closing."""
        ahead = self._ahead()
        if self.lines and not ahead:
            self.loop.lines_waiting(self, True)
        else:
            self.loop.lines_waiting(self, False)
            if self.eof and not self.lines and not self.out and not self.waiting:
                return self.close(reasons.EOF_)
        if ahead and not self.held_back:
            self.held_back = True
            self.loop.log("info", f"control ({self.peer}): {self.queued} bytes of answers "
                          "wait unread; its next requests are read as it reads them (logged "
                          "once per connection)")
        reading = not (self.eof or self.lines or ahead)
        self._watch((READ if reading else 0) | (WRITE if self.out else 0))

    def _ahead(self):
        return self.queued > CONTROL_AHEAD or len(self.waiting) > CONTROL_WAITING

    def _watch(self, events):
        if events == self.events:
            return
        if events:
            self.loop.watch(self.sock, self, events)
        else:
            self.loop.unwatch(self.sock)
        self.events = events

    def expired(self):
        pass

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.loop.lines_waiting(self, False)
        self.lines.clear()
        self.loop.unwatch(self.sock)
        self.sock.close()


class Console:
    """`--console`: control commands typed on stdin, answers on stdout; like a control
    connection, CONTROL_LINES a turn, stdin read only when no line waits."""

    def __init__(self, loop, stream):
        self.loop = loop
        self.fd = stream.fileno()
        self.splitter = LineSplitter()
        self.lines = deque()
        self.waiting = deque()  # answers in order, the first of them not settled yet (Laters)
        self.closed = False
        self.deadline = None
        loop.watch(self.fd, self)    # before going non-blocking: may fail
        os.set_blocking(self.fd, False)

    def ready(self, mask):
        try:
            data = os.read(self.fd, CONTROL_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(reasons.EOF_)
            self.loop.log("info", "console: end of input")
            return
        self.lines.extend(self.splitter.feed(data))
        if self.lines:
            self.loop.unwatch(self.fd)
            self.loop.lines_waiting(self, True)

    def work(self):
        for _ in range(min(CONTROL_LINES, len(self.lines))):
            answer, _ = self.loop.control_line(self.lines.popleft())
            if type(answer) is Later or self.waiting:
                # In the order typed, as on a control connection: behind an answer that
                # waits for Redis, the others wait too.
                later = answer if type(answer) is Later else settled(answer)
                self.waiting.append(later)
                later.then(self._settled)
            else:
                _write(answer)
        if not self.lines and not self.closed:
            self.loop.lines_waiting(self, False)
            self.loop.watch(self.fd, self)

    def _settled(self, _):
        waiting = self.waiting
        while waiting and waiting[0].settled:
            _write(waiting.popleft().value)

    def expired(self):
        pass

    def close(self, reason):
        if self.closed:
            return
        self.closed = True
        self.loop.lines_waiting(self, False)
        self.loop.unwatch(self.fd)


def _write(answer):
    try:
        sys.stdout.write(answer.decode())
        sys.stdout.flush()
    except (OSError, ValueError):
        pass

