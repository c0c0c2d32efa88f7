"""The event loop: the one owner of every file descriptor.

Listeners, HTTP connections, streams, control connections, the stdin console, children's
pipes and the signal socketpair are all in one `selectors` selector. A turn: wait, run the
handlers of what is ready, then the timers; after each handler the loop carries out the work
orders the hub left (orders.py), so the hub never calls back into the loop. What a stream
is sent goes through the outbox (outbox.py), which alone decides slow and stalled.
"""
import os
import random
import selectors
import signal
import time
import traceback
from time import monotonic

from . import control, reasons, sse, web
from .accept import Acceptor
from .children import Children
from .conns import HttpConn, StreamConn
from .deadlines import Deadlines
from .controlconns import Console
from .http1 import whole_request
from .log import Throttle, redact
from .orders import Close, FanOut, Kill, Spawn
from .outbox import Outbox
from .redisconn import MAX_FILL, RedisConn
from .responses import error_reply
from .stalls import STALL_AFTER, Stalls
from .systemd import Watchdog
from .upgrade import Handovers
from .wakeup import Wakeup

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR2)


class Loop:
    """Built without side effects; `start()` opens what it watches, `close()` puts it back."""

    def __init__(self, hub, listeners, control_sock, log, reload, notify, console=None,
                 stalls=None, clock=time.time):
        self.hub = hub
        self.log = log
        self.debug = getattr(log, "debug", True)    # build debug lines only when shown
        self.reload_config = reload
        self.notify = notify
        self.console = console
        self.clock = clock
        self.stalls = stalls or Stalls(log)
        self.selector = None            # made by start(): an epoll descriptor
        self.acceptor = Acceptor(self, listeners, control_sock)
        self.outbox = Outbox(hub.stats, hub.config.send_buffer)
        self.throttle = Throttle(log)   # lines that can repeat without end (commands' stderr)
        self.deadlines = Deadlines()
        self.children = Children()      # the commands running
        self.backlog = set()            # control connections (and the console) with lines waiting
        self.stopping = None            # the time a graceful shutdown must end by
        self.handovers = Handovers(self)    # upgrades, the fd store (SPEC 13)
        self.at_turn_end = None         # what to do once this turn's events are handled
        self.leaving = None             # (by when, control conns): handed over, finishing
        self.running = True
        self.due = 0.0                  # when the timers next have something to do
        self.watchdog = Watchdog(notify, self.status_line)
        self.next_sweep = self.next_sync = 0.0
        self.wakeup = None
        self.statm = None
        self.unflushed = []             # Redis links with commands to write this turn

    def start(self):
        """Watch the listeners, the control socket, the console and the signals."""
        self.watch_early()
        self.acceptor.start()
        if self.console is not None:
            try:
                Console(self, self.console)
            except (PermissionError, ValueError):     # a regular file or /dev/null
                self.log("warning", "console: standard input cannot be watched; ignored")
        cluster = self.hub.cluster
        if cluster is not None:
            cluster.attach(RedisConn(self, cluster.target, "reader", cluster),
                           RedisConn(self, cluster.target, "writer", cluster, MAX_FILL))
            cluster.start(self.clock())
        self.wakeup = Wakeup(SIGNALS)
        self.selector.register(self.wakeup, READ, self._on_signal)
        # Kept open from the start: `stats` must tell the memory even with no fd left.
        try:
            self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self.statm = None
        self.carry_out()        # what the services did when they started

    def close(self):
        self.selector.close()
        if self.wakeup is not None:
            self.wakeup.close()
            self.wakeup = None
        if self.statm is not None:
            os.close(self.statm)
            self.statm = None

    # -- the turn --------------------------------------------------------------------

    def run(self):
        now = self.hub.now = self.clock()
        # The first ping is due at once too: the first wait must not outlast the watchdog.
        self.due = min(self.hub.tick(now), self.watchdog.due(now))
        self.carry_out()
        while self.running:
            self.turn()

    def turn(self, timeout=None):
        """One turn: a share of the fan-outs in progress, wait (at most `timeout`), the
        handlers of what is ready, then the timers."""
        outbox = self.outbox
        if outbox.jobs:
            outbox.drain(self.hub.now)
            self._close_doomed()
        wait = 0.0 if outbox.jobs or self.backlog or self.at_turn_end else max(
            0.0, min(self.due, self._next_deadline()) - self.clock())
        events = self.selector.select(wait if timeout is None else min(wait, timeout))
        started = monotonic()
        self.stalls.held_for = 0.0
        self.hub.now = now = self.clock()
        for key, mask in events:
            self._dispatch(key.data, mask)
        if self.backlog:
            self._answer_backlog()
        if self.at_turn_end is not None:    # a handover: after this turn's events, all of them
            step, self.at_turn_end = self.at_turn_end, None
            step()
        dispatched = monotonic()
        self._expire(now)
        self.due = self.hub.tick(now) if self.stopping is None and self.leaving is None \
            else now + 0.05
        self.carry_out()
        self.due = min(self.due, self.watchdog.due(now), self._sweep_stalled(now), self._sync(now))
        if self.unflushed:
            self._flush_links()
        if self.stopping is not None:
            self._shutdown_step(now)
        if self.leaving is not None:
            self.handovers.leave_step(now)
        took = monotonic() - started
        if took >= STALL_AFTER:
            self.stalls.report(took, dispatched - started, events, self.hub)

    def _dispatch(self, handler, mask):
        """One ready descriptor. A bug in its handler costs that connection, not the daemon."""
        try:
            if callable(handler):
                handler()
            else:
                handler.ready(mask)
        except Exception:
            self._bug(handler)
        if self.hub.orders or self.outbox.doomed:
            self.carry_out()

    def carry_out(self):
        """Do what the hub ordered (in the order given; what that sets off is done too),
        then close the streams the outbox doomed."""
        hub = self.hub
        while hub.orders:
            orders, hub.orders = hub.orders, []
            for order in orders:
                kind = type(order)
                if kind is FanOut:
                    self.outbox.fan_out(order.wire, order.clients, order.key, hub.now)
                elif kind is Close:
                    if not order.client.conn.closed:
                        order.client.conn.close(order.reason)
                elif kind is Spawn:
                    self.children.start(self, order)
                elif kind is Kill and order.spawn.child is not None:
                    order.spawn.child.kill(order.why)
        self._close_doomed()

    def _close_doomed(self):
        outbox = self.outbox
        while outbox.doomed:
            doomed, outbox.doomed = outbox.doomed, []
            for client, reason in doomed:
                if not client.conn.closed:
                    client.conn.close(reason)
        if self.hub.orders:         # what closing set off (on_disconnect may publish)
            self.carry_out()

    def _answer_backlog(self):
        """A batch of each waiting control connection's lines (conns.CONTROL_LINES)."""
        for conn in list(self.backlog):
            try:
                conn.work()
            except Exception:
                self.backlog.discard(conn)
                self._bug(conn)
            self.carry_out()

    def _bug(self, handler):
        """Log the exception being handled, and close the connection it happened on."""
        self.log("error", f"bug: {type(handler).__name__} handler raised\n"
                 + traceback.format_exc())
        close = getattr(handler, "close", None)
        if close is not None:
            try:
                close(reasons.BUG)
            except Exception:
                self.log("error", "bug: closing after a bug failed\n" + traceback.format_exc())

    # -- watching and deadlines: what the connections ask of the loop ------------------

    def watch_early(self):
        """The selector, made before start(): an upgrade watches the streams it is handed
        while the old process still serves (nothing runs them before run())."""
        if self.selector is None:
            self.selector = selectors.DefaultSelector()

    def watch(self, fileobj, handler, events=READ):
        """Watch `fileobj` (or change what for); `handler` is called or sent `ready(mask)`."""
        try:
            self.selector.register(fileobj, events, handler)
        except KeyError:
            self.selector.modify(fileobj, events, handler)

    def rewatch(self, fileobj, handler, events):
        """Change what a watched `fileobj` is watched for (a stream's write interest)."""
        self.selector.modify(fileobj, events, handler)

    def flush_soon(self, link):
        """A Redis link has commands queued: written at the end of this turn, together."""
        self.unflushed.append(link)

    def _flush_links(self):
        links, self.unflushed = self.unflushed, []
        for link in links:
            try:
                link.flush()
            except Exception:
                self._bug(link)

    def lines_waiting(self, conn, waiting):
        """A control connection (or the console) has request lines waiting, or no more:
        the loop answers a batch of them each turn and does not sleep meanwhile."""
        if waiting:
            self.backlog.add(conn)
        else:
            self.backlog.discard(conn)

    def unwatch(self, fileobj):
        try:
            self.selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass        # never watched (closed by a bug before), or already closed

    def deadline(self, conn, when):
        """`conn.expired()` at `when`, unless given another deadline or closed first."""
        self.deadlines.set(conn, when)

    def _next_deadline(self):
        ahead = min(self.deadlines.next(), self.children.next_deadline())
        return min(ahead, self.acceptor.paused_until or ahead)

    def _expire(self, now):
        self.deadlines.expire(now)
        self.children.check(now)
        self.acceptor.check(now)

    # -- requests and streams ------------------------------------------------------------

    def take_request(self, sock, address, deadline=None):
        """A connection the acceptor let in. Under load its request has usually arrived
        whole by the time it is accepted (97 % of a 10k storm): read it now rather than
        after a turn through the selector. A stream needs no HttpConn then. `deadline`:
        the head's, when it began before (`header_timeout` from accept: a PROXY header or a
        TLS handshake came first); by default `header_timeout` from now."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            data = None
        except OSError:
            return sock.close()     # reset before it sent a byte
        request = whole_request(data, self.hub.max_head) if data else None
        if request is not None:
            result = self.route(request, address)
            if type(result) is web.Stream and not result.head_only:
                return self.open_stream(sock, result, request.target)
        conn = HttpConn(self, sock, address)
        try:
            if request is not None:
                conn.respond(result, request)
            elif data is not None:
                conn.take(data)
        except Exception:
            return self._bug(conn)
        if not (conn.closed or conn.replied or conn.waiting):   # its request yet to come
            self.acceptor.waiting(conn)
            conn.watch(READ)
            if conn.deadline is None:
                self.deadline(conn, deadline or self.hub.now + self.hub.config.header_timeout)

    def route(self, request, address):
        """What to do with a whole request: web.handle's answer (a 500 on a bug in it)."""
        try:
            return web.handle(self.hub, request, address)
        except Exception:
            self.log("error", f"bug: handling {redact(repr(request))}\n"
                     + traceback.format_exc())
            return web.Reply(error_reply(500, "internal error"), reasons.BUG)

    def open_stream(self, sock, stream, target):
        """A routed request's socket becomes its stream: watched for the peer leaving and
        sent the head and preamble at once, even while fan-outs are queued: none of them
        includes a client this new, and its replay holds any event they carry."""
        conn = StreamConn(self, sock, stream.client)
        try:
            self.watch(sock, conn)
            if self.debug:
                self.log("debug", f"stream {stream.client.id} from {stream.client.address}: "
                         f"{redact(target)}")
            self.outbox.send(stream.data, (stream.client,), self.hub.now)
        except Exception:
            self._bug(conn)

    # -- timers ----------------------------------------------------------------------

    def status_line(self):
        hub = self.hub
        cluster = "" if hub.cluster is None else (
            "; cluster up" if hub.cluster.up else "; cluster DOWN")
        return (f"STATUS={hub.client_count} clients on {len(hub.channels)} services, "
                f"{hub.stats['events_published']} events published{cluster}")

    def _sync(self, now):
        """The once-a-second fsync of journals under `journal_sync = everysec`."""
        if now >= self.next_sync:
            self.hub.sync_journals()
            self.next_sync = now + 1.0
        return self.next_sync

    def _sweep_stalled(self, now):
        """Close streams whose queue made no progress for `send_timeout`; the next sweep."""
        if now >= self.next_sweep:
            limit = self.hub.config.send_timeout
            self.outbox.stalled(now, limit)
            self._close_doomed()
            self.next_sweep = now + min(1.0, limit / 4)
        return self.next_sweep

    # -- what the control commands and signals ask of us ---------------------------------

    def reload(self):
        changes = self.reload_config()
        self.outbox.limit = self.hub.config.send_buffer
        return changes

    def rss(self):
        """Resident bytes now, from /proc/self/statm (None where there is none)."""
        try:
            return int(os.pread(self.statm, 256, 0).split()[1]) * PAGE_SIZE
        except (OSError, TypeError, ValueError, IndexError):
            return None

    def control_line(self, line):
        return self.stalls.command(self._handle_line, line)

    def _handle_line(self, line):
        return control.handle_line(line, self.hub, self)

    def _on_signal(self):
        signals = self.wakeup.read()
        for signum in signals:
            if signum == signal.SIGHUP:
                self.log("info", "SIGHUP: reloading")
                try:
                    self.reload()
                except control.CommandError:
                    pass        # logged with its FILE:LINE errors; nothing changed
            elif signum == signal.SIGUSR2:
                self.handovers.on_sigusr2()
            elif signum == signal.SIGTERM and self.handovers.storing():
                # Once every event of this turn is handled (none is left stale for after).
                self.at_turn_end = self.handovers.store_or_stop
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.shutdown(signal.Signals(signum).name)
        if signal.SIGCHLD in signals:
            self.children.reap(self.hub.now, keep=self.handovers.pids())

    # -- live upgrade (SPEC 13): upgrade.Handovers holds the old process's side ---------

    def upgrade(self):
        """Start an upgrade: a Later of its answer (control.py's `upgrade`)."""
        return self.handovers.upgrade()

    def leave(self, controls):
        self.handovers.leave(controls)

    def shutdown(self, why):
        """Stop accepting, tell every stream when to come back (spread out), then flush."""
        if self.stopping is not None:
            return
        self.log("info", f"{why}: shutting down")
        self.notify("STOPPING=1")
        self.stopping = self.clock() + self.hub.config.shutdown_timeout
        self.acceptor.stop_listening()
        retry = self.hub.config.retry or 3000
        for client in self._all_clients():
            self.outbox.fan_out(sse.retry(random.randint(retry, 10 * retry)), [client], None,
                                self.hub.now)
        self.hub.stop()
        self.carry_out()

    def _all_clients(self):
        return list({c for ch in self.hub.channels.values() for c in ch.clients})

    def _shutdown_step(self, now):
        cluster = self.hub.cluster
        if now < self.stopping and (self.outbox.busy or (
                cluster is not None and cluster.releasing(now))):
            return      # (a cluster's node gives up its leases before it goes)
        for client in self._all_clients():
            client.conn.close(reasons.SHUTDOWN)
        self.running = False
