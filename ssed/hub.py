"""The hub: services by path (their channels), the open streams and who they are, the id
clock, bans, per-address counts and the daemon's counters.

No I/O and no clock: the loop sets `now`, calls in (publish, attach, detach, tick, the
control commands), and after each call carries out the work orders the hub left in
`orders` (orders.FanOut, Close, Spawn, Kill). The hub never calls the loop.
"""
import os
import traceback
from collections import Counter

from . import auth, clustered, reasons, sse
from .addresses import in_networks
from .admission import PerAddress
from .bans import Bans
from .channel import Channel, ChannelsFull, Client, PublishError
from .clientids import ClientIds
from .history import IdClock
from .journal import open_journal
from .keepalive import quiet_streams
from .joining import Joining, joined, preamble
from .log import Throttle
from .ondemand import OnDemand, Provisional
from .orders import Close, FanOut, Kill, Spawn
from .plugins import service_class
from .service import Refuse, Service

__all__ = ["Hub", "Client", "ChannelsFull", "PublishError"]

HOOK_LOG_EVERY = 60.0   # seconds between two tracebacks of one service's hook


class Hub:
    def __init__(self, config, log, now=0.0, journals=None, timed=None):
        """`journals(path, sync, log)` opens a Journal (journal.open_journal); `timed(path,
        hook, method, args)` runs a service hook (the loop's times them, to name a stall)."""
        self.config = config
        self.log = log
        self.now = now
        self.orders = []            # what the loop is to do after this call (orders.py)
        self.journals = journals or open_journal
        self.timed = timed or _untimed
        self.clock = IdClock()
        self.channels = {}          # path -> Channel: the services and templates' channels
        self.ticking = {}           # path -> Channel, of those whose service has on_tick
        self.ondemand = OnDemand(self)  # the templates and the channels they made
        self.by_id = ClientIds()    # open streams by client id
        self.per_ip = PerAddress()      # address -> open streams
        self.client_count = 0       # open streams (the sum of per_ip, kept, not summed)
        self.bans = Bans()
        self.started = now
        self.due = now              # when tick() next has something to do
        self.ticked_at = now
        self.next_keepalive = now
        self.stats = Counter()      # events_published, events_delivered, bytes_sent,
                                    # journal_failures, loop_stalls, longest_stall
        self.dropped = Counter()    # reason -> clients closed for it
        self.refused = Counter()    # reason -> connections refused for it
        self.joining = None         # the Joining whose on_connect hooks are running
        self.throttle = Throttle(log, every=HOOK_LOG_EVERY)
        self.expiring = auth.Expiring()    # streams to close when their JWT expires
        self.jwt, self.max_head = auth.verifier(config), auth.max_head(config)
        self.cluster = None         # cluster.Cluster, with [cluster] (SPEC 12)

    # -- services --------------------------------------------------------------------

    def start(self):
        for sc in self.config.services:
            self._add_channel(sc)
        self.ondemand.start(self.config.templates)

    def stop(self):
        # (a list: an on_stop may publish, and so make a template's channel)
        for channel in list(self.channels.values()):
            self.stop_service(channel, closing=True)
        if self.cluster is not None:
            self.cluster.stop(self.now)

    def sync_journals(self):
        for channel in self.channels.values():
            if channel.journal is not None:
                channel.sync(self.now)

    def journal_failing(self):
        """Whether a journal is failing now (for /healthz)."""
        return any(ch.journal_failing for ch in self.channels.values())

    def _open_journal(self, path):
        return self.journals(path, self.config.journal_sync, self.log)

    def _add_channel(self, sc):
        self.open_channel(Channel(sc, self.now), sc)

    def open_channel(self, channel, sc):
        """Put a new channel in place: its journal read back, its service started."""
        self.channels[channel.path] = channel
        if sc.journal:
            log = self.log if channel.template is None else self.ondemand.log_of(channel)
            for key in channel.open_journal(self._open_journal, sc, log, self.now,
                                            restore=True):
                self.clock.advance(key)
        self.start_service(channel, sc)
        if self.cluster is not None:
            clustered.opened(self, channel)

    def start_service(self, channel, sc):
        channel.retune_journal(self._open_journal, sc, self.log, self.now)
        flipped = channel.config.cluster != sc.cluster and self.cluster is not None
        channel.config = sc
        if flipped:     # a reload took it into the cluster (or out): its history follows
            (clustered.joined if sc.cluster else clustered.dropped)(self, channel)
        channel.history.resize(sc.history)
        channel.service = service = service_class(sc)(self, channel, sc)
        channel.replay_last = type(service).replay_last
        channel.hears = type(service).on_event is not Service.on_event
        ticks = type(service).on_tick is not Service.on_tick
        channel.next_tick = self.now if ticks else None     # first tick at once
        if ticks:
            self.ticking[channel.path] = channel
        else:
            self.ticking.pop(channel.path, None)
        self.due = self.now
        self.call(channel, "on_start")

    def stop_service(self, channel, closing=False):
        self.call(channel, "on_stop")
        if closing:
            channel.close_journal()
        if channel.child is not None:
            self.orders.append(Kill(channel.child, "service stopped"))
            channel.child = None

    def call(self, channel, hook, *args):
        """Run a service hook; an exception is logged with the service's name, not raised."""
        try:
            return self.timed(channel.path, hook, getattr(channel.service, hook), args)
        except Exception as exc:
            self.hook_failed(channel.path, hook, exc)
            return None

    def hook_failed(self, path, hook, exc):
        """Log a service hook's exception with its traceback: the first of each (service,
        hook), then at most one a minute with the count, since a hook that raises on every
        connect or tick would otherwise flood the log (issue 12: 44 MB in 15 s). A template's
        channels share their template's key: a thousand channels failing alike, one line."""
        found = self.channels.get(path)
        key = path if found is None or found.template is None else found.template.path
        self.throttle((key, hook), self.now, "error",
                      f"service {path}: {hook} failed: {exc!r}\n" + traceback.format_exc())

    def expire_at(self, client, when):
        """Close `client` at `when` (its token's exp plus the leeway)."""
        self.expiring.add(client, when, self.client_count)
        self.due = min(self.due, when)

    def reload(self, config):
        """Take a new, valid config: start, stop and restart services; keep open streams."""
        old, self.config = self.config, config
        self.ondemand.reload(config.templates)
        self.jwt, self.max_head = auth.verifier(config), auth.max_head(config)
        wanted = {sc.path: sc for sc in config.services}
        for path in [sc.path for sc in old.services if sc.path not in wanted]:
            channel = self.channels.pop(path)
            self.ticking.pop(path, None)
            self.stop_service(channel, closing=True)
            self.orders.extend(Close(client, reasons.REMOVED) for client in channel.clients)
        for sc in config.services:
            channel = self.channels.get(sc.path)
            if channel is not None and channel.template is not None:
                self.ondemand.drop(channel, reasons.REMOVED)    # a service takes its path
                channel = None
            if channel is None:
                self._add_channel(sc)
            elif channel.config != sc or type(channel.service) is not service_class(sc):
                # (new settings, or its module's code was read again)
                self.stop_service(channel)
                self.start_service(channel, sc)
            else:
                channel.config = sc
        for channel in self.channels.values():
            if channel.journal is not None:
                channel.journal.sync_policy = config.journal_sync

    # -- events ----------------------------------------------------------------------

    def publish(self, path, data, event=None, client_id=None):
        """Frame one event and hand it to its subscribers, or to one client (`client_id`:
        an id, or a Client from a service): (Event, delivered). In a cluster, a Later of
        (id, delivered) instead: the event goes to Redis, and comes back to deliver."""
        channel = self.channels.get(path)
        if self.cluster is not None and type(client_id) is not Client:
            later = clustered.publish(self, path, channel, data, event, client_id)
            if later is not None:
                return later
        if channel is None:
            return self.ondemand.publish(path, data, event, client_id)
        ev = channel.event(data, event, self.clock, int(self.now * 1000))
        if self.cluster is not None and channel.config.cluster:
            clustered.unnumbered(ev)        # (a Client's, the only kind that comes here)
        if client_id is None:
            try:
                channel.record(ev, self.now)
            except PublishError:
                self.stats["journal_failures"] += 1
                raise
        return ev, self.send(channel, ev, client_id)

    def send(self, channel, ev, client_id):
        """Fan a recorded event out to the channel's streams, or to one client's: how many."""
        if client_id is None:
            targets = channel.clients
            channel.last_sent = self.now
        else:
            targets = self._one_client(channel, client_id, ev)
            for c in targets:
                c.idle_since = self.now
            channel.used = self.now
        channel.published += 1
        channel.delivered += len(targets)
        self.stats["events_published"] += 1
        self.stats["events_delivered"] += len(targets)
        if targets:
            self.orders.append(FanOut(ev.wire, targets, (channel, channel.members)
                                      if client_id is None else None))
        if channel.hears and client_id is None:
            self.heard(channel, ev)
        return len(targets)

    def heard(self, channel, ev):
        """The service's on_event; not again for what it publishes on its channel from it."""
        channel.hears = False
        try:
            self.call(channel, "on_event", ev)
        finally:
            channel.hears = True

    def _one_client(self, channel, to, ev):
        """The open streams of this service an event for one client reaches: a Client, that
        stream; a client id, every stream of it. A stream still in its on_connect takes the
        event after its preamble (Joining)."""
        joining = self.joining
        if joining is not None and (to is joining.client or to == joining.client.id) \
                and channel in joining.client.channels:
            joining.sent.append((channel, ev))
        if type(to) is Client:
            return [to] if to in channel.clients else []
        return [c for c in self.streams_of(to) if channel in c.channels]

    def tick(self, now):
        """Run due timers and, every quarter of `keepalive`, the keepalive sweep; the time
        the next thing is due. Cheap when nothing is due: the loop calls it every turn."""
        self.now = now
        went_back, self.ticked_at = now < self.ticked_at, now
        if now < self.due and not went_back:
            return self.due
        due = self.ondemand.sweep(now)
        if self.cluster is not None:
            due = min(due, self._cluster_tick(now))
        for channel in list(self.ticking.values()):
            if channel.next_tick is not None and channel.next_tick > now + 2 * channel.config.interval:
                channel.next_tick = now     # the wall clock went back: do not stall
            if channel.next_tick is not None and channel.next_tick <= now:
                interval = channel.config.interval
                # Catch up after a stall without firing a burst of ticks.
                channel.next_tick = max(channel.next_tick + interval, now + interval / 2)
                if self.cluster is None or clustered.runs(self, channel, now):
                    self.call(channel, "on_tick")
            if channel.next_tick is not None:
                due = min(due, channel.next_tick)
        if now >= self.next_keepalive:
            # At the next client's due time, but sweeping at most 10 times a second.
            self.next_keepalive = max(self._keepalive(now), now + 0.1)
        self.orders.extend(Close(c, reasons.EXPIRED) for c in self.expiring.due(now))
        self.due = min(due, self.next_keepalive, self.expiring.next())
        return self.due

    def _cluster_tick(self, now):
        """The cluster's timers; a bug in them is logged (a second apart), never fatal."""
        try:
            return self.cluster.tick(now)
        except Exception:
            self.throttle(("bug", "cluster"), now, "error",
                          "bug: the cluster's timers raised\n" + traceback.format_exc())
            return now + 1.0

    def _keepalive(self, now):
        """A comment to every stream that has heard nothing for `keepalive` seconds; when
        the next one will have."""
        idle, due = quiet_streams(self.channels.values(), now, self.config.keepalive)
        if idle:
            self.orders.append(FanOut(sse.comment("keepalive"), idle))
        return due

    # -- clients ---------------------------------------------------------------------

    def new_client_id(self):
        return self.by_id.new()

    def streams_of(self, client_id):
        return self.by_id.streams(client_id)

    def subscribe(self, paths, client_id, address, last_id, request):
        """Add a stream to the services (or templates' channels) at `paths`; (client, the
        bytes it gets before any live event). Raises Refuse, or ChannelsFull."""
        return self.attach([self.channels.get(p) or self.ondemand.find(p) for p in paths],
                           client_id, address, last_id, request)

    def attach(self, channels, client_id, address, last_id, request):
        """`subscribe`, given the services' channels (or ondemand.Provisional ones, which
        are made for it: ChannelsFull if one cannot be, none left made if it is refused)."""
        for channel in channels:
            if type(channel) is Provisional:
                return self.ondemand.attach(channels, client_id, address, last_id, request)
        client = Client(client_id or self.new_client_id(), address, self.now, channels,
                        last_id)
        joining = None
        for channel in channels:
            if type(channel.service).on_connect is not Service.on_connect:
                joining = self._run_on_connect(client, channels, request)
                break
        if self.orders:
            self._pin_orders()
        for channel in channels:
            channel.clients.add(client)
            channel.members += 1
        self.by_id.add(client)
        self.per_ip.add(address)
        self.client_count += 1
        if joining is None:
            return client, preamble(self.config.retry, self.clock, int(self.now * 1000),
                                    client, channels, last_id)
        for channel, _ in joining.sent:
            channel.delivered += 1
        self.stats["events_delivered"] += len(joining.sent)
        return client, joined(self.config.retry, joining, last_id)

    def _run_on_connect(self, client, channels, request):
        """Every on_connect hook of the new stream, or Refuse; what they sent it (a Joining).

        The stream is not in the hot set yet, so what a hook publishes to it waits in the
        Joining and follows its preamble. A refused stream takes nothing with it: the events
        stay unsent and uncounted."""
        # The priming id is taken before the hooks run, so that everything they publish is
        # greater than it and can follow it, in id order.
        joining = Joining(client, self.clock.prime(int(self.now * 1000)))
        outer, self.joining = self.joining, joining
        try:
            for channel in channels:
                if type(channel.service).on_connect is not Service.on_connect:
                    refused = self._on_connect(channel, client, request)
                    if refused is not None:
                        raise refused
        finally:
            self.joining = outer
        return joining

    def _pin_orders(self):
        """A stream joins while broadcasts wait to be carried out (what its on_connect
        hooks published, say): they go to the members they were published to, not to this
        stream, which gets them from the history if at all."""
        for order in self.orders:
            if type(order) is FanOut and type(order.clients) is set:
                order.clients = tuple(order.clients)

    def _on_connect(self, channel, client, request):
        try:
            self.timed(channel.path, "on_connect", channel.service.on_connect,
                       (client, request))
        except Refuse as refuse:
            return refuse
        except Exception as exc:
            self.hook_failed(channel.path, "on_connect", exc)
            # A hook that may refuse but crashed cannot vouch for the client: fail closed.
            return Refuse(500, "internal error")
        return None

    def detach(self, client, reason):
        """Forget a closed stream (the loop has closed its socket)."""
        for channel in client.channels:
            if client in channel.clients:
                channel.clients.discard(client)
                channel.members += 1
                self.call(channel, "on_disconnect", client, reason)
                if channel.template is not None and not channel.clients:
                    channel.used = self.now
                    self.ondemand.went_quiet(channel)
        self.by_id.remove(client)
        self.client_count -= 1
        self.per_ip.remove(client.address)
        if reason not in reasons.LEFT:
            self.dropped[reason] += 1

    def kick(self, path, client_id):
        channel = self.channels.get(path)
        if channel is None:
            raise PublishError(f"no service {path}")
        doomed = [c for c in self.streams_of(client_id) if channel in c.channels]
        self.orders.extend(Close(c, reasons.KICKED) for c in doomed)
        return len(doomed)

    # -- bans ------------------------------------------------------------------------

    def ban(self, network, seconds):
        """Refuse `network` (an ip_network) for `seconds`; close its open streams."""
        self.bans[network] = self.now + seconds
        doomed = {c for ch in self.channels.values() for c in ch.clients
                  if in_networks(c.address, (network,))}
        self.orders.extend(Close(c, reasons.BANNED) for c in doomed)
        return len(doomed)

    def unban(self, network):
        return 1 if self.bans.pop(network, None) is not None else 0

    def banned(self, address):
        return self.bans.banned(address, self.now)

    # -- children --------------------------------------------------------------------

    def spawn(self, service, command, callback, timeout):
        """Leave an order to run `command` for `service` (one run at a time): whether it was
        left."""
        channel = self.channels.get(service.path)
        if channel is None or channel.service is not service or channel.child is not None:
            return False

        def done(output, error):
            channel.child = None
            if channel.service is service:
                try:
                    callback(output, error)
                except Exception as exc:
                    self.hook_failed(channel.path, "command callback", exc)

        # Commands run beside the config file, as its relative paths are.
        cwd = None if self.config.file == "<default>" else os.path.dirname(
            os.path.abspath(self.config.file))
        channel.child = Spawn(command, timeout, done, channel.path, cwd)
        self.orders.append(channel.child)
        return True


def _untimed(path, hook, method, args):
    return method(*args)
