"""The cluster (SPEC 12): this node's side of the Redis Streams that order every node's events.

One stream, `{PREFIX}:events`, orders the whole cluster: a publish is written to it (and, with
the same id, to the path's history stream) by one Lua script, Redis gives the id, and every
node, the publishing one included, delivers only what it reads back with `XREAD BLOCK`. So all
nodes deliver the same events in the same order, with no clock sync between them.

A state machine with no socket and no clock: the loop owns the two Redis connections
(redisconn.py: `reader` for the blocking XREAD, `writer` for everything else, pipelined) and
calls `link_up`/`link_down`/`tick`; replies come back to the callbacks given to `send`.
"""
import os
import random

from . import clustered, resp
from .clusterhistory import Histories
from .clusternodes import Nodes
from .channel import ClusterUnavailable
from .entries import event_of, first_id
from .history import format_id, parse_id
from .later import LOST, Later
from .log import Episode, Throttle
from .lookup import Lookup, shown

# Both XADDs in one script, so the history stream gets the id Redis gave the event. A history
# stream whose top is above that id (its keys outlived the event stream) is started again.
PUBLISH = """\
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      'p', ARGV[2], 'd', ARGV[3], 'e', ARGV[4], 'c', ARGV[5])
local n = tonumber(ARGV[6])
if n > 0 then
  local ok = redis.pcall('XADD', KEYS[2], 'MAXLEN', n, id, 'd', ARGV[3], 'e', ARGV[4])
  if type(ok) == 'table' and ok.err then
    redis.call('DEL', KEYS[2])
    redis.call('XADD', KEYS[2], 'MAXLEN', n, id, 'd', ARGV[3], 'e', ARGV[4])
  end
  if tonumber(ARGV[7]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[7]) end
end
return id
"""
PUBLISH_BYTES = PUBLISH.encode()
# A read while behind: the stream's oldest entry and the next entries, in one instant.
CATCH_UP = """\
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
return {oldest, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
"""
READ_COUNT = 1000       # entries one XREAD may bring (fewer after a reply over the cap)
STABLE = 5.0            # seconds up before an outage counts as over (no flapping storm)
MAX_INFLIGHT = 100_000  # publishes waiting for Redis past which more are refused
FAST_RETRY_FOR = 30.0   # seconds of an outage during which retries stay at most 1 s apart


class Cluster:
    def __init__(self, settings, node, hub, log):
        self.settings = settings        # config.cluster
        self.node = node
        self.hub = hub
        self.log = log
        self.reader = self.writer = None    # the loop's RedisConns, given by attach()
        self.target = None              # (family, sockaddr) of Redis, resolved at start
        self.lookup = Lookup(settings.redis, settings.timeout, log, self.moved, lambda: hub.now)
        tag = "{" + settings.prefix + "}"
        self.events_key, self.epoch_key = f"{tag}:events", f"{tag}:epoch"
        self.tag = tag
        self.state = "down"             # down, connecting, up
        self.why = "not connected yet"
        self.ready = set()              # links that have opened (and authenticated)
        self.last_id = None             # (ms, seq): the last entry read from the events stream
        self.newest = None              # the newest entry in Redis, at the last heartbeat
        self.epoch = None               # the value of {PREFIX}:epoch this node knows
        self.lost = False               # this handshake found that Redis lost data
        self.retry_at = 0.0
        self.attempts = 0               # connection attempts in this outage
        self.down_since = None
        self.reconnects = 0
        self.stop_by = 0.0              # a shutdown waits for the leases' release until then
        self.up_since = 0.0
        self.read_count = READ_COUNT
        self.catch_up_at = max(1, min(READ_COUNT, settings.maxlen // 2))
        self.ticked = 0.0
        self.trouble = Episode(log, "cluster: Redis")
        self.throttle = Throttle(log, every=60)
        self.histories = Histories(self, hub)
        self.nodes = Nodes(self, hub, log)

    # -- the links ---------------------------------------------------------------------

    def attach(self, reader, writer):
        self.reader, self.writer = reader, writer

    def start(self, now):
        self.retry_at = now
        # Until it has read where the cluster is, a stream is primed with 0-0: resuming,
        # it gets all that is held again rather than miss what came after this node's own
        # clock, which may be ahead of Redis's.
        self.hub.clock.read = (0, 0)

    def _connect(self, now):
        self.state, self.ready = "connecting", set()
        if self.attempts or self.down_since is not None:
            self.reconnects += 1
        self.attempts += 1
        for link in (self.reader, self.writer):
            link.open(now)
            if self.state == "down":
                return      # (it could not even start: down() has closed both)

    def link_up(self, link, now):
        """A link's TCP (or UNIX) connection is open: authenticate, pick the db; once both
        are, the writer checks what Redis holds and the reader starts reading."""
        settings = self.settings.redis
        if settings.password is not None:
            auth = ("AUTH", settings.user, settings.password) if settings.user \
                else ("AUTH", settings.password)
            link.send(resp.command(*auth), self.checked, now)
        if settings.db:
            link.send(resp.command("SELECT", settings.db), self.checked, now)
        link.send(resp.command("PING"), lambda reply: self._opened(link, reply), now)

    def _opened(self, link, reply):
        if self.failed(reply):
            return
        self.ready.add(link)
        if len(self.ready) == 2:
            self._handshake(self.hub.now)

    def checked(self, reply):
        self.failed(reply)

    def failed(self, reply):
        """Whether a reply says Redis cannot be used (an error, or the link dropped): then
        the node counts Redis as down."""
        if reply is LOST:
            return True
        if type(reply) is resp.Error:
            self.down(f"Redis answered {reply.text}")
            return True
        return False

    def link_down(self, link, why):
        self.down(why)

    def bad_reply(self, link, why):
        """A reply over the cap (or not RESP): a reader that asked for many big events asks
        for fewer, so that a node behind on big events does not fail on the same batch
        forever."""
        if link is self.reader:
            self.read_count = max(1, self.read_count // 8)
        self.down(why)

    def down(self, why):
        """Redis cannot be used: drop both links (their unanswered publishes learn that
        their outcome is unknown) and try again after a jittered backoff."""
        now = self.hub.now
        if self.state == "down" and self.reader.closed and self.writer.closed:
            return
        was_up = self.state == "up"
        self.state, self.why = "down", why
        if self.down_since is None:
            self.down_since = now
        self.trouble.failed(now, why)
        if was_up:
            self.log("warning", f"cluster: Redis unavailable ({why}); streams stay open, "
                     "publishes are refused until it is back")
        self.nodes.held.clear()
        self.retry_at = now + self._backoff(now)
        self.hub.due = min(self.hub.due, self.retry_at)     # (its tick may be far off)
        order = self.lookup.again(now, self.target)         # (where its name points now)
        if order is not None:
            self.hub.orders.append(order)
        dropped = [callback for link in (self.reader, self.writer) for callback in link.close()]
        for callback in dropped:
            callback(LOST)

    def moved(self, target):
        """Redis's host name resolves to another address (lookup.py): the links use it from
        their next connect, at once while Redis is down (an attempt to the old one dropped)."""
        self.target = self.reader.target = self.writer.target = target
        if self.state != "up":
            now = self.hub.now
            self.down("its host name resolves to another address")
            self.retry_at, self.hub.due = now, min(self.hub.due, now)

    def _backoff(self, now):
        """0.1 s, then 0.5 s, then 1 s apart (jittered) in an outage's first FAST_RETRY_FOR
        seconds (Redis back: serving again within about a second, at most ~1.5 tries a
        second in a short outage), then 5 s."""
        cap = 1.0 if now - self.down_since < FAST_RETRY_FOR else 5.0
        delay = min(cap, 0.1 * 5 ** min(max(self.attempts - 1, 0), 4))
        return delay * random.uniform(0.8, 1.0)

    # -- coming up -----------------------------------------------------------------------

    def _handshake(self, now):
        """Pipelined on the writer: the epoch (made if there is none), the newest entry, the
        histories; then up."""
        send = self.writer.send
        self.lost = False
        send(resp.command("SET", self.epoch_key, os.urandom(8).hex(), "NX"), self.checked, now)
        send(resp.command("GET", self.epoch_key), self._epoch, now)
        send(resp.command("XREVRANGE", self.events_key, "+", "-", "COUNT", 1), self._top, now)
        send(resp.command("XRANGE", self.events_key, "-", "+", "COUNT", 1), self._fill_all,
             now)
        send(resp.command("PING"), self._up, now)

    def _epoch(self, reply):
        if self.failed(reply):
            return
        epoch = reply.decode() if isinstance(reply, bytes) else None
        if self.epoch is not None and epoch != self.epoch:
            self._lost_data("its epoch key changed or went")
        self.epoch = epoch

    def _top(self, reply):
        if self.failed(reply):
            return
        top = self.newest = first_id(reply)
        if self.last_id is None:
            self.last_id = top or (0, 0)     # a node that just started reads what comes next
            self.hub.clock.read = self.last_id
        elif top is None or top < self.last_id:
            self._lost_data("its event stream is behind the last id this node read")
            self.last_id = self.hub.clock.read = top or (0, 0)

    def _fill_all(self, reply):
        """After the epoch and the ends of the stream: the histories read from Redis, at the
        first handshake and when Redis lost data (after a mere outage, what the node holds
        plus what it reads next is all there is)."""
        if self.failed(reply):
            return
        if self.lost or not self.histories.filled:
            for channel in clustered.channels_of(self.hub, with_history=True):
                self.histories.fill(channel, self.hub.now)
        self._bottom(reply)

    def _bottom(self, reply):
        """A node away for longer than the stream holds (`maxlen`) cannot get all it missed:
        said, since its subscribers miss those events."""
        if not reply or self.lost or self.last_id == (0, 0):
            return
        oldest = first_id(reply)
        if oldest is not None and oldest > self.last_id:
            self.log("warning", f"cluster: events after {format_id(self.last_id)} up to "
                     f"{format_id(oldest)} were trimmed from {self.events_key} (maxlen "
                     f"{self.settings.maxlen}) before this node read them: its subscribers "
                     "miss them")

    def _lost_data(self, why):
        if self.lost:
            return      # (one line a handshake, whichever sign showed it first)
        self.lost = True
        self.log("error", f"cluster: Redis lost data ({why}); clustered histories are dropped "
                 "and read again from Redis")
        clustered.forget_histories(self.hub)
        self.histories.forget()

    def _up(self, reply):
        if self.failed(reply):
            return
        now = self.hub.now
        self.state, self.why, self.up_since = "up", None, now
        self.nodes.next_lease = self.nodes.next_beat = self.hub.due = now
        if not self.trouble.failing:
            self.log("info", f"cluster: node {self.node} reading {self.events_key} after "
                     f"{format_id(self.last_id)}")
        self._read(now)

    def _stable(self, now):
        """Up for STABLE seconds: the outage is over (backoff and the log start afresh)."""
        if self.down_since is not None and now - self.up_since >= STABLE:
            self.attempts, self.down_since = 0, None
            self.trouble.recovered(now)
            self.lookup.over(now)
            self.log("info", f"cluster: node {self.node} reading {self.events_key} at "
                     f"{format_id(self.last_id)}")

    # -- reading the cluster's events ----------------------------------------------------

    def _read(self, now, behind=False):
        """The next entries: blocking while caught up; while behind (the last read brought
        some), a script that also gives the stream's oldest entry in the same instant, so
        that a stream trimmed (maxlen) past what this node read is noticed for sure."""
        if behind:
            self.reader.send(resp.command("EVAL", CATCH_UP, 1, self.events_key,
                                          format_id(self.last_id), self.read_count),
                             self._caught_up, now)
            return
        block = int(min(2.0, self.settings.timeout / 2) * 1000)
        self.reader.send(resp.command("XREAD", "COUNT", self.read_count, "BLOCK", block, "STREAMS",
                                      self.events_key, format_id(self.last_id)),
                         lambda reply: self._entries(reply[0][1] if type(reply) is list else reply),
                         now)

    def _caught_up(self, reply):
        if not self.failed(reply):
            oldest = first_id(reply[0])
            if oldest is not None and oldest > self.last_id:
                self.histories.trimmed()
        self._entries(reply if type(reply) is not list else reply[1])

    def _entries(self, entries):
        if self.failed(entries):
            return
        if self.read_count < READ_COUNT:
            self.read_count = min(READ_COUNT, 2 * self.read_count)
        hub = self.hub
        for entry_id, fields in entries or ():
            event = event_of(entry_id, fields)
            if event is None or event[1] is None:
                self.last_id = parse_id(entry_id.decode())     # (read: not to read again)
                self.throttle(("entry",), hub.now, "warning",
                              f"cluster: ignored entry {format_id(self.last_id)} of "
                              f"{self.events_key}: not an ssed event")
                continue
            key, path, data, type_, client = event
            self.last_id = key
            clustered.deliver(hub, path, key, data, type_, client)
        # Behind, it may be far behind: then a read that also gives the stream's oldest entry.
        # Not after a few (a node that keeps up reads them one or two at a time): ~maxlen/2
        # waiting is the least a node that fell maxlen behind finds in one read.
        self._read(hub.now, behind=bool(entries) and len(entries) >= self.catch_up_at)

    def history_key(self, path):
        return f"{self.tag}:h:{path}"

    # -- publishing ----------------------------------------------------------------------

    def publish(self, path, data, event, client_id, history, ttl, delivered):
        """Write one event; a Later settled with (id, delivered()) once Redis has it, or
        with a ClusterUnavailable. Refused at once while Redis is down. `ttl`: seconds the
        path's history stream outlives its last publish (0: for ever)."""
        if self.state != "up":
            raise ClusterUnavailable(f"cluster unavailable: {self.why}")
        if len(self.writer.callbacks) > MAX_INFLIGHT:
            raise ClusterUnavailable(f"cluster unavailable: {MAX_INFLIGHT} publishes already "
                                     "wait for Redis")
        later = Later()
        command = resp.command("EVAL", PUBLISH_BYTES, 2, self.events_key, self.history_key(path),
                               self.settings.maxlen, path, data, event or "", client_id or "",
                               0 if client_id is not None else history, int(ttl * 1000))
        self.writer.send(command, lambda reply: self._published(later, reply, delivered),
                         self.hub.now)
        return later

    def _published(self, later, reply, delivered):
        if reply is LOST:
            later.settle(ClusterUnavailable(
                f"cluster unavailable: outcome unknown ({self.why}); if Redis applied the "
                "publish, it is delivered once, in order"))
        elif type(reply) is resp.Error:
            later.settle(ClusterUnavailable(f"cluster unavailable: Redis answered {reply.text}"))
            self.down(f"Redis answered {reply.text}")
        else:
            later.settle((reply.decode(), delivered()))

    # -- timers: reconnect, overdue answers, leases, heartbeats ------------------------

    def tick(self, now):
        """What is due now; when something next is."""
        if self.state == "down":
            if now >= self.retry_at:
                self._connect(now)
            else:
                return self.retry_at
        timeout = self.settings.timeout
        for link, allowed in ((self.writer, timeout), (self.reader, timeout + 2.0)):
            if link.oldest is not None and now - link.oldest > allowed:
                self.down(f"no answer from Redis in {allowed:g} s")
                return self.retry_at
        if self.state != "up":
            return now + 0.1
        nodes = self.nodes
        if now < self.ticked:
            nodes.held.clear()  # the wall clock went back: hold no lease on its word
        self.ticked = now
        self._stable(now)
        if now >= nodes.next_lease:
            nodes.leases(now)
        if now >= nodes.next_beat:
            nodes.heartbeat(now)
            self.histories.expire(now)
        due = min(nodes.next_lease, nodes.next_beat)
        for link, allowed in ((self.writer, timeout), (self.reader, timeout + 2.0)):
            if link.oldest is not None:
                due = min(due, link.oldest + allowed + 0.01)
        return due

    def newest_is(self, reply):
        if not self.failed(reply):
            self.newest = first_id(reply)

    def epoch_again(self, reply):
        if self.failed(reply):
            return
        epoch = reply.decode() if isinstance(reply, bytes) else None
        if epoch != self.epoch:
            # Redis restarted empty (or was flushed): start over from what it holds.
            self.down("Redis lost data: its epoch key changed or went")

    def holds(self, path, now):
        """Whether this node runs the timers of `path` (the holder of its lease)."""
        return self.nodes.held.get(path, 0.0) > now

    def releasing(self, now):
        """Whether a shutdown should still wait for Redis to take the leases back: while
        they are unanswered, for at most a second."""
        return self.state == "up" and bool(self.writer.callbacks) and now < self.stop_by

    def stop(self, now):
        """Shutting down: give up the leases this node holds, and leave the node list."""
        self.stop_by = now + min(1.0, self.settings.timeout)
        if self.state == "up":
            self.nodes.leave(now)

    # -- what the node tells --------------------------------------------------------------

    @property
    def up(self):
        return self.state == "up"

    def lag_ms(self):
        if self.newest is None or self.last_id is None or self.newest <= self.last_id:
            return 0
        return self.newest[0] - self.last_id[0]

    def info(self, now):
        """The `cluster` command's answer (SPEC 12)."""
        nodes, leases = self.nodes.seen(now)
        return {"node": self.node, "up": self.up, "redis": shown(self.target),
                "last_id": format_id(self.last_id) if self.last_id else None,
                "lag_ms": self.lag_ms(), "nodes": nodes, "leases": leases}
