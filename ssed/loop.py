"""The event loop: the one owner of every file descriptor.

Listeners, HTTP connections, streams, control connections, the stdin console, children's
pipes and the signal socketpair are all in one `selectors` selector. The hub and services
reach sockets only through the `fanout`, `close`, `spawn` and `kill` methods here.
"""
import errno
import functools
import heapq
import os
import random
import selectors
import signal
import socket
import _socket
import time
import traceback
from collections import deque
from time import monotonic

from . import control, sse, web
from .children import ChildProc, reap_adopted
from .conns import ControlConn, Console, HttpConn, StreamConn, failed
from .http1 import error_reply, whole_request
from .journal import Journal
from .log import Throttle, redact
from .stalls import STALL_AFTER, Stalls

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
ACCEPT_BURST = 64
EMFILE_PAUSE = 0.5
STATUS_EVERY = 5.0
HEAP_FLOOR = 1024
MAX_LINGERING = 1024    # refused-at-accept connections drained at once, at most
SLICE = 256         # clients a fan-out reaches per loop turn (~1-3 ms of sends)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# accept(2) errors that belong to the one connection being taken (Linux passes a pending
# network error on; a firewall can refuse it): skip it and go on.
PEER_GONE = (errno.ECONNABORTED, errno.EPROTO, errno.ENOPROTOOPT, errno.EHOSTDOWN,
             errno.ENONET, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH, errno.EPERM)


class Loop:
    def __init__(self, hub, listeners, control_sock, log, reload, notify, console=None):
        self.hub = hub
        self.notify = notify
        self.next_ping = 0.0
        self.next_status = 0.0
        self.last_status = None
        self.log = log
        self.debug = getattr(log, "debug", True)    # build debug lines only when shown
        self.reload_config = reload
        self.selector = selectors.DefaultSelector()
        self.listeners = listeners
        self.deadlines = []             # heap of (when, seq, conn)
        self.heap_limit = HEAP_FLOOR
        self.seq = 0
        self.children = []              # ChildProcs running
        self.throttle = Throttle(log)   # lines that can repeat without end (commands' stderr)
        self.doomed = []                # streams to close after this fan-out
        self.fanq = deque()             # fan-outs in progress: [[wire], clients, next index, key]
        self.stopping = None            # the time a graceful shutdown must end by
        self.running = True
        self.paused_until = None        # accepting paused after EMFILE until then
        self.accept_failed = False      # logged once per episode of EMFILE
        self.pending = set()            # HTTP connections still sending their request
        self.pending_per_ip = {}
        self.backlog = set()            # control connections (and the console) with lines waiting
        self.stalls = Stalls(hub, log)
        hub.timed = self.stalls.timed
        self.lingering = 0              # answered connections draining before they close
        self.writing = {}               # client -> when its queue last made progress
        self.next_sweep = 0.0
        self.next_sync = 0.0
        for sock in listeners:
            sock.setblocking(False)
            tune_listener(sock, hub.config.send_timeout)
        self.control_sock = control_sock
        if control_sock is not None:
            control_sock.setblocking(False)
        self._resume_accepting()
        if console is not None:
            try:
                Console(self, console)
            except (PermissionError, ValueError):     # a regular file or /dev/null
                log("warning", "console: standard input cannot be watched; ignored")
        self._signals()
        # Kept open from the start: `stats` must tell the memory even with no fd left.
        try:
            self.statm = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self.statm = None

    # -- the turn --------------------------------------------------------------------

    def run(self):
        self.hub.now = time.time()
        # The first ping is due at once too: the first wait must not outlast the watchdog.
        due = min(self.hub.tick(self.hub.now), self._watchdog(self.hub.now))
        while self.running:
            if self.fanq:
                self._drain_fanouts()
                self._close_doomed()
            timeout = 0.0 if self.fanq or self.backlog else max(
                0.0, min(due, self._next_deadline()) - time.time())
            events = self.selector.select(timeout)
            started = monotonic()
            self.stalls.held_for = 0.0
            self.hub.now = now = time.time()
            for key, mask in events:
                self._dispatch(key.data, mask)
                if self.doomed:
                    self._close_doomed()
            if self.backlog:
                self._answer_backlog()
            dispatched = monotonic()
            self._expire(now)
            due = self.hub.tick(now) if self.stopping is None else now + 0.05
            self._close_doomed()
            due = min(due, self._watchdog(now), self._sweep_stalled(now), self._sync(now))
            if self.stopping is not None:
                self._shutdown_step(now)
            took = monotonic() - started
            if took >= STALL_AFTER:
                self.stalls.report(took, dispatched - started, events)
        self.selector.close()
        if self.statm is not None:
            os.close(self.statm)
            self.statm = None

    def _dispatch(self, handler, mask):
        """One ready descriptor. A bug in its handler costs that connection, not the daemon."""
        try:
            if callable(handler):
                handler()
            else:
                handler.ready(mask)
        except Exception:
            self._bug(handler)

    def _answer_backlog(self):
        """A batch of each waiting control connection's lines (conns.CONTROL_LINES)."""
        for conn in list(self.backlog):
            try:
                conn.work()
            except Exception:
                self.backlog.discard(conn)
                self._bug(conn)
            if self.doomed:
                self._close_doomed()

    def _bug(self, handler):
        """Log the exception being handled, and close the connection it happened on."""
        self.log("error", f"bug: {type(handler).__name__} handler raised\n"
                 + traceback.format_exc())
        close = getattr(handler, "close", None)
        if close is not None:
            try:
                close("bug")
            except Exception:
                self.log("error", "bug: closing after a bug failed\n" + traceback.format_exc())

    def _watchdog(self, now):
        """WATCHDOG=1 at half the interval from the turning loop itself, and STATUS= at most
        every STATUS_EVERY seconds while the figures change; the next time due."""
        if self.notify.address is None:
            return float("inf")
        if self.notify.watchdog is not None and now >= self.next_ping:
            self.notify("WATCHDOG=1")
            self.next_ping = now + self.notify.watchdog
        if now >= self.next_status:
            status = self.status_line()
            if status != self.last_status:
                self.notify(status)
                self.last_status = status
            self.next_status = now + STATUS_EVERY
        return min(self.next_ping if self.notify.watchdog else self.next_status,
                   self.next_status)

    def status_line(self):
        hub = self.hub
        return (f"STATUS={hub.client_count} clients on {len(hub.channels)} services, "
                f"{hub.stats['events_published']} events published")

    def _sync(self, now):
        """The once-a-second fsync of journals under `journal_sync = everysec`."""
        if now >= self.next_sync:
            self.hub.sync_journals()
            self.next_sync = now + 1.0
        return self.next_sync

    def _sweep_stalled(self, now):
        """Doom streams whose queue made no progress for `send_timeout`; the next sweep."""
        if now >= self.next_sweep:
            limit = self.hub.config.send_timeout
            self.doomed.extend((c, "stalled") for c, since in self.writing.items()
                               if now - since > limit)
            self._close_doomed()
            self.next_sweep = now + min(1.0, limit / 4)
        return self.next_sweep

    def _next_deadline(self):
        ahead = self.deadlines[0][0] if self.deadlines else float("inf")
        if self.children:
            ahead = min(ahead, min(c.deadline for c in self.children))
        if self.paused_until is not None:
            ahead = min(ahead, self.paused_until)
        return ahead

    def deadline(self, conn, when):
        self.seq += 1
        conn.deadline = when
        heapq.heappush(self.deadlines, (when, self.seq, conn))
        if len(self.deadlines) > self.heap_limit:
            # Drop entries of connections that closed or moved on (streams, answered
            # requests) so a connection flood cannot pin them until their deadline.
            self.deadlines = [e for e in self.deadlines if e[2].deadline == e[0]
                              and not e[2].closed]
            heapq.heapify(self.deadlines)
            self.heap_limit = max(HEAP_FLOOR, 2 * len(self.deadlines))

    def _expire(self, now):
        while self.deadlines and self.deadlines[0][0] <= now:
            when, _, conn = heapq.heappop(self.deadlines)
            if conn.deadline == when and not conn.closed:
                conn.expired()
        for child in list(self.children):
            child.check(now)
        if self.paused_until is not None and self.paused_until <= now:
            self._resume_accepting()

    # -- accepting -------------------------------------------------------------------

    def _accept(self, listener, take=None):
        """Accept a burst from `listener`, each handed to `take(sock, peer)` (default: a
        new HTTP connection), `peer` being the address, or for IPv4 just its host; on
        EMFILE and its kin, pause instead of spinning."""
        take = take or self._new_http
        family = int(listener.family)
        ipv4 = family == socket.AF_INET
        for _ in range(ACCEPT_BURST):
            try:
                # socket.accept() less its two IntEnum conversions: ~1 us of a connect.
                fd, addr = listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                elif exc.errno in PEER_GONE:
                    continue        # that connection failed before we took it; the next
                else:
                    self._drop_listener(listener, exc)
                return
            if self.accept_failed:
                self.accept_failed = False
                self.log("info", "accepting connections again")
            # The C socket type, not socket.socket: that Python subclass adds only makefile()
            # bookkeeping we never use, and is tracked by the cyclic GC, which then walks
            # every open connection on each full collection (-13 % instructions a connect).
            take(_socket.socket(family, socket.SOCK_STREAM, 0, fd), addr[0] if ipv4 else addr)

    def _new_http(self, sock, peer):
        """Refuse what can be refused before reading a byte, then read. A request there
        whole is answered at once (a stream needs no HttpConn); else an HttpConn waits."""
        sock.setblocking(False)
        address = peer if type(peer) is str else peer_address(peer)
        hub = self.hub
        if self.stopping is not None:
            return self._refuse_now(sock, 503, "shutting down", "shutting_down", address)
        if hub.banned(address):
            return self._refuse_now(sock, 403, "address banned", "banned", address)
        if self.pending_per_ip.get(address, 0) >= hub.config.max_clients_per_ip:
            return self._refuse_now(sock, 429, "too many connections from your address",
                                    "max_clients_per_ip", address)
        if len(self.pending) >= hub.config.max_clients:
            return self._refuse_now(sock, 503, "too many connections", "max_clients", address)
        # Under load the request has usually arrived whole by the time its connection is
        # accepted (97 % of a 10k storm): read it now rather than after a turn through the
        # selector.
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            data = None
        except OSError:
            return sock.close()     # reset before it sent a byte
        request = whole_request(data) if data else None
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
        # Only a connection still waiting for a request counts as pending.
        if not (conn.closed or conn.replied):
            self.pending.add(conn)
            self.pending_per_ip[address] = self.pending_per_ip.get(address, 0) + 1
            if not conn.watched:
                conn.watch(READ, conn)
            if conn.deadline is None:
                self.deadline(conn, hub.now + hub.config.header_timeout)

    def route(self, request, address):
        """What to do with a whole request: web.handle's answer (a 500 on a bug in it)."""
        try:
            return web.handle(self.hub, request, address)
        except Exception:
            self.log("error", f"bug: handling {redact(repr(request))}\n"
                     + traceback.format_exc())
            return web.Reply(error_reply(500, "internal error"), "bug")

    def open_stream(self, sock, stream, target, watched=False):
        """A routed request's socket becomes its stream: watched for the peer leaving and
        sent the head and preamble at once, even while fan-outs are queued: none of them
        includes a client this new, and its replay holds any event they carry."""
        conn = StreamConn(self, sock, stream.client)
        try:
            if watched:
                self.selector.modify(sock, READ, conn)
            else:
                self.selector.register(sock, READ, conn)
            if self.debug:
                self.log("debug", f"stream {stream.client.id} from {stream.client.address}: "
                         f"{redact(target)}")
            self._send_all(stream.data, (stream.client,))
        except Exception:
            self._bug(conn)

    def request_done(self, conn):
        """An HTTP connection stopped waiting for its request (answered, streaming, gone)."""
        if conn in self.pending:
            self.pending.discard(conn)
            left = self.pending_per_ip.pop(conn.address) - 1
            if left:
                self.pending_per_ip[conn.address] = left

    def _refuse_now(self, sock, status, text, reason, address="-"):
        """Answer before reading the request. The answer lingers (half-close, drain) so the
        peer reads it rather than a reset for the request it was still sending; past
        MAX_LINGERING such connections (a flood) they are simply closed."""
        headers = [("Retry-After", web.retry_after())] if status in (503, 429) else []
        data = error_reply(status, text, headers)
        if self.lingering >= MAX_LINGERING:
            self.hub.refused[reason] += 1
            try:
                sock.send(data)
            except OSError:
                pass
            sock.close()
            return
        conn = HttpConn(self, sock, address)
        conn.reply(data, reason)

    def _pause_accepting(self, exc):
        """Out of descriptors: stop accepting (HTTP and control) for a moment instead of
        spinning on EMFILE. Another listener's event of the same turn may land here again."""
        if self.paused_until is not None:
            return
        if not self.accept_failed:
            self.accept_failed = True
            self.log("error", f"accept failed ({exc.strerror}): pausing new connections "
                     "until descriptors free up")
        self.hub.refused["out_of_descriptors"] += 1
        for sock, _ in self._acceptors():
            self.selector.unregister(sock)
        self.paused_until = time.time() + EMFILE_PAUSE

    def _drop_listener(self, listener, exc):
        """An accept error that is neither "try later" nor one peer's: retrying would spin
        (a datagram socket stays readable), so stop watching the listener, say so once."""
        try:
            self.selector.unregister(listener)
        except KeyError:
            pass        # paused by EMFILE earlier in this turn
        try:
            what = f"fd {listener.fileno()} ({listener.getsockname()})"
        except OSError:
            what = f"fd {listener.fileno()}"
        if listener is self.control_sock:
            self.control_sock = None
            what = "the control socket " + what
        else:
            self.listeners = [s for s in self.listeners if s is not listener]
        self.log("error", f"accept on {what} failed ({exc.strerror or exc}): no longer "
                 f"accepting on it; {len(self.listeners)} listeners left")

    def set_listeners(self, listeners, gone):
        """A reload changed `listen`: serve on `listeners` from now on, close `gone`."""
        if self.paused_until is None:
            for sock in self.listeners:
                self.selector.unregister(sock)
        for sock in gone:
            sock.close()
        self.listeners = listeners
        for sock in listeners:
            sock.setblocking(False)
            tune_listener(sock, self.hub.config.send_timeout)
            if self.paused_until is None:
                self.selector.register(sock, READ, functools.partial(self._accept, sock))

    def _resume_accepting(self):
        self.paused_until = None
        for sock, handler in self._acceptors():
            self.selector.register(sock, READ, handler)

    def _acceptors(self):
        pairs = [(sock, functools.partial(self._accept, sock)) for sock in self.listeners]
        if self.control_sock is not None:
            pairs.append((self.control_sock, self._accept_control))
        return pairs

    def _accept_control(self):
        self._accept(self.control_sock, self._new_control)

    def _new_control(self, sock, _addr):
        sock.setblocking(False)
        ControlConn(self, sock)     # it watches itself

    # -- what the hub asks of us -----------------------------------------------------

    def fanout(self, wire, clients, key=None):
        """The same bytes to every client. A big fan-out goes out in slices of SLICE clients
        per loop turn, so the loop keeps answering meanwhile; once one is in progress every
        later fan-out queues behind it, so no client ever sees its events reordered.

        Fan-outs to one membership (`key`, the hub's (channel, membership count)) that
        queue up while the loop is busy join the last queued one if it has not started:
        under a backlog each client gets one write per turn of the queue, not one per event.
        """
        q = self.fanq
        if q:
            tail = q[-1]
            if key is not None and tail[3] == key and tail[2] == 0:
                tail[0].append(wire)
                return
        elif len(clients) <= SLICE and key is None:
            return self._send_all(wire, clients)
        # Broadcasts always wait for the end of the turn: those published in one turn
        # (a pipelining publisher, a source's batch) then go out as one write.
        q.append([[wire], list(clients), 0, key])

    def _drain_fanouts(self):
        """One turn's share of the queued fan-outs."""
        budget = SLICE
        q = self.fanq
        while q and budget > 0:
            job = q[0]
            parts, clients, start, _ = job
            if start == 0:
                job[0] = parts = [b"".join(parts)]
            end = min(start + budget, len(clients))
            some = clients[start:end] if start or end < len(clients) else clients
            self._send_all(parts[0], some)
            budget -= end - start
            if end == len(clients):
                q.popleft()
            else:
                job[2] = end

    def _send_all(self, wire, clients):
        """Send now, queue what the socket did not take, doom the slow."""
        size = len(wire)
        limit = self.hub.config.send_buffer
        sent = 0
        for c in clients:
            if c.pending is None:
                try:
                    n = c.send(wire)
                except BlockingIOError:
                    n = 0
                except OSError as exc:
                    self.doomed.append((c, failed(exc)))
                    continue
                sent += n
                c.sent += n
                if n < size:
                    c.pending = [wire[n:] if n else wire]
                    c.queued = size - n
                    self.writing[c] = self.hub.now
                    c.conn.want_write()
                    if c.queued > limit:
                        self.doomed.append((c, "slow"))
            else:
                c.pending.append(wire)
                c.queued += size
                if c.queued > limit:
                    self.doomed.append((c, "slow"))
        self.hub.stats["bytes_sent"] += sent

    def close(self, client, reason):
        client.conn.close(reason)

    def spawn(self, command, timeout, done, name, cwd=None):
        try:
            child = ChildProc(self, command, timeout, done, name, cwd)
        except OSError as exc:
            # Not logged here: `done` hears it, and a source logs it once per episode (out of
            # descriptors, that was two lines every tick).
            done(b"", f"cannot start it: {exc.strerror or exc}")
            return None
        self.children.append(child)
        return child

    def open_journal(self, path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return Journal(path, self.hub.config.journal_sync, self.log)

    def kill(self, child):
        child.kill("service stopped")

    def _close_doomed(self):
        while self.doomed:
            doomed, self.doomed = self.doomed, []
            for client, reason in doomed:
                if not client.conn.closed:
                    client.conn.close(reason)

    # -- what the control commands ask of us ----------------------------------------------

    def reload(self):
        return self.reload_config()

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

    # -- signals and shutdown --------------------------------------------------------

    def _signals(self):
        self.wakeup_r, self.wakeup_w = socket.socketpair()
        self.wakeup_r.setblocking(False)
        self.wakeup_w.setblocking(False)
        self.old_wakeup = signal.set_wakeup_fd(self.wakeup_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda *_: None)     # the byte on the wakeup fd does the work
        self.selector.register(self.wakeup_r, READ, self._on_signal)

    def _on_signal(self):
        try:
            data = self.wakeup_r.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGHUP:
                self.log("info", "SIGHUP: reloading")
                try:
                    self.reload_config()
                except control.CommandError:
                    pass        # logged with its FILE:LINE errors; nothing changed
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.shutdown(signal.Signals(signum).name)
        if signal.SIGCHLD in data:
            self._reap(self.hub.now)

    def _reap(self, now):
        """A child exited: finish the commands whose shell did (at once, not at the next
        deadline), and reap the orphans we adopted as they exit."""
        for child in list(self.children):
            child.check(now)
        reap_adopted({child.pid for child in self.children})

    def shutdown(self, why):
        """Stop accepting, tell every stream when to come back (spread out), then flush."""
        if self.stopping is not None:
            return
        self.log("info", f"{why}: shutting down")
        self.notify("STOPPING=1")
        self.stopping = time.time() + self.hub.config.shutdown_timeout
        for sock in self.listeners:
            if self.paused_until is None:
                self.selector.unregister(sock)
            sock.close()
        self.listeners = []
        if self.paused_until is not None:
            self._resume_accepting()        # the control socket, paused with the listeners
        retry = self.hub.config.retry or 3000
        for client in self._all_clients():
            self.fanout(sse.retry(random.randint(retry, 10 * retry)), [client])
        self.hub.stop()

    def _all_clients(self):
        return list({c for ch in self.hub.channels.values() for c in ch.clients})

    def _shutdown_step(self, now):
        clients = self._all_clients()
        if now < self.stopping and (self.fanq or any(c.pending for c in clients)):
            return
        for client in clients:
            client.conn.close("shutdown")
        self.running = False


def tune_listener(sock, send_timeout):
    """Options accepted sockets inherit (Linux): TCP keepalive, so half-open peers go away,
    and TCP_USER_TIMEOUT, so unacknowledged data cannot hold a connection forever."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6),
                        ("TCP_USER_TIMEOUT", int(send_timeout * 1000))):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            pass


def peer_address(addr):
    """The peer's IP as text; IPv4-mapped IPv6 as plain IPv4, so limits and bans match."""
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host
