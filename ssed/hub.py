"""The hub: services by path, their subscribed clients and histories, the id clock, bans,
per-address counts and the daemon's counters.

No I/O: the loop hands it `now` and an `io` object that does what needs a file descriptor
(`fanout(wire, clients)`, `close(client, reason)`, `spawn(...)`). Tests pass a fake one.
"""
import base64
import ipaddress
import json
import os
import secrets
import traceback
from collections import Counter

from . import sse
from .history import Event, History, IdClock, merge, parse_id
from .log import Throttle
from .plugins import service_class
from .service import Refuse, Service


# Reasons a stream ends that are the client's doing or a clean stop, not a drop.
CLIENT_LEFT = ("eof", "reset", "shutdown")
HOOK_LOG_EVERY = 60.0   # seconds between two tracebacks of one service's hook


class PublishError(Exception):
    """A publish that cannot be done; the text goes back to the publisher."""


class Client:
    """One open stream. `send`, `pending`, `queued` and `conn` belong to the loop."""
    __slots__ = ("id", "address", "since", "channels", "idle_since", "sent", "send",
                 "pending", "queued", "conn")

    def __init__(self, id, address, since, channels):
        self.id = id
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


class Joining:
    """A stream whose on_connect hooks are running: the priming id taken before them, and
    the events published to it meanwhile, as (channel, event), to follow its preamble."""
    __slots__ = ("client", "prime", "sent")

    def __init__(self, client, prime):
        self.client = client
        self.prime = prime
        self.sent = []


class Channel:
    """What a service path holds across reloads: its clients, history and counters."""

    def __init__(self, config):
        self.path = config.path
        self.config = config
        self.clients = set()
        self.members = 0            # bumped when `clients` changes: fan-outs of one
                                    # membership may share a write (Loop.fanout)
        self.history = History(config.history)
        self.service = None
        self.next_tick = None
        self.last_sent = 0.0     # when it last broadcast (set to the start by the hub)
        self.published = 0
        self.delivered = 0
        self.child = None       # the command this service is running, if any
        self.journal = None     # its Journal, when its history is durable
        self.journal_failures = 0   # publishes refused because the journal write failed


class Hub:
    def __init__(self, config, io, log, now=0.0):
        self.config = config
        self.io = io
        self.log = log
        self.now = now
        self.clock = IdClock()
        self.channels = {}
        self.by_id = {}             # client id -> Client, or a tuple when streams share it
        self.per_ip = Counter()
        self.client_count = 0       # open streams (the sum of per_ip, kept, not summed)
        self.bans = {}              # ip_network -> until
        self.started = now
        self._ids = []              # a pool of fresh client ids
        self.due = now              # when tick() next has something to do
        self.ticked_at = now
        self.next_keepalive = now
        self.stats = Counter()      # events_published, events_delivered, bytes_sent,
                                    # journal_failures
        self.dropped = Counter()    # reason -> clients closed for it
        self.refused = Counter()    # reason -> connections refused for it
        self.joining = None         # the Joining whose on_connect hooks are running
        self.throttle = Throttle(log, every=HOOK_LOG_EVERY)
        self.timed = _untimed       # runs hooks; the loop's times them (a stall names one)

    # -- services --------------------------------------------------------------------

    def start(self):
        for sc in self.config.services:
            self._add_channel(sc)

    def stop(self):
        for channel in self.channels.values():
            self._stop_service(channel, closing=True)

    def sync_journals(self):
        for channel in self.channels.values():
            journal = channel.journal
            if journal is not None:
                try:
                    if journal.sync() and journal.trouble.failing:
                        journal.trouble.recovered(self.now)
                except OSError as exc:
                    journal.trouble.failed(self.now, f"fsync failed: {exc.strerror or exc}")

    def journal_failing(self):
        """Whether a journal is failing now (for /healthz)."""
        return any(ch.journal is not None and ch.journal.trouble.failing
                   for ch in self.channels.values())

    def _add_channel(self, sc):
        channel = Channel(sc)
        channel.last_sent = self.now
        self.channels[sc.path] = channel
        if sc.journal:
            self._open_journal(channel, sc, restore=True)
        self._start_service(channel, sc)

    def _open_journal(self, channel, sc, restore):
        """Open the service's journal; on start, refill its history and move the clock on."""
        try:
            channel.journal = self.io.open_journal(sc.journal)
            records = channel.journal.load(sc.history if restore else 0)
        except OSError as exc:
            channel.journal = None
            self.log("error", f"service {sc.path}: journal {sc.journal}: {exc.strerror or exc}; "
                     "history will not survive a restart")
            return
        for key, type_, data in records:
            channel.history.append(Event(key, data, type_))
            self.clock.advance(key)
        if not restore:
            self._compact(channel, sc.history, force=True)
        elif records:
            self.log("info", f"service {sc.path}: {len(records)} events restored from "
                     f"{sc.journal}")

    def _start_service(self, channel, sc):
        if channel.journal is not None and sc.journal != channel.config.journal:
            channel.journal.close()
            channel.journal = None
            if sc.journal:
                self._open_journal(channel, sc, restore=False)
        elif channel.journal is None and sc.journal and channel.config.journal != sc.journal:
            self._open_journal(channel, sc, restore=False)
        channel.config = sc
        channel.history.resize(sc.history)
        channel.service = service_class(sc)(self, channel, sc)
        ticks = type(channel.service).on_tick is not Service.on_tick
        channel.next_tick = self.now if ticks else None     # first tick at once
        self.due = self.now
        self.call(channel, "on_start")

    def _stop_service(self, channel, closing=False):
        self.call(channel, "on_stop")
        if closing and channel.journal is not None:
            channel.journal.close()
            channel.journal = None
        if channel.child is not None:
            self.io.kill(channel.child)
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
        connect or tick would otherwise flood the log (issue 12: 44 MB in 15 s)."""
        self.throttle((path, hook), self.now, "error",
                      f"service {path}: {hook} failed: {exc!r}\n" + traceback.format_exc())

    def reload(self, config):
        """Take a new, valid config: start, stop and restart services; keep open streams."""
        self.config = config
        wanted = {sc.path: sc for sc in config.services}
        for path in [p for p in self.channels if p not in wanted]:
            channel = self.channels.pop(path)
            self._stop_service(channel, closing=True)
            for client in list(channel.clients):
                self.io.close(client, "removed")
        for sc in config.services:
            channel = self.channels.get(sc.path)
            if channel is None:
                self._add_channel(sc)
            elif channel.config != sc or type(channel.service) is not service_class(sc):
                # (new settings, or its module's code was read again)
                self._stop_service(channel)
                self._start_service(channel, sc)
            else:
                channel.config = sc
        for channel in self.channels.values():
            if channel.journal is not None:
                channel.journal.sync_policy = config.journal_sync

    # -- events ----------------------------------------------------------------------

    def publish(self, path, data, event=None, client_id=None):
        """Frame one event and hand it to its subscribers, or to one client (`client_id`:
        an id, or a Client from a service): (Event, delivered)."""
        channel = self.channels.get(path)
        if channel is None:
            raise PublishError(f"no service {path}")
        if not isinstance(data, str):
            raise PublishError("data must be a string")
        problem = sse.bad_event_type(event)
        if problem:
            raise PublishError(problem)
        if channel.config.json:
            try:
                json.loads(data)
            except ValueError as exc:
                raise PublishError(f"{path} takes JSON data only: {exc}") from None
        try:
            # A publisher that names no type gets the service's `event` (SPEC 3).
            ev = Event(self.clock.next(int(self.now * 1000)), data,
                       event or channel.config.event or None)
        except UnicodeEncodeError:
            raise PublishError("data is not valid Unicode text") from None
        if client_id is None:
            if channel.journal is not None:
                self._journal(channel, ev)
            targets = channel.clients
            channel.history.append(ev)
            if channel.journal is not None:
                self._compact(channel, channel.config.history)
            channel.last_sent = self.now
        else:
            targets = self._one_client(channel, client_id, ev)
            for c in targets:
                c.idle_since = self.now
        channel.published += 1
        channel.delivered += len(targets)
        self.stats["events_published"] += 1
        self.stats["events_delivered"] += len(targets)
        if targets:
            membership = (channel, channel.members) if client_id is None else None
            self.io.fanout(ev.wire, targets, membership)
        return ev, len(targets)

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

    def _journal(self, channel, ev):
        """Append before anyone hears of the event; a publish that cannot be kept fails,
        counted, and logged once per episode (a full disk would otherwise be known only to
        the publishers)."""
        journal = channel.journal
        try:
            journal.append(ev)
        except OSError as exc:
            why = f"write failed: {exc.strerror or exc}"
            channel.journal_failures += 1
            self.stats["journal_failures"] += 1
            journal.trouble.failed(self.now, why + "; publishes are refused")
            raise PublishError(f"{channel.path}: journal {why}") from None
        if journal.trouble.failing:
            journal.trouble.recovered(self.now)

    def _compact(self, channel, keep, force=False):
        journal = channel.journal
        try:
            if journal.compact(channel.history.ring, keep, force):
                journal.compaction.recovered(self.now)
        except OSError as exc:
            journal.compaction.failed(self.now, f"{exc.strerror or exc}; the file grows "
                                      "until it succeeds")

    def tick(self, now):
        """Run due timers and, every quarter of `keepalive`, the keepalive sweep; the time
        the next thing is due. Cheap when nothing is due: the loop calls it every turn."""
        self.now = now
        went_back, self.ticked_at = now < self.ticked_at, now
        if now < self.due and not went_back:
            return self.due
        due = float("inf")
        for channel in list(self.channels.values()):
            if channel.next_tick is not None and channel.next_tick > now + 2 * channel.config.interval:
                channel.next_tick = now     # the wall clock went back: do not stall
            if channel.next_tick is not None and channel.next_tick <= now:
                interval = channel.config.interval
                # Catch up after a stall without firing a burst of ticks.
                channel.next_tick = max(channel.next_tick + interval, now + interval / 2)
                self.call(channel, "on_tick")
            if channel.next_tick is not None:
                due = min(due, channel.next_tick)
        if now >= self.next_keepalive:
            # At the next client's due time, but sweeping at most 10 times a second.
            self.next_keepalive = max(self._keepalive(now), now + 0.1)
        self.due = min(due, self.next_keepalive)
        return self.due

    def _keepalive(self, now):
        """A comment to every stream that has heard nothing for `keepalive` seconds; when
        the next one will have (an O(clients) pass only over services that fell silent)."""
        limit = self.config.keepalive
        wire = sse.comment("keepalive")
        due = now + limit
        for channel in self.channels.values():
            if now - channel.last_sent < limit:
                due = min(due, channel.last_sent + limit)
                continue
            idle = []
            for c in channel.clients:
                quiet = max(c.idle_since, *(ch.last_sent for ch in c.channels)) \
                    if len(c.channels) > 1 else c.idle_since
                if now - quiet >= limit:
                    idle.append(c)
                else:
                    due = min(due, quiet + limit)
            for c in idle:
                c.idle_since = now
            if idle:
                self.io.fanout(wire, idle)
        return due

    # -- clients ---------------------------------------------------------------------

    def new_client_id(self):
        """12 unguessable characters (a client id is all it takes to get its events)."""
        if not self._ids:
            # 9 random bytes make 12 characters without padding; 256 ids per encoding.
            pool = base64.urlsafe_b64encode(secrets.token_bytes(9 * 256)).decode()
            self._ids = [pool[i:i + 12] for i in range(0, len(pool), 12)]
        return self._ids.pop()

    def streams_of(self, client_id):
        """Every open stream with this client id (one set per id would cost each client a
        set; ids are rarely shared)."""
        found = self.by_id.get(client_id)
        return () if found is None else found if isinstance(found, tuple) else (found,)

    def subscribe(self, paths, client_id, address, last_id, request):
        """Add a stream to the services at `paths`; (client, the bytes it gets before any
        live event). Raises Refuse."""
        return self.attach([self.channels[p] for p in paths], client_id, address, last_id,
                           request)

    def attach(self, channels, client_id, address, last_id, request):
        """`subscribe`, given the services' channels."""
        client = Client(client_id or self.new_client_id(), address, self.now, channels)
        joining = None
        for channel in channels:
            if type(channel.service).on_connect is not Service.on_connect:
                joining = self._run_on_connect(client, channels, last_id, request)
                break
        for channel in channels:
            channel.clients.add(client)
            channel.members += 1
        same = self.by_id.get(client.id)
        self.by_id[client.id] = client if same is None else (*self.streams_of(client.id), client)
        self.per_ip[address] = self.per_ip.get(address, 0) + 1     # no Counter.__missing__ call
        self.client_count += 1
        if joining is not None:
            return client, self._joined_preamble(joining, last_id)
        return client, self._preamble(client, channels, last_id)

    def _run_on_connect(self, client, channels, last_id, request):
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

    def _on_connect(self, channel, client, request):
        try:
            channel.service.on_connect(client, request)
        except Refuse as refuse:
            return refuse
        except Exception as exc:
            self.hook_failed(channel.path, "on_connect", exc)
            # A hook that may refuse but crashed cannot vouch for the client: fail closed.
            return Refuse(500, "internal error")
        return None

    def _preamble(self, client, channels, last_id):
        # The head inline rather than a call to _head: this is the connect path.
        parts = [sse.retry(self.config.retry)] if self.config.retry else []
        if any(ch.config.session_event for ch in channels):
            parts.append(sse.frame(client.id, "session"))
        # No Last-Event-ID: a new subscriber, live events only. One not of our form:
        # everything held (SPEC 4), since we cannot tell what it has seen.
        replay = None if last_id is None else merge([ch.history for ch in channels],
                                                    parse_id(last_id))
        if replay:
            parts.extend(e.wire for e in replay)
        else:
            parts.append(sse.prime(self.clock.prime(int(self.now * 1000))))
        return b"".join(parts)

    def _head(self, client, channels):
        """retry: and the session event (as _preamble writes them)."""
        parts = [sse.retry(self.config.retry)] if self.config.retry else []
        if any(ch.config.session_event for ch in channels):
            parts.append(sse.frame(client.id, "session"))
        return parts

    def _joined_preamble(self, joining, last_id):
        """The preamble of a stream whose on_connect hooks ran: its replay or else its
        priming id, then what the hooks broadcast and sent it, all in id order."""
        client = joining.client
        parts = self._head(client, client.channels)
        prime = parse_id(joining.prime)
        # The hooks' broadcasts are in the histories, after the priming id.
        events = merge([ch.history for ch in client.channels],
                       prime if last_id is None else parse_id(last_id))
        if not events or events[0].key > prime:
            parts.append(sse.prime(joining.prime))      # nothing to replay (SPEC 4)
        if joining.sent:
            for channel, ev in joining.sent:
                channel.delivered += 1
            self.stats["events_delivered"] += len(joining.sent)
            events = sorted(events + [ev for _, ev in joining.sent], key=lambda e: e.key)
        parts.extend(e.wire for e in events)
        return b"".join(parts)

    def detach(self, client, reason):
        """Forget a closed stream (the loop has closed its socket)."""
        for channel in client.channels:
            if client in channel.clients:
                channel.clients.discard(client)
                channel.members += 1
                self.call(channel, "on_disconnect", client, reason)
        rest = tuple(c for c in self.streams_of(client.id) if c is not client)
        if not rest:
            self.by_id.pop(client.id, None)
        else:
            self.by_id[client.id] = rest[0] if len(rest) == 1 else rest
        self.client_count -= 1
        self.per_ip[client.address] -= 1
        if self.per_ip[client.address] <= 0:
            del self.per_ip[client.address]
        if reason not in CLIENT_LEFT:
            self.dropped[reason] += 1

    def kick(self, path, client_id):
        channel = self.channels.get(path)
        if channel is None:
            raise PublishError(f"no service {path}")
        doomed = [c for c in self.streams_of(client_id) if channel in c.channels]
        for c in doomed:
            self.io.close(c, "kicked")
        return len(doomed)

    # -- bans ------------------------------------------------------------------------

    def ban(self, network, seconds):
        """Refuse `network` (an ip_network) for `seconds`; close its open streams."""
        self.bans[network] = self.now + seconds
        doomed = [c for ch in self.channels.values() for c in ch.clients
                  if _address_in(c.address, network)]
        for c in set(doomed):
            self.io.close(c, "banned")
        return len(set(doomed))

    def unban(self, network):
        return 1 if self.bans.pop(network, None) is not None else 0

    def banned(self, address):
        if not self.bans:
            return False
        for network, until in list(self.bans.items()):
            if until <= self.now:
                del self.bans[network]
            elif _address_in(address, network):
                return True
        return False

    # -- children --------------------------------------------------------------------

    def spawn(self, service, command, callback, timeout):
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
        channel.child = self.io.spawn(command, timeout, done, channel.path, cwd)
        return channel.child is not None


def _untimed(path, hook, method, args):
    return method(*args)


def _address_in(address, network):
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None and network.version == 4:
        ip = ip.ipv4_mapped
    return ip.version == network.version and ip in network
