"""The public API for services (SPEC section 9): subclass `Service`, raise `Refuse`.

A service knows its clients and publishes events; it never sees a socket. Everything it asks
of the daemon goes through the hub it was given.
"""
from . import clustered
from .channel import Client, ClusterUnavailable
from .later import Later


class Refuse(Exception):
    """Raised by `on_connect` to turn a subscriber away with an HTTP status."""

    def __init__(self, status=403, reason="refused"):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Service:
    """Base of every service, the built-in sources included.

    Attributes: `path` (on a template: the channel's own), `config` (its ServiceConfig),
    `options` (extra config keys, for plugins), `clients` (the set of subscribed clients),
    `now` (the loop's wall clock).
    """

    # Whether this service's events are its current state (a file's content) rather than
    # news: then a new subscriber without a Last-Event-ID first gets the last held event.
    replay_last = False

    def __init__(self, hub, channel, config):
        self._hub = hub
        self._channel = channel
        self.config = config
        self.path = channel.path      # a template's channel: its own path (SPEC 10)
        self.options = config.options

    # -- what a service can do --------------------------------------------------------

    @property
    def clients(self):
        return self._channel.clients

    @property
    def now(self):
        return self._hub.now

    @property
    def last_event(self):
        """The newest event this service's history holds (`id`, `data`, `type`), or None
        (none yet, or `history = 0`). In a cluster (SPEC 12), the newest read back from
        Redis, whichever node published it."""
        ring = self._channel.history.ring
        return ring[-1] if ring else None

    def publish(self, data, event=None, client=None):
        """Send an event to every client of this service; its id.

        `client` sends it to one client only, and it is never replayed: a Client (the one
        `on_connect` is given, or one of `self.clients`) means exactly that stream; a client
        id (str) means every open stream with that id, as `ssectl publish --client` does.
        From `on_connect`, either reaches the stream being connected too: it gets the event
        after its retry, session event and replay (or priming id), before any live event,
        in id order (and nothing at all if a hook then refuses it). Anything else is a
        TypeError. In a cluster (SPEC 12) the event goes to Redis and its id comes later:
        publish returns None then (and logs an event Redis did not take).
        """
        if client is not None and not isinstance(client, str):
            if type(client) is not Client:
                raise TypeError(f"{self.path}: publish(client=...) takes a Client or a client "
                                f"id (str), not {type(client).__name__}")
        event = self.config.event if event is None else event
        hub = self._hub
        # (An event for one stream of this node stays on it: any node may send one.)
        if hub.cluster is not None and type(client) is not Client \
                and not clustered.may_publish(hub, self._channel):
            return None
        try:
            result = hub.publish(self.path, data, event, client)
        except ClusterUnavailable as exc:
            return self._not_published(exc)
        if type(result) is Later:
            result.then(lambda done: self._not_published(done)
                        if isinstance(done, Exception) else None)
            return None
        return result[0].id

    def _not_published(self, exc):
        """In a cluster, a publish Redis did not take: logged (a minute apart), not raised,
        since a source cannot do better than try again on its next tick."""
        self._hub.throttle(("cluster publish", self.path), self._hub.now, "warning",
                           f"{self.path}: event not published: {exc}")

    def spawn(self, command, callback, timeout=None):
        """Run `command` with /bin/sh in the config file's directory, without blocking; once
        it is done, the loop calls `callback(output, error)`:

        - `output`: bytes, what the command wrote to its standard output (not decoded, its
          final newline kept), at most about 1 MiB (`ssed.limits.MAX_SOURCE_EVENT`);
        - `error`: None when the command exited with status 0; else a short text saying
          why (a non-zero exit status, a signal, killed after `timeout`, output over the
          limit, cannot run), and `output` then holds what it wrote before that (b"" if it
          never ran). An error is never raised: check it in the callback.

        Returns True once the run is asked for (the loop starts it as soon as the calling
        hook returns). One child at a time per service: while one is still running, returns
        False and the callback is not called; a command that cannot be started reaches the
        callback with the error (`cannot start it: ...`). The child is killed
        after `timeout` seconds (default: the service's interval), or when the service stops
        (after `on_stop`; its callback then gets an error).
        """
        return self._hub.spawn(self, command, callback, timeout or self.config.interval)

    def log(self, message, level="info"):
        self._hub.log(level, f"{self.path}: {message}")

    # -- hooks, all optional ----------------------------------------------------------

    def on_start(self):
        """Called once when the service starts (and again after a reload changed it)."""

    def on_stop(self):
        """Called when the service is removed, replaced by a reload, or the daemon stops."""

    def on_connect(self, client, request):
        """A subscriber arrives; raise Refuse(status, reason) to turn it away. What this
        publishes with `client=client` reaches the new stream first (see `publish`)."""

    def on_disconnect(self, client, reason):
        """A subscriber left; `reason` says why (eof, kicked, slow, banned, ...)."""

    def on_lease(self):
        """In a cluster (SPEC 12): this node has just become the one that runs this service's
        `on_tick` (it holds the path's lease). A source whose events say what changed starts
        again as at start, so the new holder's first tick publishes the whole current value."""

    def on_tick(self):
        """Called every `interval` seconds."""

    def on_event(self, event):
        """Called with each event broadcast on this service (`event.id`, `.data`, `.type`),
        once it is sent, whoever published it: this service, a publisher, or in a cluster
        (SPEC 12) any node, this one included once Redis gives it back. In a cluster, also
        with each event a node reads into the history from Redis (at start, or when a
        channel is made), which may be older than some it was given live: compare ids.
        Not for events to one client, nor for what this hook itself publishes here. A
        service whose events say what changed keeps its picture of the whole with it, on
        every node (the `quotes` source does)."""

    def on_admin(self, args):
        """The `admin` control command; what it returns is sent back."""
        raise NotImplementedError(f"{self.path} takes no admin commands")
