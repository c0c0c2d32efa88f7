"""Events, the daemon's id clock, and each service's ring of recent events.

Ids are `<unix-ms>-<seq>` (the format of Redis Stream entry ids), compared as a pair of
integers. One clock serves every service, so ids are comparable across services and one
Last-Event-ID can resume a multiplexed stream.
"""
import re
from collections import deque

from . import sse

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})\Z")   # ASCII digits only: \d takes any script


def parse_id(text):
    """The (ms, seq) pair of an id, or None if `text` is not of our form."""
    m = _ID.match(text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def format_id(key):
    return f"{key[0]}-{key[1]}"


class Event:
    """One published event, framed once: `wire` is what every subscriber receives."""
    __slots__ = ("key", "id", "type", "data", "wire")

    def __init__(self, key, data, type=None):
        self.key = key
        self.id = format_id(key)
        self.type = type
        self.data = data
        self.wire = sse.frame(data, type, self.id)


class IdClock:
    """Hands out ids that never go backwards, even if the wall clock does."""

    def __init__(self, last=(0, 0)):
        self.last = last
        self.read = None    # in a cluster: the last id read from Redis (SPEC 12)

    def next(self, now_ms):
        ms, seq = self.last
        self.last = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
        return self.last

    def advance(self, key):
        """Never hand out an id at or below `key` (ids restored from elsewhere)."""
        if key > self.last:
            self.last = key

    def prime(self, now_ms, after=None):
        """An id for a stream with nothing to replay: every later event is greater. In a
        cluster, the last id read from Redis (or `after`, the id the stream resumes from, if
        greater): every event to come from Redis is greater, and this node's clock may be
        ahead of Redis's (no clock sync between nodes)."""
        if self.read is not None:
            return format_id(max(self.read, after) if after is not None else self.read)
        ms, seq = self.next(now_ms)
        return f"{ms}-{seq}"


# Event types a History remembers having seen: enough for any real service, bounded so that
# a publisher who makes up a type per event cannot grow it without end.
MAX_TYPES = 64


class History:
    """The last `size` events of one service, oldest first; and `types`, the event types it
    has been given (held or not; the MAX_TYPES newest to appear), which the index page
    listens for."""

    def __init__(self, size):
        self.ring = deque(maxlen=size)
        self.types = {}     # an ordered set

    def resize(self, size):
        if size != self.ring.maxlen:
            self.ring = deque(self.ring, maxlen=size)

    def append(self, event):
        types = self.types
        if event.type is not None and event.type not in types:
            types[event.type] = None
            if len(types) > MAX_TYPES:
                del types[next(iter(types))]
        if self.ring.maxlen:
            self.ring.append(event)

    @property
    def last_id(self):
        return self.ring[-1].id if self.ring else None

    def since(self, key):
        """The held events with an id greater than `key` (None: all of them), in order."""
        if key is None:
            return list(self.ring)
        newer = []
        for event in reversed(self.ring):
            if event.key <= key:
                break
            newer.append(event)
        newer.reverse()
        return newer


def merge(histories, key):
    """Replay for a multiplexed stream: the events after `key` of every history, in id order."""
    if len(histories) == 1:
        return histories[0].since(key)
    events = [e for h in histories for e in h.since(key)]
    events.sort(key=lambda e: e.key)
    return events
