"""What a new stream gets before any live event: `retry:`, the session event, then the
replay after its Last-Event-ID or else a priming `id:` line (SPEC 4), and what its services'
`on_connect` hooks sent it meanwhile (a `Joining`), all in id order.

Pure: the hub passes its config's retry, its id clock and the time.
"""
from . import sse
from .history import merge, parse_id


class Joining:
    """A stream whose on_connect hooks are running: the priming id taken before them, and
    the events published to it meanwhile, as (channel, event), to follow its preamble."""
    __slots__ = ("client", "prime", "sent")

    def __init__(self, client, prime):
        self.client = client
        self.prime = prime
        self.sent = []


def _head(retry, client, channels):
    parts = [sse.retry(retry)] if retry else []
    for channel in channels:
        if channel.config.session_event:
            parts.append(sse.frame(client.id, "session"))
            break
    return parts


def preamble(retry, clock, now_ms, client, channels, last_id):
    """The bytes of a stream no hook sent anything to (the connect path: kept lean)."""
    parts = _head(retry, client, channels)
    if last_id is not None:
        # An id not of our form gets everything held (SPEC 4): we cannot tell what it saw.
        replay = merge([ch.history for ch in channels], parse_id(last_id))
        if replay:
            parts.extend(e.wire for e in replay)
            return b"".join(parts)
    else:
        for channel in channels:
            if channel.replay_last:
                parts.extend(current(channels))
                break
    parts.append(sse.prime(clock.prime(now_ms, parse_id(last_id) if last_id else None)))
    return b"".join(parts)


def current(channels, before=None):
    """For a new subscriber (no Last-Event-ID) of services whose events are their state (a
    file's content): the last held event of each (older than `before`), in id order. The
    priming id follows them, so a reconnect resumes after everything held, not after the
    oldest of these."""
    last = []
    for ch in channels:
        if ch.replay_last:
            held = [e for e in ch.history.ring if before is None or e.key < before]
            last.extend(held[-1:])
    last.sort(key=lambda e: e.key)
    return [e.wire for e in last]


def joined(retry, joining, last_id):
    """The bytes of a stream whose on_connect hooks ran: its replay or else its priming id,
    then what the hooks broadcast and sent it, all in id order."""
    client = joining.client
    parts = _head(retry, client, client.channels)
    prime = parse_id(joining.prime)
    # The hooks' broadcasts are in the histories, after the priming id.
    events = merge([ch.history for ch in client.channels],
                   prime if last_id is None else parse_id(last_id))
    if not events or events[0].key > prime:
        if last_id is None:
            parts.extend(current(client.channels, prime))
        parts.append(sse.prime(joining.prime))      # nothing to replay (SPEC 4)
    if joining.sent:
        events = sorted(events + [ev for _, ev in joining.sent], key=lambda e: e.key)
    parts.extend(e.wire for e in events)
    return b"".join(parts)
