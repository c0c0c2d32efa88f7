"""The outbox: what each stream was given to send and its socket has not taken yet.

This module alone reads and writes a stream's pending bytes (`Client.pending`), how many
bytes wait (`Client.queued`), what it sent (`Client.sent`), and when its queue last moved,
and alone decides that a stream is too slow (more than `send_buffer` bytes waiting) or
stalled (no progress for `send_timeout`). It knows no socket: a client's `send` is its
socket's `send`, and `want_write()` on its `conn` asks the loop to watch for writability.

The hot path: one event to many clients. The same bytes go to every client; a client's
queue exists only while a write was partial.
"""
import errno
from collections import deque

from .reasons import ERROR, RESET, SLOW, STALLED

SLICE = 256         # clients a fan-out reaches per loop turn (~1-3 ms of sends)


class Job:
    """A fan-out in progress: the bytes (broadcasts that queue up behind a busy fan-out and
    share its membership `key` join it while it has not started), the clients, and how
    far it got."""
    __slots__ = ("parts", "clients", "start", "key")

    def __init__(self, wire, clients, key):
        self.parts = [wire]
        self.clients = list(clients)
        self.start = 0
        self.key = key


class Outbox:
    """Every stream's queue, the fan-outs in progress, and the streams doomed meanwhile."""

    def __init__(self, stats, limit):
        self.stats = stats          # the hub's counters: bytes_sent
        self.limit = limit          # send_buffer
        self.jobs = deque()
        self.writing = {}           # client -> when its queue last made progress
        self.doomed = []            # (client, reason): to close once this fan-out is done

    @property
    def busy(self):
        """Whether anything is still to be sent."""
        return bool(self.jobs or self.writing)

    def fan_out(self, wire, clients, key, now):
        """The same bytes to every client. A big fan-out goes out in slices of SLICE clients
        per loop turn, so the loop keeps answering meanwhile; once one is in progress every
        later one queues behind it, so no client ever sees its events reordered.

        Broadcasts (`key`: the hub's (channel, membership count)) always wait for the end of
        the turn, and those that queue up while the loop is busy join the last queued one if
        it has not started: under a backlog each client gets one write per turn of the
        queue, not one per event."""
        jobs = self.jobs
        if jobs:
            tail = jobs[-1]
            if key is not None and tail.key == key and tail.start == 0:
                tail.parts.append(wire)
                return
        elif key is None and len(clients) <= SLICE:
            return self.send(wire, clients, now)
        jobs.append(Job(wire, clients, key))

    def drain(self, now):
        """One turn's share of the queued fan-outs."""
        budget = SLICE
        jobs = self.jobs
        while jobs and budget > 0:
            job = jobs[0]
            clients, start = job.clients, job.start
            if start == 0 and len(job.parts) > 1:
                job.parts = [b"".join(job.parts)]
            end = min(start + budget, len(clients))
            self.send(job.parts[0], clients[start:end] if start or end < len(clients)
                      else clients, now)
            budget -= end - start
            if end == len(clients):
                jobs.popleft()
            else:
                job.start = end

    def send(self, wire, clients, now):
        """Send now, queue what a socket did not take, doom the slow and the failed."""
        size = len(wire)
        limit = self.limit
        sent = 0
        for c in clients:
            if c.pending is None:
                try:
                    n = c.send(wire)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    self.doomed.append((c, failed(exc)))
                    continue
                sent += n
                c.sent += n
                if n < size:
                    c.pending = [wire[n:] if n else wire]
                    c.queued = size - n
                    self.writing[c] = now
                    c.conn.want_write()
                    if c.queued > limit:
                        self.doomed.append((c, SLOW))
            else:
                c.pending.append(wire)
                c.queued += size
                if c.queued > limit:
                    self.doomed.append((c, SLOW))
        self.stats["bytes_sent"] += sent

    def flush(self, client, now):
        """Send what `client` has queued, as far as its socket takes; True once nothing
        waits. A socket error propagates: the caller closes the stream for it."""
        pending = client.pending
        if not pending:
            return True
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            n = client.send(data)
        except BlockingIOError:
            n = 0
        client.sent += n
        self.stats["bytes_sent"] += n
        if n == len(data):
            client.pending = None
            client.queued = 0
            del self.writing[client]
            return True
        client.pending = [data[n:]]
        client.queued = len(data) - n
        if n:
            self.writing[client] = now
        return False

    def forget(self, client):
        """A closed stream: its queue goes with it."""
        self.writing.pop(client, None)
        client.pending = None

    def stalled(self, now, timeout):
        """Doom the streams whose queue made no progress for `timeout` seconds."""
        self.doomed.extend((c, STALLED) for c, since in self.writing.items()
                           if now - since > timeout)


def failed(exc):
    """The close reason for a stream's socket error. ETIMEDOUT is the kernel saying what
    `send_timeout` says (TCP_USER_TIMEOUT is set to it; keepalive gave up): no progress."""
    if exc.errno == errno.ETIMEDOUT:
        return STALLED
    # A peer that closed with bytes unread (RST) or went away mid-write: it left, not a drop.
    return RESET if exc.errno in (errno.ECONNRESET, errno.EPIPE) else ERROR
