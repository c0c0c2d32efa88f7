"""Channels made on demand from templates (SPEC 10): the hub's templates, the channels they
made, and when an unused one goes.

A channel is made on its first subscribe or publish and goes `idle` seconds after it last
had neither a subscriber nor a publish. Rather than scan every channel, a channel left with
no subscriber is put in a heap under the time it would go; when that time comes it goes, or
(a publish came meanwhile) is put back under its new time, or (it has a subscriber again) is
left out until its last subscriber leaves. One heap entry per channel at most
(`Channel.idle_queued`); the hub's tick asks only for the entries that are due.

The hub calls in; this module calls the hub's service start/stop and leaves Close orders.
"""
import heapq
import itertools
from collections import Counter

from . import clustered, memory, reasons, templates
from .channel import Channel, ChannelsFull, PublishError
from .orders import Close
from .plugins import service_class

SWEEP_AT_MOST = 1000     # channels removed by one sweep: the rest at the next turn, so that
                        # 100,000 channels going at once do not stall the loop
GONE = ("published", "delivered", "journal_failures")   # counters a template keeps of the
                                                        # channels that went (metrics)


class Template:
    """A template's running state: its config, its live channels by path, and the counters
    of its channels that went."""
    __slots__ = ("config", "channels", "gone")

    def __init__(self, config):
        self.config = config
        self.channels = {}
        self.gone = Counter()

    @property
    def path(self):
        return self.config.path

    def total(self, counter):
        """A counter summed over the template's channels, the gone ones included."""
        return self.gone[counter] + sum(getattr(ch, counter) for ch in self.channels.values())

    def clients(self):
        return sum(len(ch.clients) for ch in self.channels.values())


class Provisional:
    """A channel a request names that is not made yet: what web.py checks (tokens, CORS,
    methods) before the hub makes it, so that a refused request makes nothing."""
    __slots__ = ("path", "config", "template")
    clients = frozenset()

    def __init__(self, path, template):
        self.path = path
        self.config = template.config
        self.template = template


class OnDemand:
    def __init__(self, hub):
        self.hub = hub
        self.by_prefix = {}         # "/user/" -> Template
        self._idle = []             # heap of (when it goes, n, channel)
        self._n = itertools.count()  # ties broken by order queued, never by Channel
        self.removed = 0            # channels dropped since the last compaction
        self.uncollected = 0        # ... since the last full collection (memory.give_back)

    def start(self, configs):
        if configs:
            memory.prepare()
        for sc in configs:
            self.by_prefix[templates.prefix_of(sc.path)] = Template(sc)

    def template(self, path):
        """The Template at its section path (`/user/*`), or None."""
        found = self.by_prefix.get(templates.prefix_of(path)) if path.endswith("/*") else None
        return found

    def find(self, path):
        """A Provisional for the channel at `path` a template would make, or None (SPEC 10's
        path rules; exact services are the caller's to look up first)."""
        template = templates.match(self.by_prefix, path) if self.by_prefix else None
        return None if template is None else Provisional(path, template)

    def make(self, path, template, quiet=True):
        """Make the channel at `path`; ChannelsFull at `max_channels`. `quiet`: it starts
        with no subscriber, so its idle clock runs (a subscribe attaches one at once)."""
        if len(template.channels) >= template.config.max_channels:
            raise ChannelsFull(f"{template.path} is at max_channels "
                               f"({template.config.max_channels}): no channel {path} now; "
                               "try again later")
        channel = Channel(template.config, self.hub.now, path, template)
        template.channels[path] = channel
        self.hub.open_channel(channel, template.config)
        if quiet:
            self.went_quiet(channel)
        return channel

    def log_of(self, channel):
        """A log for what a channel's journal says as it opens: throttled per template and
        level (hub.throttle), so that channels made by the thousand (whose journals cannot
        be opened, or each of which restores its events) do not flood the log."""
        key = ("journal", channel.template.path)

        def log(level, text):
            self.hub.throttle((*key, level), self.hub.now, level, text)
        return log

    def drop(self, channel, reason=None):
        """Remove a channel: its service stops, its history goes (a journal keeps it on
        disk), its streams are closed for `reason` (if any)."""
        template, hub = channel.template, self.hub
        if template.channels.get(channel.path) is not channel:
            return
        del template.channels[channel.path]
        if hub.channels.get(channel.path) is channel:
            del hub.channels[channel.path]
        hub.ticking.pop(channel.path, None)
        for counter in GONE:
            template.gone[counter] += getattr(channel, counter)
        self.removed += 1
        self.uncollected += 1
        if hub.cluster is not None:
            clustered.dropped(hub, channel)
        hub.stop_service(channel, closing=True)
        if reason is not None:
            hub.orders.extend(Close(client, reason) for client in channel.clients)
        if not channel.clients:
            # Nothing will call its hooks again (it has no stream for on_disconnect): break
            # the channel <-> service cycle, so that refcounting frees both now.
            channel.service = None

    # -- making them: publish and subscribe ----------------------------------------------------

    def publish(self, path, data, event, client_id):
        """hub.publish to a path no channel has yet: a template's makes it; a publish that
        is refused (bad data, say) leaves none behind."""
        found = self.find(path)
        if found is None:
            raise PublishError(f"no service {path}")
        channel = self.make(path, found.template)
        try:
            return self.hub.publish(path, data, event, client_id)
        except PublishError:
            self.drop(channel)
            raise

    def attach(self, channels, client_id, address, last_id, request):
        """hub.attach with Provisional channels among `channels`: make them, then attach;
        if the stream is refused (Refuse, ChannelsFull), drop the ones made for it."""
        made, real = [], []
        try:
            for channel in channels:
                if type(channel) is Provisional:
                    # (made meanwhile by another path of this request, or not)
                    found = self.hub.channels.get(channel.path)
                    if found is None:
                        found = self.make(channel.path, channel.template, quiet=False)
                        made.append(found)
                    channel = found
                real.append(channel)
            return self.hub.attach(real, client_id, address, last_id, request)
        except Exception:
            for channel in made:
                self.drop(channel)
            raise

    # -- idle channels ------------------------------------------------------------------------

    def went_quiet(self, channel):
        """A channel now has no subscriber: it goes `idle` seconds after its last use."""
        if not channel.idle_queued:
            self._queue(channel, max(channel.last_sent, channel.used)
                        + channel.template.config.idle)

    def _queue(self, channel, when):
        channel.idle_queued = True
        heapq.heappush(self._idle, (when, next(self._n), channel))
        if when < self.hub.due:
            self.hub.due = when

    def sweep(self, now):
        """Remove the channels whose idle time is up; when the next one may be."""
        heap = self._idle
        budget = SWEEP_AT_MOST
        while heap and heap[0][0] <= now:
            if budget == 0:
                self._tidy(caught_up=False)
                return now      # more are due: at the next turn
            budget -= 1
            channel = heapq.heappop(heap)[2]
            channel.idle_queued = False
            if channel.clients or channel.template.channels.get(channel.path) is not channel:
                continue    # in use again (its last subscriber queues it), or gone already
            when = max(channel.last_sent, channel.used) + channel.template.config.idle
            if when > now:
                self._queue(channel, when)      # a publish came meanwhile
            else:
                self.drop(channel)
        self._tidy(caught_up=True)
        return heap[0][0] if heap else float("inf")

    def _tidy(self, caught_up):
        """Compact once many went (as many as are left, at least COMPACT_AFTER), and at the
        end of a wave (nothing more due now, more went than are left): the cost, O(live),
        is amortised over the removals. The free lists are emptied too once a wave is over
        and few are left (a full collection walks every live object)."""
        removed, live = self.removed, len(self.hub.channels)
        collect = caught_up and self.uncollected >= max(memory.SETTLE_AFTER, 8 * live)
        if collect or removed >= max(memory.COMPACT_AFTER, live) or (
                caught_up and removed >= memory.SETTLE_AFTER and removed > live):
            self.compact(collect)

    def compact(self, collect=False):
        """After many channels went: shrink the dicts that held them (a dict does not
        shrink as keys go) and give the freed memory back (memory.give_back)."""
        self.removed = 0
        if collect:
            self.uncollected = 0
        memory.shrink(self.hub.channels)
        memory.shrink(self.hub.ticking)
        for template in self.by_prefix.values():
            memory.shrink(template.channels)
        memory.give_back(collect)

    # -- reload -------------------------------------------------------------------------------

    def reload(self, configs):
        """Take the new config's templates: a removed one closes its channels' streams
        (reason `removed`), a changed one restarts its channels' services (streams stay)."""
        wanted = {templates.prefix_of(sc.path): sc for sc in configs}
        if wanted:
            memory.prepare()
        for prefix in [p for p in self.by_prefix if p not in wanted]:
            template = self.by_prefix.pop(prefix)
            for channel in list(template.channels.values()):
                self.drop(channel, reasons.REMOVED)
        for prefix, sc in wanted.items():
            template = self.by_prefix.get(prefix)
            if template is None:
                self.by_prefix[prefix] = Template(sc)
                continue
            cls = service_class(sc)
            changed = template.config != sc
            template.config = sc
            for channel in list(template.channels.values()):    # (hooks may make more)
                if changed or type(channel.service) is not cls:
                    self.hub.stop_service(channel)
                    self.hub.start_service(channel, sc)
                else:
                    channel.config = sc
