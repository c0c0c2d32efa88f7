"""The hub's side of the cluster (SPEC 12): which channels are clustered, a publish sent to
Redis instead of delivered, an entry read back delivered, histories filled from Redis, and
which timers this node runs. Functions of the hub, so that hub.py keeps its one shape
whether or not there is a cluster; cluster.py holds the Redis side."""
from collections import deque

from . import sse
from .channel import ChannelsFull, PublishError, checked
from .history import Event


def is_clustered(hub, path, channel=None):
    """The config of `path` if it is clustered (a service, or a template's channel, without
    `cluster = false`), else None."""
    if channel is None:
        channel = hub.channels.get(path) or hub.ondemand.find(path)
        if channel is None:
            return None
    return channel.config if channel.config.cluster else None


def publish(hub, path, channel, data, event, client_id):
    """A publish to a clustered path: checked here as a local one would be, then written to
    Redis (a Later); None when `path` is not clustered (the hub publishes it itself)."""
    config = is_clustered(hub, path, channel)
    if config is None:
        if channel is None and hub.ondemand.find(path) is None:
            raise PublishError(f"no service {path}")
        return None
    event = checked(config, path, data, event)
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise PublishError("data is not valid Unicode text") from None
    if channel is None and client_id is None:
        # A template's channel is made where the event is read back; a node that is full
        # refuses here what it could not hold there.
        template = hub.ondemand.find(path).template
        if len(template.channels) >= template.config.max_channels:
            raise ChannelsFull(f"{template.path} is at max_channels "
                               f"({template.config.max_channels}): no channel {path} now; "
                               "try again later")
    # A template's history stream in Redis goes a day after its last publish (or `idle`, if
    # longer), so per-user channels do not pile up there for ever.
    ttl = max(config.idle, 86400) if config.path.endswith("/*") else 0
    return hub.cluster.publish(path, data, event, client_id, config.history, ttl,
                               lambda: _local_count(hub, path, client_id))


def unnumbered(ev):
    """An event a service sends one stream (a Client) goes no further than this node, so
    its id would come from this node's clock, which may be ahead of Redis's: a client
    resuming from it would miss events. It goes without an id (its lastEventId stays)."""
    ev.wire = sse.frame(ev.data, ev.type)
    return ev


def may_publish(hub, channel):
    """Whether a service's own publish goes out: a source's only from the node that holds
    its lease (a `file` source publishing at start on every node would send N copies)."""
    return (channel.path not in hub.ticking or not channel.config.cluster
            or hub.cluster.holds(channel.path, hub.now))


def _local_count(hub, path, client_id):
    """`delivered` of a clustered publish: this node's streams it reaches."""
    channel = hub.channels.get(path)
    if channel is None:
        return 0
    if client_id is None:
        return len(channel.clients)
    return sum(1 for c in hub.streams_of(client_id) if channel in c.channels)


def deliver(hub, path, key, data, event, client_id):
    """An entry read back from the cluster's stream: every node delivers it here, the
    publishing one included. A template's channel is made for it (a node that sees a
    publish has the channel, for replay)."""
    # Every id read counts, delivered here or not: this node's own ids (a `cluster = false`
    # service's) come after it, and an upgrade resumes reading past it.
    hub.clock.advance(key)
    hub.clock.read = key
    channel = hub.channels.get(path)
    if channel is None:
        found = hub.ondemand.find(path)
        if found is None or not found.config.cluster:
            return
        try:
            channel = hub.ondemand.make(path, found.template)
        except ChannelsFull as exc:
            hub.throttle(("cluster full", found.template.path), hub.now, "warning",
                         f"cluster: event {key[0]}-{key[1]} not kept: {exc}")
            return
    elif not channel.config.cluster:
        return
    ev = Event(key, data, event)
    if client_id is None:
        ring = channel.history.ring
        if ring and ring[-1].key >= key:
            return      # this node has it already: read from the history stream
        channel.history.append(ev)
    hub.send(channel, ev, client_id)


def fill_history(hub, channel, events):
    """Merge what Redis holds of a channel's history with what this node read meanwhile.
    Its service hears of each event it had not (`on_event`), oldest first: later than of
    some it was sent (they came live), as the hook's doc says."""
    history = channel.history
    if not history.ring.maxlen:
        return
    held = {e.key: e for e in history.ring}
    new = []
    for key, data, event in events:
        if key not in held:
            held[key] = ev = Event(key, data, event)
            new.append(ev)
    merged = sorted(held.values(), key=lambda e: e.key)
    history.ring = deque(merged, maxlen=history.ring.maxlen)
    for ev in merged:
        if ev.type is not None:
            history.types.setdefault(ev.type, None)
    if channel.hears:
        for ev in sorted(new, key=lambda e: e.key):
            hub.heard(channel, ev)


def channels_of(hub, with_history=False):
    """The clustered channels this node has (with a history, to fill from Redis)."""
    return [ch for ch in hub.channels.values() if ch.config.cluster
            and (ch.config.history or not with_history)]


def forget_histories(hub):
    """Redis lost data: what this node holds of clustered histories goes (then each is
    read again from Redis), so that every node replays the same."""
    for channel in channels_of(hub):
        channel.history.ring.clear()


def leased_paths(hub):
    """The clustered paths whose timers need the lease: services with an on_tick."""
    return [path for path, ch in hub.ticking.items() if ch.config.cluster]


def runs(hub, channel, now):
    """Whether this node runs `channel`'s on_tick: always, unless it is clustered and
    another node holds its lease."""
    return not channel.config.cluster or hub.cluster.holds(channel.path, now)


def gained_lease(hub, path):
    """This node now runs a source: it starts as at start (`on_lease`), at once."""
    channel = hub.channels.get(path)
    if channel is None:
        return
    hook = getattr(channel.service, "on_lease", None)
    if hook is not None:
        hub.call(channel, "on_lease")
    channel.next_tick = hub.now
    hub.due = hub.now


def opened(hub, channel):
    """A channel made (a template's, or a service a reload added): its history from Redis
    (at start, the handshake reads them all)."""
    if channel.config.cluster:
        hub.cluster.histories.made(channel, hub.now)


def joined(hub, channel):
    """A reload took a channel into the cluster: what it held has this node's ids, which
    Redis's may repeat, and the other nodes never saw; from now on its history is Redis's,
    as on every node."""
    channel.history.ring.clear()
    opened(hub, channel)


def dropped(hub, channel):
    hub.cluster.histories.filled.discard(channel.path)


def unfilled(hub, channels):
    """For a subscriber asking for replay: a Later settled once this node holds what Redis
    has of each clustered channel's history; None when it already does (or Redis is down:
    then it is served from what the node holds)."""
    if not hub.cluster.up:
        return None
    histories = hub.cluster.histories
    wanted = [(ch.path, ch.config.history) for ch in channels
              if ch.config.cluster and ch.config.history and ch.path not in histories.filled
              and ch.path not in histories.fetched]
    return histories.prefetch(wanted, hub.now) if wanted else None
