"""A connection to Redis (SPEC 12), one more kind of descriptor in the loop: commands out,
pipelined; replies in, each to the callback its command was sent with, in order.

Nothing here blocks: the connect is non-blocking (the address was resolved at start), writes
wait for readiness, and a Redis that stops answering is noticed by the cluster from `oldest`,
the time the oldest unanswered command (or the connect) was sent. The cluster (cluster.py)
decides what to send and what a silence means; this knows only bytes.
"""
import errno
import selectors
import socket
from collections import deque

from . import resp
from .later import LOST

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
MAX_FILL = 1 << 30          # the writer's: a history read back whole (what a node holds anyway)
CHUNK = 1 << 18             # bytes read at once: an XREAD of a thousand events in few reads
MAX_REPLY = 64 << 20        # a reply larger than this is a protocol error (the link drops;
                            # the reader asks for fewer events next time)


def resolve(address):
    """(family, sockaddr) of a parsed `redis` address; at start or reload, never in a turn
    (getaddrinfo blocks). OSError if the name does not resolve."""
    if address.path is not None:
        return socket.AF_UNIX, address.path
    info = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    return info[0][0], info[0][4]


class RedisConn:
    def __init__(self, loop, target, name, cluster, max_reply=MAX_REPLY):
        self.loop = loop
        self.target = target            # (family, sockaddr)
        self.name = name                # "reader" or "writer", for the log
        self.cluster = cluster
        self.max_reply = max_reply
        self.sock = None
        self.parser = None
        self.out = []
        self.callbacks = deque()        # one per command sent and not yet answered
        self.oldest = None              # when the oldest of them (or the connect) was sent
        self.sent_at = deque()
        self.connecting = False
        self.closed = True
        self.events = 0
        self.deadline = None

    def open(self, now):
        family, sockaddr = self.target
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        if family != socket.AF_UNIX:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = resp.Parser(self.max_reply)
        self.closed, self.connecting, self.oldest = False, True, now
        err = self.sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            return self.cluster.link_down(self, f"cannot connect to Redis: {errno.errorcode.get(err, err)} "
                                          f"({self.name})")
        self._watch(WRITE)

    def send(self, command, callback, now):
        """Queue one command (bytes from resp.command); `callback(reply)` gets its reply,
        a resp.Error, or cluster.LOST if the link drops first."""
        if self.closed:
            return callback(LOST)
        self.out.append(command)
        self.callbacks.append(callback)
        self.sent_at.append(now)
        if self.oldest is None:
            self.oldest = now
        if not self.connecting and len(self.out) == 1:
            self.loop.flush_soon(self)  # (once this turn's commands are all in: one write)

    def ready(self, mask):
        if self.connecting:
            return self._connected()
        if mask & WRITE:
            self._flush()
        if mask & READ and not self.closed:
            self._read()

    def _connected(self):
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return self.cluster.link_down(self, f"cannot connect to Redis: "
                                          f"{errno.errorcode.get(err, err)} ({self.name})")
        self.connecting, self.oldest = False, self.sent_at[0] if self.sent_at else None
        self._watch(READ)
        self.cluster.link_up(self, self.loop.hub.now)
        if self.out and len(self.out) > 1:
            self.loop.flush_soon(self)

    def flush(self):
        """Write what is queued (the loop calls this at the end of a turn)."""
        if not self.closed and not self.connecting:
            self._flush()

    def _flush(self):
        if self.out:
            data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                return self.cluster.link_down(self, f"Redis connection: {exc.strerror or exc}")
            self.out = [data[n:]] if n < len(data) else []
        self._watch(READ | WRITE if self.out else READ)

    def _read(self):
        try:
            data = self.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            return self.cluster.link_down(self, f"Redis connection: {exc.strerror or exc}")
        if not data:
            return self.cluster.link_down(self, f"Redis closed the connection ({self.name})")
        parser = self.parser
        parser.feed(data)
        while not self.closed:
            try:
                reply = parser.get()
            except resp.ProtocolError as exc:
                return self.cluster.bad_reply(self, f"Redis sent what is not RESP: {exc}")
            if reply is resp.NEED:
                break
            if not self.callbacks:
                return self.cluster.link_down(self, "Redis sent a reply to no command")
            callback = self.callbacks.popleft()
            self.sent_at.popleft()
            self.oldest = self.sent_at[0] if self.sent_at else None
            callback(reply)

    def _watch(self, events):
        if events != self.events and not self.closed:
            if self.events:     # (modify: `watch` would try register first, and fail)
                self.loop.rewatch(self.sock, self, events)
            else:
                self.loop.watch(self.sock, self, events)
            self.events = events

    def expired(self):
        pass

    def close(self, reason=None):
        """Drop the connection; the callbacks of the commands it leaves unanswered. With a
        `reason` (the loop closing it after a bug), the cluster is told and drops it."""
        if self.closed:
            return []
        if reason is not None:
            self.cluster.link_down(self, f"Redis connection closed: {reason}")
            return []
        self.closed, self.connecting = True, False
        self.loop.unwatch(self.sock)
        self.sock.close()
        self.events, self.out, self.parser, self.oldest = 0, [], None, None
        dropped, self.callbacks = list(self.callbacks), deque()
        self.sent_at.clear()
        return dropped

