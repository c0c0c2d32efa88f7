"""Live upgrade, the new process's side (SPEC 13): take the sockets and the record the old
process (upgrade.py) or systemd's fd store (fdstore.py) hands over, and put them back into a
hub and a loop: the id clock, counters, bans and histories before the services start, the
listeners and the control socket as the loop's own, then every stream with the exact bytes
it had queued, and the requests still arriving.

Nothing is written to a socket before the old process has been told `took` (a stream has
one owner at every moment). An upgrade comes in two parts (upgrade.py): prepare() makes the
streams of the first while the old process still serves; finish() puts the rest back.
"""
import os
import socket
import time
import _socket

from . import handover
from .addresses import network_of
from .channel import Client
from .conns import HttpConn, StreamConn
from .handover import HandoverError
from .history import Event
from .outbox import failed
from .receiving import HANDOVER_WAIT, receive

READ, WRITE = 1, 2


def before_start(doc, hub):
    """The hub's state that must be in place before its services start (what they publish
    at start gets ids after the old process's last)."""
    hub.clock.advance(tuple(doc["clock"]))
    if doc.get("read"):
        hub.clock.read = tuple(doc["read"])
    if hub.cluster is not None and doc.get("cluster_last_id"):
        hub.cluster.last_id = tuple(doc["cluster_last_id"])
    hub.started = doc["started"]
    hub.stats.update(doc["stats"])
    hub.dropped.update(doc["dropped"])
    hub.refused.update(doc["refused"])
    for net, until in doc["bans"]:
        hub.bans[network_of(net)] = until


def after_start(doc, hub):
    """Each channel's history (unless its journal gave it back already), its next tick (a
    source goes on at its interval) and its counters; a template's channel is made again."""
    for saved in doc["channels"]:
        channel = hub.channels.get(saved["path"])
        if channel is None and saved["template"] and (saved["events"] or saved["path"]):
            channel = _make(hub, saved["path"])
        if channel is None:
            continue        # a service the new config no longer has
        if channel.journal is None and saved["events"]:
            _prepend(channel, saved["events"])
        if channel.next_tick is not None and saved["next_tick"] is not None:
            channel.next_tick = saved["next_tick"]
        channel.last_sent = saved["last_sent"]
        channel.published += saved["published"]
        channel.delivered += saved["delivered"]


def _make(hub, path):
    found = hub.ondemand.find(path)
    if found is None:
        return None
    try:
        return hub.ondemand.make(path, found.template)
    except Exception:
        return None     # over max_channels in the new config: its streams are closed


def _prepend(channel, saved):
    """The old history first, then what the services published at start (newer ids)."""
    history = channel.history
    started = list(history.ring)
    history.ring.clear()
    for values in saved:
        key, type_, data = handover.event_key(values)
        history.append(Event(key, data, type_))
    history.ring.extend(started)


def prepare(first, handing, loop):
    """An upgrade's first part (the old process still serves): each stream's socket, Client
    and StreamConn made and watched for reading, not yet in the hub (the loop does not run
    before `took`: nothing is read or written); then `built`, and the rest of the record,
    sent frozen: (Received, [(StreamConn, paths)] in the first part's order)."""
    check_inodes(first)
    loop.watch_early()
    fds, made = first.fds, []
    for values in handover.first_streams(first.document, first.blob):
        if type(values) is not list or len(values) != len(handover.PRE_STREAM):
            got = len(values) if type(values) is list else "no"
            raise HandoverError(f"handover record: a stream of the first part has {got} "
                                f"fields, not {len(handover.PRE_STREAM)}")
        index, family, id_, address, since, paths, last_id = values
        fd, fds[index] = fds[index], None
        if fd is None:
            raise HandoverError(f"handover: fd {index} named twice")
        sock = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
        conn = StreamConn(loop, sock, Client(id_, address, since, None, last_id))
        loop.watch(sock, conn, READ)
        made.append((conn, tuple(paths)))
    _hold(os.environ)
    try:
        handing.sendall(b"built")
        return receive(handing, HANDOVER_WAIT), made
    except OSError as exc:
        raise HandoverError(f"handover: {exc.strerror or exc}") from None


HOLD = "SSED_TEST_HOLD"     # tests only: a path


def _hold(env):
    """Tests only: between the two parts of an upgrade (the old process serving), write our
    pid to `$SSED_TEST_HOLD.waiting`, then wait (10 s at most) for `$SSED_TEST_HOLD` to exist:
    the window in which streams close and open before the freeze."""
    path = env.get(HOLD)
    if not path:
        return
    with open(path + ".waiting", "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 10.0
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def kept(received, made, loop, shared):
    """The streams of the first part as they are at the freeze: each into the hub with what
    changed (handover.KEPT), or closed (the old process closed it since: our duplicate
    goes too). (streams to end, as streams(); those with bytes queued, to write once ours.)"""
    hub, blob = loop.hub, received.blob
    states = received.document["kept"]
    if len(states) != len(made):
        raise HandoverError(f"handover record: {len(states)} streams kept, the first part "
                            f"sent {len(made)}")
    orphans, owed, copies = [], [], {}
    for (conn, paths), state in zip(made, states):
        if state is None:
            _drop(loop, conn)
            conn.sock.close()
            continue
        if type(state) is not list or len(state) != len(handover.KEPT):
            raise HandoverError("handover record: a kept stream has not "
                                f"{len(handover.KEPT)} fields")
        idle, sent, ref, expires = state
        queued = _queued(blob, ref, copies) if ref is not None else b""
        client = conn.client
        client.channels = _channels(hub, paths, shared)
        if not client.channels:
            _drop(loop, conn)
            orphans.append((conn.sock, queued))
            continue
        client.idle_since, client.sent = idle, sent
        _join(hub, client, expires)
        if queued:
            client.pending = [queued]
            client.queued = len(queued)
            loop.outbox.writing[client] = hub.now
            owed.append(conn)
    return orphans, owed


def _drop(loop, conn):
    """A stream of the first part that is not ours after all: let go of our duplicate."""
    conn.closed = True
    loop.unwatch(conn.sock)


def write_owed(loop, owed):
    """Once ours: the kept streams' queued bytes, sent as far as their sockets take them
    now, the rest when they can take it (as a fan-out does: a write, then write readiness
    only if it was partial)."""
    outbox, now = loop.outbox, loop.hub.now
    for conn in owed:
        if conn.closed:
            continue
        try:
            done = outbox.flush(conn.client, now)
        except OSError as exc:
            conn.close(failed(exc))
            continue
        if not done:
            conn.want_write()


def streams(received, loop, shared=None):
    """Every stream back in the hub and the loop, its queued bytes first in its outbox; the
    streams whose services are all gone: (socket, queued bytes), for the caller to end."""
    hub, doc, blob, fds = loop.hub, received.document, received.blob, received.fds
    orphans, copies = [], {}
    shared = {} if shared is None else shared   # paths -> channels: shared by streams
    for values in doc["streams"]:
        if type(values) is not list or len(values) != len(handover.STREAM):
            handover.stream_fields(values)      # (raises, naming what is wrong)
        # handover.STREAM's order, unpacked (a dict a stream is ~10 % of the restore)
        index, family, id_, address, since, paths, last_id, idle, sent, ref, expires = values
        fd = fds[index]
        if fd is None:
            continue        # an fd store that lost it: the client reconnects
        fds[index] = None
        # (the family from the record: socket's own detection is 3 syscalls a stream)
        sock = _socket.socket(family, socket.SOCK_STREAM, 0, fd)
        queued = _queued(blob, ref, copies) if ref is not None else b""
        channels = _channels(hub, tuple(paths), shared)
        if not channels:
            orphans.append((sock, queued))
            continue
        client = Client(id_, address, since, channels, last_id)
        client.idle_since, client.sent = idle, sent
        _adopt(loop, sock, client, queued, expires)
    return orphans


def _queued(blob, ref, copies):
    """A stream's queued bytes; streams whose record shares them share one copy (as they
    did in the old process)."""
    key = tuple(ref) if type(ref) is list else ref
    data = copies.get(key)
    if data is None:
        data = copies[key] = handover.take(blob, ref)
    return data


def _channels(hub, paths, shared):
    """The channels of a stream's paths (one list shared by the streams of the same)."""
    channels = shared.get(paths)
    if channels is None:
        channels = shared[paths] = [ch for ch in map(lambda p: _channel(hub, p), paths)
                                    if ch is not None]
    return channels


def _channel(hub, path):
    """The channel a stream is on: a service, or a template's channel (made again if the
    record did not bring it); None if the new config has neither."""
    found = hub.channels.get(path)
    if found is None and hub.ondemand.find(path) is not None:
        found = _make(hub, path)
    return found


def _join(hub, client, expires):
    """A stream into the hub: its channels, its id, its address, its token's expiry."""
    for channel in client.channels:
        channel.clients.add(client)
        channel.members += 1
    hub.by_id.add(client)
    hub.per_ip.add(client.address)
    hub.client_count += 1
    if expires is not None:
        hub.expire_at(client, expires)


def _adopt(loop, sock, client, queued, expires):
    hub = loop.hub
    _join(hub, client, expires)
    conn = StreamConn(loop, sock, client)
    if queued:
        client.pending = [queued]
        client.queued = len(queued)
        loop.outbox.writing[client] = hub.now
    loop.watch(sock, conn, READ | WRITE if queued else READ)


def requests(received, loop):
    """The HTTP connections whose request was still arriving: (socket, address, bytes so
    far) to take once we own them (taking them may write: a stream's head)."""
    out = []
    for values in received.document["requests"]:
        f = handover.request_fields(values)
        if received.fds[f["fd"]] is None:
            continue
        out.append((received.sock(f["fd"]), f["address"],
                    handover.take(received.blob, f["received"])))
    return out


def take_requests(loop, pending):
    for sock, address, received in pending:
        conn = HttpConn(loop, sock, address)
        try:
            if received:
                conn.take(received)
        except Exception:
            loop._bug(conn)
            continue
        if not (conn.closed or conn.replied or conn.waiting):
            loop.acceptor.waiting(conn)
            conn.watch(READ)
            if conn.deadline is None:
                loop.deadline(conn, loop.hub.now + loop.hub.config.header_timeout)


def end_orphans(orphans):
    """Streams of services the new config removed: their queued bytes (what they were
    owed), then closed, as a reload that removes a service closes them."""
    for sock, queued in orphans:
        try:
            if queued:
                sock.send(queued)
        except OSError:
            pass
        sock.close()


def check_inodes(received):
    """Each descriptor is the socket the record says (device, inode): HandoverError if not
    (an fd store hands them back in no promised order; fdstore.py sorts them by inode)."""
    for index, (fd, want) in enumerate(zip(received.fds, received.document["inodes"])):
        if fd is None or want is None:
            continue
        st = os.fstat(fd)
        if [st.st_dev, st.st_ino] != list(want):
            raise HandoverError(f"handover: fd {index} is not the socket the record names")


def finish(received, handing, loop, log, notify, first=None, made=()):
    """Put the streams and requests back; with an old process (`handing`), tell it we own
    them (from then on we write), take its stderr as ours, and tell systemd we are the
    main process now. `first`, `made`: an upgrade's first part and what prepare() made."""
    doc = received.document
    check_inodes(received)
    after_start(doc, loop.hub)
    shared = {}
    orphans, owed = kept(received, made, loop, shared) if first is not None else ([], [])
    orphans += streams(received, loop, shared)
    pending = requests(received, loop)
    named = first.document if first is not None else doc
    stderr = (first or received).fd(named["stderr"]) if named.get("stderr") is not None \
        else None
    received.close_rest()
    if first is not None:
        first.close_rest()
    if handing is not None:
        handing.sendall(b"took")
        handing.close()
    write_owed(loop, owed)
    if stderr is not None:
        os.dup2(stderr, 2)
        os.close(stderr)
    end_orphans(orphans)
    take_requests(loop, pending)
    if handing is not None:
        notify(f"MAINPID={os.getpid()}")
    log("info", f"took over {loop.hub.client_count} streams and {len(pending)} requests "
        + ("from the old process" if handing is not None else "from systemd's fd store"))
