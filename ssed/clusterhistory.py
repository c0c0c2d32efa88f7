"""What a node of the cluster (SPEC 12) reads of the paths' history streams in Redis
(`{PREFIX}:h:PATH`): all of them when it starts (or Redis lost data), a channel's when it is
made, and those a subscriber asks replay of before this node holds them. So replay is the
same on every node. Part of cluster.py's Cluster (`cluster.histories`); no socket."""
from . import clustered, resp
from .entries import event_of
from .history import format_id
from .later import Later


class Histories:
    def __init__(self, cluster, hub):
        self.cluster = cluster
        self.hub = hub
        self.filled = set()             # paths whose history this node has read from Redis
        self.fetched = {}               # path -> (when, events) read for a channel to come

    def trimmed(self):
        cluster = self.cluster
        cluster.throttle(("trimmed",), self.hub.now, "warning",
                         f"cluster: node {cluster.node} reads {cluster.events_key} slower than "
                         f"it is trimmed (maxlen {cluster.settings.maxlen}): events after "
                         f"{format_id(cluster.last_id)} went unread; histories are read again "
                         "from Redis")
        for channel in clustered.channels_of(self.hub, with_history=True):
            self.filled.discard(channel.path)   # (a replay meanwhile waits for Redis's)
            self.fill(channel, self.hub.now)

    def fill(self, channel, now):
        """Read a clustered channel's history from Redis into its memory (a node that just
        started, or a channel it just made): replay is the same on every node."""
        def filled(events):
            if events is not None and self.hub.channels.get(channel.path) is channel:
                clustered.fill_history(self.hub, channel, events)
                self.filled.add(channel.path)
        self._fetch(channel.path, channel.config.history, filled, now)

    def prefetch(self, wanted, now):
        """Read the histories of `wanted` (path, size) pairs, for a subscriber that asks
        for replay before this node holds them: a Later settled when they are in (the
        channels that exist have them; the others find them in `fetched` as they are made)."""
        later, left = Later(), [len(wanted)]

        def one(path, events):
            if events is not None:
                channel = self.hub.channels.get(path)
                if channel is not None:
                    clustered.fill_history(self.hub, channel, events)
                    self.filled.add(path)
                else:
                    self.fetched[path] = (now, events)
            left[0] -= 1
            if not left[0]:
                later.settle(None)
        for path, size in wanted:
            self._fetch(path, size, lambda events, path=path: one(path, events), now)
        return later

    def _fetch(self, path, size, then, now):
        """`then(events)` with the (key, data, type) of what Redis holds of `path`'s history
        up to the last id read (what comes after, the reader delivers), or None."""
        cluster = self.cluster
        if not size or cluster.writer.closed:
            return then(None)
        cluster.writer.send(resp.command("XREVRANGE", cluster.history_key(path), "+", "-",
                                         "COUNT", size),
                            lambda reply: then(None if cluster.failed(reply) else
                                               self._history(reply or ())), now)

    def _history(self, reply):
        events = []
        for entry_id, fields in reversed(reply):
            event = event_of(entry_id, fields)
            if event is None or event[0] is None:
                continue
            key, _, data, type_, _ = event
            if key > self.cluster.last_id:
                continue    # the reader has yet to read it: it delivers it then
            events.append((key, data, type_))
        return events

    def made(self, channel, now):
        """A clustered channel this node just made: what a prefetch read for it, or a fill."""
        got = self.fetched.pop(channel.path, None)
        if got is not None:
            clustered.fill_history(self.hub, channel, got[1])
            self.filled.add(channel.path)
        elif self.cluster.up:
            self.fill(channel, now)

    def forget(self):
        """Redis lost data: nothing read from it before counts."""
        self.filled.clear()
        self.fetched.clear()

    def expire(self, now):
        """Drop what was read for a subscriber who was then refused (no channel came)."""
        for path in [p for p, (when, _) in self.fetched.items() if now - when > 10]:
            del self.fetched[path]
