"""What a daemon hands over (SPEC 13), taken from the running loop and hub: the freeze (what
can be written is written, without waiting), then the record (handover.py) and the sockets
it names, in order. Used by both ways of handing over: to a new process (upgrade.py) and
to systemd's fd store (fdstore.py).

The freeze is one synchronous step of the loop: nothing is read, accepted or published from
its start until the handover commits or rolls back, so the state taken here stays true, and
a rollback has nothing to undo.
"""
import os
import random
from collections import deque

from . import handover, sse, tlsconns
from .conns import HttpConn, StreamConn
from .controlconns import ControlConn


class Snapshot:
    """The record's document and blob, the sockets it names (`socks[i]` is its fd `i`),
    and what the old process does with the rest once the new one has taken over."""

    def __init__(self):
        self.document = {}
        self.blob = handover.Blob()
        self.socks = []             # objects with fileno(), in the record's fd order
        self.streams = []           # the StreamConns handed over
        self.tls = []               # TLS streams: cannot be handed over (SPEC 13, 14)
        self.requests = []          # HttpConns handed over (their request still arriving)
        self.idle = []              # kept-alive HTTP connections nobody uses: closed
        self.cut = []               # requests with a body half read: closed (see README)
        self.finishing = []         # HTTP connections writing their reply: finish here
        self.controls = []          # control connections: answered, then closed
        self.queues = {}            # the ids of a queue's parts -> its bytes' reference

    def fd(self, sock):
        self.socks.append(sock)
        return len(self.socks) - 1

    def queue(self, pending):
        """The reference of a stream's queued bytes. Streams that a fan-out left with the
        same parts (the same objects: all alive meanwhile, so their ids are theirs) share
        one copy: at 10,000 streams, one write of the bytes instead of 10,000."""
        if not pending:
            return None
        key = tuple(map(id, pending))
        ref = self.queues.get(key)
        if ref is None:
            ref = self.queues[key] = self.blob.put(b"".join(pending))
        return ref

    def data(self):
        """The record as byte strings to write in order (handover.encode_parts)."""
        return handover.encode_parts(self.document, self.blob)


def flush(loop):
    """Settle what is in progress without writing: the orders the hub left, and the
    fan-outs under way turned into each stream's queue (what the new process writes first).
    Writing them now would cost the freeze a send per stream per fan-out (at 10,000 streams
    under 100 events/s that was ~1.5 s); queuing costs an append. (A rollback asks for
    write readiness on them: `rewatch`.)"""
    loop.carry_out()
    outbox, now = loop.outbox, loop.hub.now
    while outbox.jobs:
        job = outbox.jobs.popleft()
        wire = b"".join(job.parts)
        size = len(wire)
        for c in job.clients[job.start:]:
            if c.pending is None:
                c.pending = [wire]
                c.queued = size
                outbox.writing[c] = now
            else:
                c.pending.append(wire)
                c.queued += size
    loop.carry_out()


def rewatch(loop):
    """After a rollback: every stream with bytes queued is watched for writing again."""
    for client in list(loop.outbox.writing):
        if not client.conn.closed:
            client.conn.want_write()


def answer_controls(loop, watched=None):
    """Answer every request line a control connection has sent (the others are not read
    again: they are closed after the handover). `watched`: as watched() gives."""
    controls = _conns(loop, ControlConn, watched)
    for conn in controls:
        while conn.lines and not conn.closed:
            conn.work()
            loop.carry_out()
    return controls


def take(loop, listeners, control, extra, inodes=True):
    """The snapshot of a frozen loop. `listeners`: {listen entry: socket}; `control`: the
    control socket (or None) and whether this daemon made it (it unlinks it at exit);
    `extra`: more fields for the document (the stderr fd...); `inodes`: the (device, inode)
    of every socket (for an fd store, which keeps no order; a socketpair keeps it, and then
    only the listeners' and the control socket's are taken: 10,000 fstat calls are ~10 ms
    of the freeze)."""
    shot = Snapshot()
    hub = loop.hub
    doc = shot.document
    doc.update(extra)
    _own(shot, listeners, control, loop.hub)
    doc.update(hub_state(hub))
    doc["streams"] = _streams(shot, hub)
    doc["requests"] = _requests(shot, loop)
    named = len(doc["listeners"]) + (doc["control"] is not None)
    doc["inodes"] = [_inode(s) if inodes or n < named else None
                     for n, s in enumerate(shot.socks)]
    return shot


def _own(shot, listeners, control, hub):
    """The listeners and the control socket into the record; and in a cluster, the address
    Redis's name resolved to (the next process uses it if the name does not resolve then:
    DNS down during an upgrade is no reason to roll back)."""
    doc = shot.document
    cluster = hub.cluster
    if cluster is not None and cluster.target is not None:
        family, sockaddr = cluster.target
        doc["redis"] = {"address": str(cluster.settings.redis), "family": int(family),
                        "sockaddr": sockaddr if type(sockaddr) is str else list(sockaddr)}
    doc["listeners"] = [[shot.fd(sock), list(entry), _inode(sock)]
                        for entry, sock in listeners.items()]
    sock, owned, path = control
    doc["control"] = None if sock is None else {"fd": shot.fd(sock), "owned": owned,
                                                "path": path, "inode": _inode(sock)}


def hub_state(hub):
    """The hub's part: the id clock, counters, bans, and each channel's history and times."""
    cluster = hub.cluster
    return {
        "clock": list(hub.clock.last),
        "read": list(hub.clock.read) if hub.clock.read else None,
        "cluster_last_id": list(cluster.last_id) if cluster and cluster.last_id else None,
        "started": hub.started,
        "stats": dict(hub.stats), "dropped": dict(hub.dropped), "refused": dict(hub.refused),
        "bans": [[str(net), until] for net, until in hub.bans.current(hub.now)],
        "channels": [{"path": ch.path, "template": ch.template is not None,
                      "events": [handover.event_values(e) for e in ch.history.ring],
                      "next_tick": ch.next_tick, "last_sent": ch.last_sent,
                      "published": ch.published, "delivered": ch.delivered}
                     for ch in hub.channels.values()],
    }


def _streams(shot, hub):
    expires = {c: when for when, _, c in hub.expiring.heap}
    out = []
    for c in _open_streams(shot, hub):
        shot.streams.append(c.conn)
        out.append(_static(shot, c) + _kept(shot, c, expires))
    return out


def _static(shot, c):
    """A stream's fields that never change (handover.PRE_STREAM), its socket named."""
    return [shot.fd(c.conn.sock), int(c.conn.sock.family), c.id, c.address, c.since,
            [ch.path for ch in c.channels], c.last_event_id]


def _kept(shot, c, expires):
    """A stream's fields that change as it is served (handover.KEPT)."""
    return [c.idle_since, c.sent, shot.queue(c.pending), expires.get(c)]


def _open_streams(shot, hub):
    """The open plain streams, each once (a multiplexed one is in several channels); the
    TLS ones go to `shot.tls`."""
    out = []
    seen = set()
    for channel in hub.channels.values():
        for c in channel.clients:
            if c in seen or type(c.conn) is not StreamConn or c.conn.closed:
                continue
            seen.add(c)
            if tlsconns.is_tls(c.conn.sock):
                shot.tls.append(c.conn)     # OpenSSL's session state cannot cross
                continue
            out.append(c)
    return out


class FirstPart:
    """An upgrade's first part, taken and sent over several turns while the loop serves
    (SPEC 13: the freeze is only what must be): the listeners, the control socket and
    `extra` descriptors (named in the document), then every open stream's socket with the
    fields that never change, `take(count)` streams a turn (the caller sends the sockets),
    each batch's fields pickled then (handover.stream_batch); once all went, `record()`.
    The new process makes its connections of them meanwhile, and touches none before it
    says `took`. A stream that closes after its socket went stays in: at the freeze it is
    one closed since (take_rest), as one that closes after the first part."""

    def __init__(self, loop, listeners, control, extra):
        self.shot = shot = Snapshot()
        self.document = doc = shot.document
        doc["part"] = "first"       # (a record without: all of it, from the version before)
        _own(shot, listeners, control, loop.hub)
        self.named = len(shot.socks)    # (their inodes are checked: an fd store's order)
        for name, fileobj in extra.items():
            doc[name] = shot.fd(fileobj)
        doc["stream_batches"] = []
        self.todo = deque(_open_streams(shot, loop.hub))    # (those opened later: the rest)
        self.sent = 0               # sockets sent so far

    def take(self, count):
        """Up to `count` more streams, those still open: the sockets to send now."""
        todo, shot, fields = self.todo, self.shot, []
        while todo and len(fields) < count:
            c = todo.popleft()
            if not c.conn.closed:
                fields.append(_static(shot, c))
                shot.streams.append(c.conn)
        if fields:
            self.document["stream_batches"].append(
                shot.blob.put(handover.stream_batch(fields)))
        socks, self.sent = shot.socks[self.sent:], len(shot.socks)
        return socks

    @property
    def done(self):
        return not self.todo

    def record(self):
        """The record, once every socket went."""
        shot = self.shot
        self.document["inodes"] = [_inode(s) if n < self.named else None
                                   for n, s in enumerate(shot.socks)]
        return shot.data()

    @property
    def streams(self):
        """The StreamConns of the record, in its order (take_rest goes through them)."""
        return self.shot.streams


def take_rest(loop, first, watched=None):
    """The rest of an upgrade's record, at the freeze: the hub's state; for each stream of
    `first`, in its order, its changing fields (handover.KEPT) or None (closed since); the
    streams opened since, whole; the requests still arriving."""
    shot = Snapshot()
    hub = loop.hub
    doc = shot.document
    doc.update(hub_state(hub))
    expires = {c: when for when, _, c in hub.expiring.heap}
    now_open = _open_streams(shot, hub)
    still = set(now_open)
    kept = []
    for conn in first.streams:
        c = conn.client
        if conn.closed or c not in still:
            kept.append(None)
            continue
        still.discard(c)
        shot.streams.append(conn)
        kept.append(_kept(shot, c, expires))
    doc["kept"] = kept
    doc["streams"] = []
    for c in now_open:
        if c in still:
            shot.streams.append(c.conn)
            doc["streams"].append(_static(shot, c) + _kept(shot, c, expires))
    doc["requests"] = _requests(shot, loop, watched)
    doc["inodes"] = [None] * len(shot.socks)    # (a socketpair keeps their order)
    return shot


def _requests(shot, loop, watched=None):
    """HTTP connections: one that has sent part of a request head (or nothing yet) goes
    with its bytes; an idle kept-alive one is closed (SPEC 13); one writing its reply, or
    waiting for Redis, finishes here; one half way through a body is cut."""
    out = []
    for conn in _conns(loop, HttpConn, watched):
        if conn.replied or conn.waiting:
            shot.finishing.append(conn)
        elif tlsconns.is_tls(conn.sock):
            shot.cut.append(conn)           # (a TLS request cannot cross: it comes again)
        elif conn.parser is None and conn.served:
            shot.idle.append(conn)
        elif conn.parser is not None and conn.parser.request is not None:
            shot.cut.append(conn)
        else:
            received = bytes(conn.parser.buffer) if conn.parser is not None else b""
            shot.requests.append(conn)
            out.append([shot.fd(conn.sock), conn.address, shot.blob.put(received)])
    return out


def _conns(loop, kind, among=None):
    """The open connections of `kind` the loop watches (`among`: of those, watched())."""
    return [c for c in (watched(loop) if among is None else among)
            if type(c) is kind and not c.closed]


def watched(loop):
    """What the loop watches, walked once (at 10,000 streams, a walk is a few ms of the
    freeze): for answer_controls and take_rest, which keep only the open ones."""
    return [k.data for k in list(loop.selector.get_map().values())]


def _inode(sock):
    st = os.fstat(sock.fileno())
    return [st.st_dev, st.st_ino]


def release(loop, shot):
    """The new process has taken over: let go of what it took without a byte more to any
    of it (no shutdown `retry:`, no close order, no on_disconnect: the connection lives on
    there), close the idle and cut, leave the replies being written to finish."""
    for conn in shot.streams:
        conn.closed = True
        loop.unwatch(conn.sock)
        loop.outbox.forget(conn.client)
        conn.sock.close()
    for conn in shot.requests:
        conn.closed = True
        loop.unwatch(conn.sock)
        loop.acceptor.done(conn)
        conn.sock.close()
    for conn in shot.idle + shot.cut:
        conn.close("upgrade")
    for conn in shot.tls:
        _come_back(loop, conn)
    for channel in loop.hub.channels.values():
        channel.clients = set()     # nothing this process still does reaches them


def _come_back(loop, conn):
    """A TLS stream, which the new process cannot take: a short random `retry:` after what
    it was owed (written as far as the socket takes it now), then closed; its client comes
    back with Last-Event-ID to the new process."""
    client = conn.client
    wire = b"".join(client.pending or ()) + sse.retry(random.randint(100, 1000))
    try:
        conn.sock.send(wire)
    except OSError:
        pass
    # Let go as of the streams handed over: no hook runs in a process that no longer
    # serves (what on_disconnect published here would reach no one).
    conn.closed = True
    loop.unwatch(conn.sock)
    loop.outbox.forget(client)
    conn.sock.close()
