"""loop + conns with real sockets: fan-out, queueing for a peer that does not read, flushing,
dropping the slow, EOF, send errors, keepalives and the graceful shutdown.

A Hub and a Loop are built in-process as `cli.serve` wires them, without listeners or a
control socket, and with a clock that stands still. Each stream is one end of a
`socket.socketpair()` attached as a routed request's is (`hub.subscribe`, then
`Loop.open_stream`: a `StreamConn` watched by the loop, the preamble sent); the test holds
the other end. The loop is turned by hand with `Loop.turn(timeout)`, every wait bounded.
"""
import selectors
import signal
import socket
import time
from collections import Counter

import pytest

from ssed import config as configmod
from ssed import web
from ssed.hub import Hub
from ssed.loop import SIGNALS, Loop
from ssed.outbox import SLICE
from ssed.stalls import Stalls
from ssed.systemd import Notifier

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
T0 = 1000.0
BOUND = 5.0         # seconds any wait may take before the test fails


class Rig:
    def __init__(self, top="", ini="[/chat]\n[/news]\n"):
        cfg = configmod.parse(f"[ssed]\nretry = 3000\nkeepalive = 15\n{top}\n{ini}", "test.ini")
        self.logged = []
        self.hub = Hub(cfg, self.log, now=T0)
        self.loop = Loop(self.hub, [], None, self.log, lambda: [], Notifier({}),
                         clock=lambda: T0)
        self.hub.start()
        self.loop.start()
        self.peers = []

    def log(self, level, text):
        self.logged.append((level, text))

    def attach(self, paths=("/chat",), client_id=None, small=False, last_id=None):
        """A stream on a socketpair; (client, the peer's end). `small`: tiny socket buffers."""
        server, peer = socket.socketpair()
        self.peers.append(peer)
        if small:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.setblocking(False)
        peer.settimeout(BOUND)
        client, preamble = self.hub.subscribe(list(paths), client_id, "127.0.0.1", last_id, None)
        self.loop.open_stream(server, web.Stream(preamble, client), "/".join(paths))
        return client, peer

    def publish(self, *args, **kwargs):
        """Publish as a handler does: the loop carries out the hub's orders after it."""
        result = self.hub.publish(*args, **kwargs)
        self.loop.carry_out()
        return result

    def turn(self, timeout=0.0):
        self.loop.turn(timeout)

    def read(self, peer, size):
        """Exactly `size` bytes from `peer`, turning the loop while it flushes; bounded."""
        data = bytearray()
        end = time.monotonic() + BOUND
        peer.setblocking(False)
        try:
            while len(data) < size:
                assert time.monotonic() < end, f"got {len(data)} of {size} bytes: {bytes(data[-80:])!r}"
                self.turn(0.01)
                try:
                    chunk = peer.recv(size - len(data))
                except BlockingIOError:
                    continue
                assert chunk, f"EOF after {len(data)} of {size} bytes"
                data += chunk
        finally:
            peer.settimeout(BOUND)
        return bytes(data)

    def read_to_eof(self, peer):
        data = bytearray()
        while True:
            chunk = peer.recv(65536)       # the peer's timeout bounds this
            if not chunk:
                return bytes(data)
            data += chunk

    def turn_until(self, condition):
        end = time.monotonic() + BOUND
        while not condition():
            assert time.monotonic() < end, "condition not met in time"
            self.turn(0.05)

    def close(self):
        for peer in self.peers:
            peer.close()
        for key in list(self.loop.selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self.loop.close()


@pytest.fixture
def rig():
    """Makes Rigs and closes them; Loop.close() must put back the signal handlers and the
    wakeup fd that Loop.start() installed."""
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    rigs = []

    def make(**kwargs):
        rigs.append(Rig(**kwargs))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()
    assert signal.set_wakeup_fd(wakeup) == wakeup
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == handlers


def preamble(ms_id):
    return b"retry: 3000\n\nid: %s\n\n" % ms_id.encode()


def publish(rig, path, data, **kwargs):
    """Publish, then send as the loop does at the top of its next turn (a broadcast waits
    for the end of the turn that published it)."""
    event, delivered = rig.publish(path, data, **kwargs)
    jobs = rig.loop.outbox.jobs
    if len(jobs) == 1 and len(jobs[0].clients) <= SLICE:
        rig.loop.outbox.drain(T0)
    return event.wire, delivered


# -- fan-out to peers that read ---------------------------------------------------------------

def test_fanout_to_peers_that_read_delivers_the_exact_bytes_at_once(rig):
    r = rig()
    a, peer_a = r.attach(client_id="a")
    b, peer_b = r.attach(client_id="b")
    news, peer_news = r.attach(("/news",), client_id="n")
    pre_a, pre_b = peer_a.recv(4096), peer_b.recv(4096)
    assert pre_a == preamble(f"{int(T0 * 1000)}-0")
    assert pre_b == preamble(f"{int(T0 * 1000)}-1")
    wires = [publish(r, "/chat", f"event {i}\nline two", event="msg")[0] for i in range(3)]
    assert wires[0] == b"id: 1000000-3\nevent: msg\ndata: event 0\ndata: line two\n\n"
    expected = b"".join(wires)
    # Sent directly by fanout (nothing queued), so no loop turn is needed to read them.
    assert r.read(peer_a, len(expected)) == expected
    assert r.read(peer_b, len(expected)) == expected
    for c in (a, b):
        assert c.pending is None and c.queued == 0
        assert c.sent == len(pre_a) + len(expected)
        assert r.loop.selector.get_key(c.conn.sock).events == READ
    assert r.hub.stats["bytes_sent"] == 2 * (len(pre_a) + len(expected)) + len(
        peer_news.recv(4096))
    assert r.hub.stats["events_delivered"] == 6


def test_multiplexed_stream_gets_both_services_on_one_socket(rig):
    r = rig()
    both, peer = r.attach(("/chat", "/news"))
    pre = peer.recv(4096)
    w1, _ = publish(r, "/news", "n")
    w2, _ = publish(r, "/chat", "c")
    assert r.read(peer, len(w1 + w2)) == w1 + w2
    assert pre.startswith(b"retry: 3000\n\nid: ")


# -- a peer that does not read ----------------------------------------------------------------

def fill(r, client, data=b"x" * 4000, limit=200):
    """Publish until `client` has bytes queued; the wires published, in order."""
    wires = []
    for _ in range(limit):
        wires.append(publish(r, "/chat", data.decode())[0])
        if client.pending is not None:
            return wires
    pytest.fail("the socket never filled up")


def test_peer_that_does_not_read_gets_the_rest_queued_and_write_watched(rig):
    r = rig()
    slow, peer = r.attach(small=True)
    wires = fill(r, slow)
    key = r.loop.selector.get_key(slow.conn.sock)
    assert key.events == READ | WRITE
    assert slow.queued == sum(map(len, slow.pending)) > 0
    queued_before = slow.queued
    more = [publish(r, "/chat", f"later {i}")[0] for i in range(5)]
    assert slow.pending[-5:] == more                   # appended as they are, in order
    assert slow.queued == queued_before + sum(map(len, more))
    assert not r.loop.outbox.doomed


def test_flushing_later_delivers_everything_in_order_joined_into_writes(rig):
    r = rig()
    slow, peer = r.attach(small=True)
    pre = peer.recv(4096)                               # the preamble went out at once
    wires = fill(r, slow)
    wires += [publish(r, "/chat", f"later {i}")[0] for i in range(20)]
    assert len(slow.pending) > 20
    expected = b"".join(wires)
    got = bytearray()
    flushes = 0
    peer.setblocking(False)
    end = time.monotonic() + BOUND
    while len(got) < len(expected):
        assert time.monotonic() < end, f"got {len(got)} of {len(expected)} bytes"
        try:
            got += peer.recv(65536)
        except BlockingIOError:
            pass
        before = slow.queued
        r.turn(0.01)
        if slow.queued != before:
            flushes += 1
            # One write takes the whole queue joined: what is left is one chunk.
            assert slow.pending is None or len(slow.pending) == 1
    assert bytes(got) == expected
    assert flushes >= 1
    assert slow.pending is None and slow.queued == 0
    assert r.loop.selector.get_key(slow.conn.sock).events == READ
    assert slow.sent == len(pre) + len(expected) == r.hub.stats["bytes_sent"]
    wire, _ = publish(r, "/chat", "after the queue")     # sent directly again
    assert slow.pending is None
    assert r.read(peer, len(wire)) == wire


def test_crossing_send_buffer_drops_the_client_as_slow_and_spares_the_others(rig):
    r = rig(top="send_buffer = 20000")
    slow, slow_peer = r.attach(client_id="slow", small=True)
    fast, fast_peer = r.attach(client_id="fast")
    fast_pre = fast_peer.recv(4096)
    wires = fill(r, slow)
    while not r.loop.outbox.doomed:
        assert len(wires) < 100, "never doomed"
        wires.append(publish(r, "/chat", "y" * 4000)[0])
    assert r.loop.outbox.doomed == [(slow, "slow")]
    assert slow.queued > 20000
    assert not slow.conn.closed              # closed after the fan-out, not inside it
    sock = slow.conn.sock
    r.loop.carry_out()
    assert slow.conn.closed and sock.fileno() == -1
    assert r.hub.dropped["slow"] == 1
    assert slow not in r.hub.channels["/chat"].clients
    assert r.hub.by_id.keys() == {"fast"} and r.hub.client_count == 1
    assert ("debug", "stream slow closed: slow") in r.logged
    # The slow peer reads what had been sent, then EOF; nothing more is ever written to it.
    delivered = r.read_to_eof(slow_peer)
    assert len(delivered) == slow.sent
    assert (preamble(f"{int(T0 * 1000)}-0") + b"".join(wires)).startswith(delivered)
    # The fast one got everything, and still gets new events.
    wires.append(publish(r, "/chat", "after")[0])
    expected = b"".join(wires)
    assert r.read(fast_peer, len(expected)) == expected
    assert fast.pending is None
    assert r.hub.dropped == {"slow": 1}


def test_a_client_that_catches_up_under_send_buffer_is_kept(rig):
    r = rig(top="send_buffer = 20000")
    slow, peer = r.attach(small=True)
    pre = peer.recv(4096)
    wires = fill(r, slow)
    expected = b"".join(wires)
    assert r.read(peer, len(expected)) == expected
    wires = [publish(r, "/chat", "z" * 3000)[0] for _ in range(5)]
    expected = b"".join(wires)
    assert r.read(peer, len(expected)) == expected
    assert not r.loop.outbox.doomed and r.hub.dropped == {}


# -- closing ------------------------------------------------------------------------------------

def test_eof_from_the_peer_closes_the_stream_with_reason_eof(rig):
    r = rig()
    gone, gone_peer = r.attach(client_id="gone")
    stay, stay_peer = r.attach(client_id="stay")
    stay_peer.recv(4096)
    gone_peer.recv(4096)        # (closing with unread bytes would be a reset, not an EOF)
    gone_peer.close()
    r.turn_until(lambda: gone.conn.closed)
    assert ("debug", "stream gone closed: eof") in r.logged
    assert r.hub.dropped == {}                  # a client that leaves is not a drop
    assert r.hub.by_id.keys() == {"stay"} and r.hub.client_count == 1
    wire, delivered = publish(r, "/chat", "still here")
    assert delivered == 1
    assert r.read(stay_peer, len(wire)) == wire


def test_half_closed_peer_is_closed_as_eof(rig):
    r = rig()
    client, peer = r.attach()
    peer.shutdown(socket.SHUT_WR)
    r.turn_until(lambda: client.conn.closed)
    assert r.hub.client_count == 0
    assert r.read_to_eof(peer).startswith(b"retry: 3000\n\n")


def test_bytes_the_peer_sends_on_a_stream_are_read_and_ignored(rig):
    r = rig()
    client, peer = r.attach()
    peer.sendall(b"GET /again HTTP/1.1\r\n\r\n" * 100)
    pre = peer.recv(4096)
    for _ in range(5):
        r.turn(0.01)
    assert not client.conn.closed
    wire, _ = publish(r, "/chat", "x")
    assert r.read(peer, len(wire)) == wire


def test_a_peer_gone_before_a_write_is_closed_as_reset_and_not_counted_as_a_drop(rig):
    r = rig()
    gone, gone_peer = r.attach(client_id="gone")
    stay, stay_peer = r.attach(client_id="stay")
    stay_peer.recv(4096)
    gone_peer.close()
    wire, delivered = publish(r, "/chat", "x")          # before the loop noticed the EOF
    assert r.loop.outbox.doomed == [(gone, "reset")]          # EPIPE: the client left
    r.loop.carry_out()
    assert gone.conn.closed
    assert r.hub.dropped == {}
    assert r.read(stay_peer, len(wire)) == wire


def test_kick_through_the_loop_closes_the_socket_once_kick_has_returned(rig):
    r = rig()
    client, peer = r.attach(client_id="bob")
    assert r.hub.kick("/chat", "bob") == 1
    assert not client.conn.closed and r.hub.client_count == 1   # an order, not a call back
    r.loop.carry_out()
    assert client.conn.closed
    assert r.read_to_eof(peer).startswith(b"retry: 3000\n\n")
    assert r.hub.dropped == {"kicked": 1}


# -- time: keepalive ----------------------------------------------------------------------------

def test_keepalive_reaches_the_socket_of_a_silent_stream_only(rig):
    r = rig()
    quiet, quiet_peer = r.attach(("/news",))
    busy, busy_peer = r.attach(("/chat",))
    quiet_peer.recv(4096), busy_peer.recv(4096)
    r.hub.now = T0 + 10
    wire, _ = publish(r, "/chat", "x")
    r.hub.tick(T0 + 15)
    assert r.read(quiet_peer, 13) == b": keepalive\n\n"
    assert r.read(busy_peer, len(wire)) == wire
    busy_peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        busy_peer.recv(100)


# -- shutdown -----------------------------------------------------------------------------------

def test_shutdown_sends_each_stream_a_spread_retry_then_closes_them(rig):
    r = rig()
    peers = [r.attach()[1] for _ in range(20)]
    for peer in peers:
        peer.recv(4096)
    r.loop.shutdown("test")
    assert r.loop.stopping is not None
    r.loop._shutdown_step(T0)
    assert r.loop.running is False
    retries = set()
    for peer in peers:
        data = r.read_to_eof(peer)
        assert data.startswith(b"retry: ") and data.endswith(b"\n\n") and data.count(b"\n") == 2
        retries.add(int(data[7:-2]))
    assert all(3000 <= n <= 30000 for n in retries)
    assert len(retries) > 1                     # spread out, not one instant for everyone
    assert r.hub.client_count == 0 and r.hub.dropped == {}


def test_shutdown_waits_for_queued_bytes_until_shutdown_timeout(rig):
    r = rig(top="shutdown_timeout = 5")
    slow, slow_peer = r.attach(small=True)
    fast, fast_peer = r.attach()
    slow_peer.recv(4096)
    fill(r, slow)
    r.loop.shutdown("test")
    r.loop._shutdown_step(T0)
    assert r.loop.running and not slow.conn.closed and not fast.conn.closed
    r.loop._shutdown_step(r.loop.stopping + 0.001)     # the deadline has passed
    assert r.loop.running is False
    assert slow.conn.closed and fast.conn.closed


def test_a_fan_out_over_a_slice_goes_out_across_turns_and_never_reorders_a_clients_events(rig):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SLICE + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * SLICE), hard))
    r = rig()
    pairs = [r.attach() for _ in range(SLICE + SLICE // 2)]
    before = {id(c): c.sent for c, _ in pairs}
    r.publish("/chat", "broadcast")
    assert r.loop.outbox.jobs                                          # queued, not sent yet
    order = r.loop.outbox.jobs[0].clients
    first, last = order[0], order[-1]
    last_peer = next(peer for c, peer in pairs if c is last)
    assert last.sent == before[id(last)]
    # A targeted event to the last client must queue behind the broadcast it has not got.
    r.publish("/chat", "only you", client_id=last.id)
    r.loop.outbox.drain(T0)                                     # one turn's share
    assert first.sent > before[id(first)] and last.sent == before[id(last)]
    r.turn_until(lambda: not r.loop.outbox.jobs)
    data = r.read(last_peer, last.sent)
    assert data.index(b"data: broadcast") < data.index(b"data: only you")
    assert all(c.sent > before[id(c)] for c, _ in pairs)


def counted(client):
    """Count the writes the loop makes to `client` (its `send` is the socket's)."""
    writes = []

    def send(data, real=client.send):
        writes.append(bytes(data))
        return real(data)
    client.send = send
    return writes


def test_broadcasts_of_one_turn_go_out_as_one_write_per_client_in_order(rig):
    r = rig()
    pairs = [r.attach() for _ in range(3)]
    for c, peer in pairs:
        peer.recv(4096)                                         # the preambles
    writes = [counted(c) for c, _ in pairs]
    wires = [r.publish("/chat", f"event {i}")[0].wire for i in range(5)]
    assert len(r.loop.outbox.jobs) == 1 and not any(writes)            # nothing sent inside the turn
    r.turn()
    assert writes == [[b"".join(wires)]] * 3
    for c, peer in pairs:
        assert r.read(peer, len(b"".join(wires))) == b"".join(wires)


def test_broadcasts_queued_behind_a_busy_fan_out_join_it_unless_membership_changed(rig):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * SLICE + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * SLICE), hard))
    r = rig()
    pairs = [r.attach() for _ in range(SLICE + 10)]
    for c, peer in pairs:
        peer.recv(4096)
    first, first_peer = pairs[0]
    writes = counted(first)
    w1 = r.publish("/chat", "one")[0].wire
    r.loop.outbox.drain(T0)                                     # under way: SLICE of them
    w2 = r.publish("/chat", "two")[0].wire
    w3 = r.publish("/chat", "three")[0].wire
    assert len(r.loop.outbox.jobs) == 2                                # "three" joined "two"
    late, late_peer = r.attach()                                # membership changes
    assert late.sent > 0 and len(r.loop.outbox.jobs) == 2              # its preamble went out at once
    w4 = r.publish("/chat", "four")[0].wire
    assert len(r.loop.outbox.jobs) == 3                                # "four" starts a fan-out
    r.turn_until(lambda: not r.loop.outbox.jobs)
    assert writes == [w1, w2 + w3, w4]
    assert not any(c.pending for c, _ in pairs)                 # all in the kernel's hands
    for c, peer in pairs:
        peer.settimeout(BOUND)
        want = w1 + w2 + w3 + w4
        assert peer.recv(len(want), socket.MSG_WAITALL) == want
    assert r.read(late_peer, late.sent).endswith(b"\n\n" + w4)   # after its preamble


@pytest.mark.parametrize("broken", ["register", "send"])
def test_a_bug_while_opening_a_stream_closes_that_stream_only(rig, monkeypatch, broken):
    r = rig()
    other, other_peer = r.attach()

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")
    owner = r.loop.selector if broken == "register" else r.loop.outbox
    monkeypatch.setattr(owner, broken, bug)
    client, peer = r.attach()
    monkeypatch.undo()
    assert client.conn.closed and r.hub.client_count == 1       # detached, socket closed
    assert r.read_to_eof(peer) == b""
    assert any(level == "error" and "a bug" in text for level, text in r.logged)
    wire = r.publish("/chat", "still here")[0].wire
    r.turn()
    assert r.read(other_peer, other.sent).endswith(wire)


def test_a_targeted_event_never_joins_a_broadcast(rig):
    r = rig()
    a, peer_a = r.attach(client_id="a")
    b, peer_b = r.attach(client_id="b")
    for peer in (peer_a, peer_b):
        peer.recv(4096)
    w1 = r.publish("/chat", "all")[0].wire
    w2 = r.publish("/chat", "a only", client_id="a")[0].wire
    w3 = r.publish("/chat", "all again")[0].wire
    r.turn()
    assert r.read(peer_a, len(w1 + w2 + w3)) == w1 + w2 + w3
    assert r.read(peer_b, len(w1 + w3)) == w1 + w3


# -- accepting ----------------------------------------------------------------------------------

def test_an_unexpected_accept_error_is_logged_once_and_the_listener_dropped_not_spun_on(rig):
    """A datagram socket as a listener (systemd can pass one; listen_fds now refuses it):
    accept() fails with EOPNOTSUPP while the datagram keeps it readable. Retrying each turn
    was 100 % CPU with nothing logged."""
    r = rig()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    r.loop.acceptor.set_listeners([udp, tcp], [])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(b"x", udp.getsockname())
    r.turn(BOUND)
    for _ in range(3):
        r.turn(0.0)
    errors = [text for level, text in r.logged if level == "error"]
    assert len(errors) == 1 and "no longer accepting" in errors[0], r.logged
    assert "Operation not supported" in errors[0] and str(udp.getsockname()) in errors[0]
    assert udp not in r.loop.acceptor.listeners and r.loop.acceptor.listeners == [tcp]
    assert udp.fileno() not in {k.fd for k in r.loop.selector.get_map().values()}
    assert r.loop.selector.select(0) == []      # nothing left ready: no spinning
    udp.close()
    with socket.create_connection(tcp.getsockname(), timeout=BOUND):
        r.turn(BOUND)       # the other listener still accepts
    assert len(r.loop.acceptor.pending) == 1


# -- naming a stall ---------------------------------------------------------------------------

class StallHub:
    def __init__(self):
        self.stats, self.now = Counter(), T0


def stall_report(took, dispatching, events=(), run=None):
    """What Stalls logs for a turn of `took` s in which `run(stalls)` ran; (lines, stats)."""
    hub, lines = StallHub(), []
    stalls = Stalls(lambda level, text: lines.append((level, text)))
    if run:
        run(stalls)
    stalls.report(took, dispatching, list(events), hub)
    return lines, hub.stats


def slow(seconds):
    def method(*args):
        time.sleep(seconds)     # the very thing under test: a hook that holds the loop
        return ("answer", {"cmd": "reload"})
    return method


def test_a_stall_names_a_hook_a_command_ran_rather_than_the_command():
    lines, stats = stall_report(0.1, 0.1, run=lambda s: s.command(
        lambda line: s.timed("/svc", "on_start", slow(0.05), ()), "reload"))
    assert lines == [("warning", "loop stalled 0.1 s in /svc on_start: every client waited "
                      "meanwhile")]
    assert stats["loop_stalls"] == 1 and stats["longest_stall"] == 0.1


def test_a_stall_names_the_command_when_no_hook_explains_it():
    lines, _ = stall_report(0.06, 0.06, run=lambda s: s.command(slow(0.05), "reload"))
    assert lines[0][1].startswith("loop stalled 0.1 s in control command reload: ")


def test_a_stall_outside_the_handlers_is_put_on_the_timers_and_repeats_are_held_back():
    hub, lines = StallHub(), []
    stalls = Stalls(lambda level, text: lines.append(text))
    for _ in range(3):
        stalls.report(2.0, 0.1, [], hub)
    assert lines == ["loop stalled 2.0 s in timers (ticks, keepalives, journal syncs): "
                     "every client waited meanwhile"]
    assert hub.stats["loop_stalls"] == 3 and hub.stats["longest_stall"] == 2.0
