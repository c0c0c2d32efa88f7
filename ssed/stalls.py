"""Stalled loop turns: one thread serves everyone, so a turn that takes seconds (a plugin's
`on_tick` that sleeps, an `admin` that blocks) keeps every client waiting. The loop times
each turn (three monotonic calls); service hooks and control commands are timed here, so
that a turn over STALL_AFTER can name what held it: "loop stalled 5.0 s in /svc on_tick".
"""
import functools
from time import monotonic

from .log import Throttle

STALL_AFTER = 1.0   # seconds of one turn's work past which the loop is reported stalled


class Stalls:
    """This turn's longest timed hook or control command, and the report of a stall."""

    def __init__(self, log):
        self.held_for, self.held_by = 0.0, None
        self.throttle = Throttle(log, every=60)

    def timed(self, path, hook, method, args):
        """Run a service's hook for the hub (given to it as `timed`), timed."""
        started = monotonic()
        try:
            return method(*args)
        finally:
            took = monotonic() - started
            if took > self.held_for:
                self.held_for, self.held_by = took, (path, hook)

    def command(self, handle, line):
        """Answer a control line with `handle`, timed; (answer, request) as it gives them."""
        started, inner = monotonic(), self.held_by
        answer, request = handle(line)
        took = monotonic() - started
        # A hook it ran (reload: on_start) names the stall if it took most of the time.
        if took > self.held_for and (self.held_by is inner or self.held_for < took / 2):
            command = [request.get(k) for k in ("cmd", "service")] if request else ["?"]
            self.held_for = took
            self.held_by = ("control command", *(str(c) for c in command if c is not None))
        return answer, request

    def report(self, took, dispatching, events, hub):
        """A turn of `took` seconds (`dispatching` of them handling `events`): count it in
        the hub's stats and say where, one line per culprit a minute."""
        stats = hub.stats
        stats["loop_stalls"] += 1
        stats["longest_stall"] = max(stats["longest_stall"], round(took, 3))
        if self.held_for >= took / 2:
            where = " ".join(str(part) for part in self.held_by)
        elif dispatching >= took / 2:
            where = " or ".join(sorted({_kind(key.data) for key, _ in events})
                                or ["control lines"])
        else:
            where = "timers (ticks, keepalives, journal syncs)"
        self.throttle(where, hub.now, "warning", f"loop stalled {took:.1f} s in {where}: "
                      "every client waited meanwhile")


def _kind(handler):
    """What a ready descriptor's handler is, for a stall's log line."""
    if isinstance(handler, functools.partial):
        return "accepting connections"
    kind = getattr(handler, "__name__", None) or type(handler).__name__    # method or class
    name = getattr(handler, "name", None)       # a service's command
    return _KINDS.get(kind, kind) + (f" of {name}" if isinstance(name, str) else "")


_KINDS = {"HttpConn": "an HTTP request", "StreamConn": "a stream", "ControlConn":
          "a control connection", "Console": "the console", "ChildProc": "a command's output",
          "_accept_control": "accepting control connections", "_on_signal": "a signal"}
