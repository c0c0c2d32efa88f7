"""Live upgrade, the old process's side (SPEC 13): start the new process, serve on until it
says it is ready, then freeze, hand it every socket (in batches over a UNIX socketpair,
`socket.send_fds`) and a memfd with the record of their state (snapshot.py, handover.py),
and go once it says it took them; or, if anything fails before that, kill it and serve on
as if nothing happened (rollback).

The pair is SOCK_SEQPACKET: each message arrives whole, with its descriptors. Messages:
new -> old: `ready` (config read, it waits for the sockets), `built` (it made its
connections of the first part), `took <ms>` (it owns them now);
old -> new: `F` with up to MAX_FDS descriptors, then `S` with the memfd of a record, twice:
first, while the old one still serves, the listeners, the control socket and every open
stream with what never changes of it (snapshot.FirstPart: FIRST_BATCH streams a turn, the
loop serving in between, then the record); then, frozen, the rest (what changed, streams
opened and closed since: snapshot.take_rest). The freeze is the second part only: at 10,000
streams, making and watching 10,000 connections is most of a handover.
A stream is owned by one process at every moment: the old one writes nothing from the freeze
on, keeps its descriptors until `took`, and the new one writes nothing before saying it (the
first part's descriptors are duplicates it holds unused until then; if it dies, the kernel
closes them and the old process's stay open).
"""
import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque

from . import reasons, snapshot
from .conns import HttpConn
from .control import CommandError
from .later import Later
from .sending import MAX_FDS, send, send_fds, send_record

ENV = "SSED_HANDOVER_FD"    # the new process's end of the socketpair
READY_WITHIN = 10.0         # seconds the new process has to read its config and say ready
TAKE_WITHIN = 10.0          # seconds it has to take the sockets once they are sent
FIRST_BATCH = 4 * MAX_FDS   # streams of the first part a turn (~2 ms of the loop's turn)
TAIL = 4096                 # bytes of the new process's stderr an answer carries
LEAVE_WITHIN = 2.0          # seconds a process that handed over gives its last answers


def command_line():
    """The command line that started this process, for the new one (SPEC 13: the same)."""
    return [sys.executable, *sys.orig_argv[1:]]


def child_env(env, fd):
    env = {k: v for k, v in env.items()
           if k not in ("WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    env[ENV] = str(fd)
    return env


class Handovers:
    """The loop's side of handing over: one upgrade at a time (the command, SIGUSR2),
    SIGTERM into systemd's fd store, and the last turns of a process that handed over."""

    def __init__(self, loop):
        self.loop = loop
        self.daemon = None      # cli.Daemon (its listeners, its control socket): set by cli
        self.store = None       # fdstore.Store: set by cli
        self.current = None     # the last Upgrade

    def upgrade(self):
        """A Later of the answer; CommandError if one cannot start now."""
        loop, up = self.loop, self.current
        if up is not None and up.state in ("loading", "sending", "preparing", "handing over"):
            raise CommandError(f"an upgrade is already in progress (new process pid {up.pid})")
        if loop.stopping is not None or loop.leaving is not None or self.daemon is None:
            raise CommandError("cannot upgrade now: this process is stopping")
        self.current = Upgrade(loop, self.daemon)
        return self.current.start()

    def on_sigusr2(self):
        self.loop.log("info", "SIGUSR2: upgrading")
        try:
            self.upgrade()      # (its outcome is logged either way)
        except CommandError as exc:
            self.loop.log("error", f"upgrade: {exc}")

    def pids(self):
        """The new process's pid while it is ours to wait for (not to reap as an orphan)."""
        up = self.current
        return (up.pid,) if up is not None and up.pid is not None else ()

    def storing(self):
        return self.store is not None and self.store.wanted()

    def store_or_stop(self):
        """SIGTERM with an fd store: every socket into it, or else the usual shutdown."""
        loop = self.loop
        if loop.stopping is None and loop.leaving is None and not self.store.store(loop):
            loop.shutdown("SIGTERM")

    def leave(self, controls):
        """Handed over: answer what is owed (the control connections, read no more; the
        HTTP replies being written), then stop, at most LEAVE_WITHIN seconds from now."""
        self.loop.leaving = (self.loop.clock() + LEAVE_WITHIN, controls)
        for conn in controls:
            conn.eof = True
            conn.lines.clear()
            conn._next()

    def leave_step(self, now):
        loop = self.loop
        by, controls = loop.leaving
        http = [k.data for k in loop.selector.get_map().values() if type(k.data) is HttpConn]
        for conn in http:
            if not (conn.replied or conn.waiting):
                conn.close(reasons.IDLE)    # answered, and would take another request
        busy = any(not c.closed for c in controls) or any(not c.closed for c in http)
        if now >= by or not busy:
            loop.running = False


class Upgrade:
    """One upgrade in progress. `state`: how far it is. `answer`: a Later of the answer
    fields (or a CommandError). The loop watches `sock` and the stderr pipe through it."""

    def __init__(self, loop, daemon, argv=None, env=None):
        self.loop = loop
        self.daemon = daemon        # cli.Daemon: the listeners, the control socket
        self.argv = argv or command_line()
        self.env = os.environ if env is None else env
        self.answer = Later()
        self.state = "starting"
        self.proc = self.sock = None
        self.err = None             # the read end of the new process's stderr
        self.tail = deque()
        self.tail_size = 0
        self.started = time.monotonic()
        self.closed = False
        self.deadline = None
        self.first = None           # the first part being sent (snapshot.FirstPart)
        self.first_ms = None        # the longest pause of a turn sending it
        self.first_turns = 0
        self.first_began = self.first_took = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(self.argv, env=child_env(self.env, theirs.fileno()),
                                         pass_fds=(theirs.fileno(),), stderr=err_w)
            # (stdin and stdout are ours: with --console, the new process takes it over)
        except OSError as exc:
            os.close(err_r)
            return self._failed(f"cannot start {self.argv[0]}: {exc.strerror or exc}")
        finally:
            theirs.close()
            os.close(err_w)
        self.err = err_r
        os.set_blocking(err_r, False)
        self.sock.setblocking(False)
        self.state = "loading"
        self.loop.watch(self.sock, self._message)
        self.loop.watch(err_r, self._stderr)
        self.loop.deadline(self, self.loop.hub.now + READY_WITHIN)
        self.loop.log("info", f"upgrade: started the new process (pid {self.proc.pid}); "
                      "serving until it is ready")
        return self.answer

    # -- while the new process loads ------------------------------------------------------

    def _stderr(self):
        """What the new process says before it takes over: kept (the tail), and passed on
        to our own stderr, where its lines would have gone."""
        try:
            data = os.read(self.err, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.unwatch(self.err)
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size - len(self.tail[0]) >= TAIL:
            self.tail_size -= len(self.tail.popleft())
        try:
            os.write(2, data)
        except OSError:
            pass

    def _message(self):
        try:
            msg = self.sock.recv(256)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if msg == b"ready" and self.state == "loading":
            self.state = "sending"
            self.loop.at_turn_end = self._send_first
            return None
        if msg == b"built" and self.state == "preparing":
            # Once every event of this turn is handled: none is left stale for after it.
            self.state = "handing over"
            self.loop.at_turn_end = self._hand_over
            return None
        when = "before it was ready" if self.state == "loading" else "while taking the sockets"
        self._failed(self._exit_reason(when) if not msg
                     else f"unexpected message {msg[:40]!r} from the new process")

    def expired(self):
        if self.state == "loading":
            self._failed(f"the new process was not ready within {READY_WITHIN:g} s")
        elif self.state == "preparing":
            self._failed(f"the new process did not take the sockets within {TAKE_WITHIN:g} s")

    def _send_first(self):
        """The first part of the handover, not frozen: the sockets and what never changes
        of the streams, FIRST_BATCH streams a turn (each turn a pause of the loop of a few
        ms, not a freeze: the streams' bytes go on in between), then its record."""
        # No collection from here to the freeze's end (or a rollback): a full one walks every
        # stream, tens of ms in one turn (seen as the longest turn, 30-60 ms, 2 in 20).
        gc.disable()
        self.first = snapshot.FirstPart(self.loop, self.daemon.listeners,
                                        self.daemon.control_info(), {"stderr": _Fd(2)})
        self.first_ms, self.first_turns, self.first_began = 0.0, 0, time.monotonic()
        self._send_batch()

    def _send_batch(self):
        loop, first, began = self.loop, self.first, time.monotonic()
        if self.state != "sending":
            return      # (it failed meanwhile)
        if loop.stopping is not None:
            return self._failed("this process is shutting down")
        try:
            send_fds(self.sock, first.take(FIRST_BATCH), TAKE_WITHIN)
            if first.done:
                send_record(self.sock, first.record(), TAKE_WITHIN)
        except OSError as exc:
            return self._failed(f"sending the sockets failed: {exc.strerror or exc}")
        self.sock.setblocking(False)
        self.first_ms = max(self.first_ms, (time.monotonic() - began) * 1000)
        self.first_turns += 1
        if not first.done:
            loop.at_turn_end = self._send_batch
            return
        self.state = "preparing"
        self.first_took = (time.monotonic() - self.first_began) * 1000
        loop.deadline(self, loop.hub.now + TAKE_WITHIN)

    # -- the handover --------------------------------------------------------------------

    def _hand_over(self):
        """Freeze, send, wait for `took` (bounded): commit, or roll back."""
        loop, frozen = self.loop, time.monotonic()
        if loop.stopping is not None:       # SIGTERM came in the same turn: it wins
            self.state = "preparing"
            return self._failed("this process is shutting down")
        gc.disable()        # no collection in the middle of the freeze
        try:
            self._freeze(loop, frozen)
        finally:
            gc.enable()

    def _freeze(self, loop, frozen):
        watched = snapshot.watched(loop)
        controls = snapshot.answer_controls(loop, watched)  # (what they publish goes first)
        snapshot.flush(loop)
        shot = snapshot.take_rest(loop, self.first, watched)
        shot.controls = controls
        try:
            record = shot.data()
            taken = time.monotonic()
            send(self.sock, shot.socks, record, TAKE_WITHIN)
            sent = time.monotonic()
            took = self._took(TAKE_WITHIN)
        except (OSError, HandoverFailed) as exc:
            why = exc.why if isinstance(exc, HandoverFailed) else \
                f"sending the sockets failed: {exc.strerror or exc}"
            return self._failed(why)
        done = time.monotonic()
        # Where the freeze went: our snapshot, sending, the new process's restore.
        self.parts = {"snapshot": taken - frozen, "send": sent - taken, "restore": done - sent,
                      "bytes": sum(map(len, record))}
        self._commit(shot, took, done - frozen)

    def _took(self, timeout):
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(256)
        except socket.timeout:
            raise HandoverFailed(f"the new process did not take the sockets within "
                                 f"{timeout:g} s") from None
        if not msg.startswith(b"took"):
            raise HandoverFailed(self._exit_reason("while taking the sockets") if not msg
                                 else f"the new process said {msg[:200]!r}")
        return msg

    def _commit(self, shot, took, freeze):
        loop = self.loop
        ms = round((time.monotonic() - self.started) * 1000)
        self.state, self.first = "done", None
        snapshot.release(loop, shot)
        self._stderr()      # what it said before `took` (from then on, it writes our stderr)
        self.daemon.let_go(f"pid {self.proc.pid}", self.proc.pid)
        self._stop_watching()
        answer = {"pid": self.proc.pid, "streams": len(shot.streams), "ms": ms,
                  "freeze_ms": round(freeze * 1000, 1)}
        parts = self.parts
        loop.log("info", f"upgrade: pid {self.proc.pid} took over {len(shot.streams)} "
                 f"streams (frozen {freeze * 1000:.1f} ms: snapshot "
                 f"{parts['snapshot'] * 1000:.1f}, send {parts['send'] * 1000:.1f}, its restore "
                 f"{parts['restore'] * 1000:.1f}; a record of {parts['bytes']} bytes; the first "
                 f"part before it sent in {self.first_turns} turns over {self.first_took:.0f} "
                 f"ms, pausing each at most {self.first_ms:.1f} ms; {ms} ms in all); this "
                 "process exits")
        loop.leave(shot.controls)
        self.answer.settle(answer)

    # -- rollback ------------------------------------------------------------------------

    def _failed(self, why):
        """Nothing was committed: the new process goes, we serve on; the answer says why."""
        frozen, self.state = self.state == "handing over", "failed"
        self.first = None       # (what it holds is ours again: let go of the list)
        gc.enable()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        if self.err is not None:
            self._drain_stderr()
        self._stop_watching()
        if frozen:
            snapshot.rewatch(self.loop)
        tail = b"".join(self.tail).decode("utf-8", "replace")[-TAIL:]
        self.loop.log("error", f"upgrade failed, serving on: {why}")
        self.answer.settle(CommandError(f"upgrade failed: {why}", stderr=tail))
        return self.answer

    def _drain_stderr(self):
        os.set_blocking(self.err, True)     # the process is gone: the pipe ends
        while True:
            try:
                data = os.read(self.err, 65536)
            except OSError:
                return
            if not data:
                return
            self.tail.append(data)
            try:
                os.write(2, data)
            except OSError:
                pass

    def _exit_reason(self, when):
        try:
            code = self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            return f"the new process closed the handover socket {when}"
        if code < 0:
            return f"the new process was killed by {signal.Signals(-code).name} {when}"
        return f"the new process exited with status {code} {when}"

    def _stop_watching(self):
        self.closed = True
        for fileobj in (self.sock, self.err):
            if fileobj is not None:
                self.loop.unwatch(fileobj)
        if self.sock is not None:
            self.sock.close()
        if self.err is not None:
            os.close(self.err)
            self.err = None


class HandoverFailed(Exception):
    def __init__(self, why):
        super().__init__(why)
        self.why = why


class _Fd:
    """A bare descriptor as snapshot's sockets are: something with fileno()."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd
