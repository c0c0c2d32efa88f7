"""Who is turned away, and with what answer: the admission ladders in one table.

Three moments admit a client, each with its own ladder, tried in order:
- "connect": a connection just accepted, before a byte is read (counts: the requests still
  waiting from that address, and in all);
- "request": every whole request, whatever it asks for;
- "stream": a request that would open a stream (counts: the streams open from that address,
  and in all).
`refusal(...)` gives the first rung that applies, or None. Pure: the counts, the limits and
the flags come in as values; the answer's bytes come from `Refusal.reply()`.
"""
import random

from . import reasons
from .responses import error_reply


class Refusal:
    """A client turned away: HTTP status, the reply's text, and the reason it is counted
    under (the metric label). A refusal that means "come back later" (503, 429) carries a
    Retry-After; a ban does not."""
    __slots__ = ("status", "text", "reason", "retry")

    def __init__(self, status, text, reason):
        self.status = status
        self.text = text
        self.reason = reason
        self.retry = status in (503, 429)

    def headers(self):
        return [("Retry-After", retry_after())] if self.retry else []

    def reply(self):
        """The whole reply, as bytes."""
        return error_reply(self.status, self.text, self.headers())

    def __repr__(self):
        return f"Refusal({self.status}, {self.text!r}, {self.reason!r})"


def retry_after():
    """Retry-After spread over 1-10 s so refused clients do not all come back at once."""
    return str(random.randint(1, 10))


STOPPING, BANNED, FROM_ADDRESS, TOTAL = "stopping", "banned", "from_address", "total"

# A ban turns away a connection at once, and any request that arrives anyway (one accepted
# before the ban, kept alive): one answer for both.
_BANNED = Refusal(403, "address banned", reasons.BANNED)

# stage -> its rungs in order: (what trips it, the refusal). The order is part of the
# contract: a client that trips two rungs gets the first one's answer.
LADDERS = {
    "connect": (
        (STOPPING, Refusal(503, "shutting down", reasons.SHUTTING_DOWN)),
        (BANNED, _BANNED),
        (FROM_ADDRESS, Refusal(429, "too many connections from your address",
                               reasons.MAX_CLIENTS_PER_IP)),
        (TOTAL, Refusal(503, "too many connections", reasons.MAX_CLIENTS)),
    ),
    "request": (
        (BANNED, _BANNED),
    ),
    "stream": (
        (TOTAL, Refusal(503, "too many clients", reasons.MAX_CLIENTS)),
        (FROM_ADDRESS, Refusal(429, "too many streams from your address",
                               reasons.MAX_CLIENTS_PER_IP)),
    ),
}


# A subscribe that would make a channel of a template at its `max_channels` (SPEC 10): after
# the ladders, since it is known only once the stream would be let in.
CHANNELS_FULL = Refusal(503, "too many channels", reasons.MAX_CHANNELS)


def refusal(stage, limits, from_address=0, total=0, stopping=False, banned=False):
    """The Refusal for a client at `stage`, or None to let it in. `limits` has
    `max_clients` and `max_clients_per_ip` (the Config); `from_address` and `total` are what
    is already open (or waiting) from the client's address and in all; `stopping`: the
    daemon is shutting down; `banned`: the address is banned."""
    # Every connection and stream passes here: letting it in costs one test of each kind,
    # no more (bench/connect.py counts the instructions).
    if (stopping or banned or from_address >= limits.max_clients_per_ip
            or total >= limits.max_clients):
        return _first(LADDERS[stage], {STOPPING: stopping, BANNED: banned,
                                       FROM_ADDRESS: from_address >= limits.max_clients_per_ip,
                                       TOTAL: total >= limits.max_clients})
    return None


def _first(ladder, tripped):
    for rung, refused in ladder:
        if tripped[rung]:
            return refused
    return None


class PerAddress(dict):
    """Counts of open things (waiting requests, streams) by address. An address at zero is
    deleted, so the dict holds only addresses with something open; read a count with
    `get(address, 0)`. Plain dict operations only, no Counter.__missing__: the accept path's
    cost is counted in instructions (bench/connect.py)."""
    __slots__ = ()

    def add(self, address):
        self[address] = self.get(address, 0) + 1

    def remove(self, address):
        """One fewer from `address`; KeyError if it has none (a remove without its add)."""
        left = self.pop(address) - 1
        if left:
            self[address] = left
