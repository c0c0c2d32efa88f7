"""Which streams are due a `: keepalive` comment. Pure: the channels and the time come in."""


def quiet_streams(channels, now, limit):
    """The streams of `channels` that have heard nothing for `limit` seconds (their
    `idle_since` set to `now`: they are about to hear the comment), and when the next one
    will have. An O(clients) pass only over channels that fell silent; a channel with no
    stream (a template's, waiting to go idle) costs one test."""
    due = now + limit
    idle = []
    for channel in channels:
        if not channel.clients:
            continue
        if now - channel.last_sent < limit:
            due = min(due, channel.last_sent + limit)
            continue
        found = []
        for c in channel.clients:
            quiet = max(c.idle_since, *(ch.last_sent for ch in c.channels)) \
                if len(c.channels) > 1 else c.idle_since
            if now - quiet >= limit:
                found.append(c)
            else:
                due = min(due, quiet + limit)
        for c in found:     # now, so that a stream of several channels is found once
            c.idle_since = now
        idle += found
    return idle, due
