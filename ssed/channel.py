"""What the hub keeps per service path across reloads (`Channel`: its clients, history,
journal and counters) and per open stream (`Client`).

A channel's history and its journal go together: `record` keeps an event (written to the
journal first, since an event that cannot be kept must not be heard), `restore` refills the
history after a restart. A failing journal is logged once per episode (journal.Journal's
Episodes), counted, and refuses the publishes it cannot keep.
"""
import json
import os

from . import sse
from .history import Event, History
from .templates import journal_file


class PublishError(Exception):
    """A publish that cannot be done; the text goes back to the publisher."""


class ClusterUnavailable(PublishError):
    """A publish Redis did not take (down, or answered with an error), or whose outcome is
    unknown; HTTP answers it with 503 and Retry-After."""


class ChannelsFull(PublishError):
    """A publish that would make a channel of a template already at its `max_channels`:
    come back later (HTTP: 503 with Retry-After)."""


def checked(config, path, data, event):
    """The type a publish's event gets, or PublishError: data not text, a type that would
    inject fields, not JSON where the service takes JSON only. A publisher that names no
    type gets the service's `event` (SPEC 3)."""
    if not isinstance(data, str):
        raise PublishError("data must be a string")
    problem = sse.bad_event_type(event)
    if problem:
        raise PublishError(problem)
    if config.json:
        try:
            json.loads(data)
        except ValueError as exc:
            raise PublishError(f"{path} takes JSON data only: {exc}") from None
    return event or config.event or None


class Client:
    """One open stream. What waits to be sent (`pending`, `queued`, `sent`) belongs to the
    outbox; `send` (its socket's) and `conn` to the loop."""
    __slots__ = ("id", "address", "since", "channels", "last_event_id", "idle_since", "sent",
                 "send", "pending", "queued", "conn")

    def __init__(self, id, address, since, channels, last_event_id=None):
        self.id = id
        self.last_event_id = last_event_id      # what it resumes after (None: a new one)
        self.address = address
        self.since = since
        self.channels = channels
        self.idle_since = since
        self.sent = 0
        self.send = None
        self.pending = None
        self.queued = 0
        self.conn = None

    def info(self):
        return {"id": self.id, "address": self.address, "since": self.since,
                "bytes_sent": self.sent, "bytes_queued": self.queued}


class Channel:
    """A service path, or a template's channel: its clients, history, journal and counters.
    A channel shares its template's config (`config.path` is the template's `/user/*`,
    `path` its own) and knows its `template` (ondemand.Template; None for a service)."""

    def __init__(self, config, now, path=None, template=None):
        self.path = path or config.path
        self.template = template
        self.used = now             # when it last had a subscriber leave or a publish to
                                    # one client (broadcasts set last_sent): its idle clock
        self.idle_queued = False    # whether it is in the hub's idle heap
        self.config = config
        self.clients = set()
        self.members = 0            # bumped when `clients` changes: broadcasts of one
                                    # membership may share a write (outbox.Outbox.fan_out)
        self.history = History(config.history)
        self.service = None
        self.replay_last = False    # its service's (service.Service)
        self.hears = False          # whether its service has an on_event
        self.next_tick = None
        self.last_sent = now        # when it last broadcast
        self.published = 0
        self.delivered = 0
        self.child = None           # the run of its command (an orders.Spawn), if any
        self.journal = None         # its Journal, when its history is durable
        self.journal_failures = 0   # publishes refused because the journal write failed

    def event(self, data, event, clock, now_ms):
        """The Event a publish makes, framed once, with the next id of `clock`; or
        PublishError (see `checked`)."""
        event = checked(self.config, self.path, data, event)
        try:
            return Event(clock.next(now_ms), data, event)
        except UnicodeEncodeError:
            raise PublishError("data is not valid Unicode text") from None

    # -- the history, durable when there is a journal --------------------------------------

    def record(self, ev, now):
        """Keep a broadcast event: in the journal first (PublishError if it cannot be
        kept), then in the history."""
        journal = self.journal
        if journal is None:
            self.history.append(ev)
            return
        try:
            journal.append(ev)
        except OSError as exc:
            why = f"write failed: {exc.strerror or exc}"
            self.journal_failures += 1
            journal.trouble.failed(now, why + "; publishes are refused")
            raise PublishError(f"{self.path}: journal {why}") from None
        if journal.trouble.failing:
            journal.trouble.recovered(now)
        self.history.append(ev)
        self.compact(self.config.history, now)

    def open_journal(self, opener, sc, log, now, restore):
        """Open the journal `sc` names (with `opener(path)`); the keys of the events it
        gave back to the history (on start: what a restart must not lose), else ()."""
        try:
            self.journal = opener(self.journal_path(sc))
            records = self.journal.load(sc.history if restore else 0)
        except OSError as exc:
            self.journal = None
            log("error", f"service {self.path}: journal {self.journal_path(sc)}: "
                f"{exc.strerror or exc}; "
                "history will not survive a restart")
            return ()
        for key, type_, data in records:
            self.history.append(Event(key, data, type_))
        if not restore:
            self.compact(sc.history, now, force=True)
        elif records:
            log("info", f"service {self.path}: {len(records)} events restored from "
                f"{self.journal_path(sc)}")
        return [key for key, _, _ in records]

    def journal_path(self, sc):
        """The journal file of this channel under `sc`: a template's `journal` is the
        directory its channels' journals go in, one file each."""
        if self.template is None or not sc.journal:
            return sc.journal
        return os.path.join(sc.journal, journal_file(self.path))

    def retune_journal(self, opener, sc, log, now):
        """A reload changed the service: follow a journal path that changed (or went)."""
        if sc.journal == self.config.journal:
            return
        self.close_journal()
        if sc.journal:
            self.open_journal(opener, sc, log, now, restore=False)

    def compact(self, keep, now, force=False):
        journal = self.journal
        try:
            if journal.compact(self.history.ring, keep, force):
                journal.compaction.recovered(now)
        except OSError as exc:
            journal.compaction.failed(now, f"{exc.strerror or exc}; the file grows until it "
                                      "succeeds")

    def sync(self, now):
        """The once-a-second fsync (journal_sync = everysec), part of the failure episode."""
        journal = self.journal
        if journal is None:
            return
        try:
            if journal.sync() and journal.trouble.failing:
                journal.trouble.recovered(now)
        except OSError as exc:
            journal.trouble.failed(now, f"fsync failed: {exc.strerror or exc}")

    @property
    def journal_failing(self):
        return self.journal is not None and self.journal.trouble.failing

    def close_journal(self):
        if self.journal is not None:
            self.journal.close()
            self.journal = None
