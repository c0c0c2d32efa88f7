"""A service's commands, and every process they leave behind.

`ChildProc` runs one command (`/bin/sh -c`, in a session of its own) with its stdout and
stderr read by the loop's selector, both bounded. It is done once the shell has exited: what
the pipes hold then is read without waiting for an EOF, which a background job that inherited
them may hold for ever; its process group is killed then (or at the deadline), taking the
shell's background jobs with it.

What leaves the group (`setsid`) is orphaned when its parent exits. As the subreaper
(`become_subreaper`, Linux) the daemon adopts it instead of init: `reap_adopted` collects such
processes as they exit and `kill_descendants` ends every one left at shutdown, so no process
a command started outlives the daemon. Like conns.py, this belongs to loop.py, the one owner
of descriptors (and of processes).
"""
import os
import signal
import subprocess
import sys
import time

from .limits import MAX_SOURCE_EVENT as MAX_CHILD_OUTPUT     # of stdout, and of stderr
from .log import escape

SHOWN_STDERR = 2000         # characters of a run's stderr its log line shows
PR_SET_CHILD_SUBREAPER = 36     # <linux/prctl.h>
REAP_BURST = 256
NAMES = ("output", "stderr")


class Children(list):
    """The commands running now (ChildProcs), for the loop."""

    def start(self, loop, order):
        """Carry out an orders.Spawn: start its run, or tell its `done` why not."""
        try:
            order.child = ChildProc(loop, order.command, order.timeout, order.done,
                                    order.name, order.cwd)
        except OSError as exc:
            # Not logged here: `done` hears it, and a source logs it once per episode (out of
            # descriptors, that was two lines every tick).
            order.done(b"", f"cannot start it: {exc.strerror or exc}")
            return
        self.append(order.child)

    def finished(self, child):
        if child in self:
            self.remove(child)

    def next_deadline(self):
        return min((c.deadline for c in self), default=float("inf"))

    def check(self, now):
        """Finish the runs whose shell has exited; kill the overdue."""
        for child in list(self):
            child.check(now)

    def reap(self, now, keep=()):
        """A child exited (SIGCHLD): finish the runs whose shell did (at once, not at the
        next deadline), and reap the orphans we adopted as they exit (not `keep`: the new
        process of an upgrade, which its Popen waits for)."""
        self.check(now)
        reap_adopted({child.pid for child in self} | set(keep))


class ChildProc:
    """One run of a service's command; `done(output, error)` once it is over."""

    def __init__(self, loop, command, timeout, done, name, cwd=None):
        self.loop = loop
        self.name = name
        self.done = done
        self.timeout = timeout
        self.deadline = loop.hub.now + timeout
        self.error = None
        self.finished = False
        self.bufs = (bytearray(), bytearray())     # stdout, stderr
        self.proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, cwd=cwd)
        self.pid = self.proc.pid
        self.files = [self.proc.stdout, self.proc.stderr]
        try:
            for which, file in enumerate(self.files):
                os.set_blocking(file.fileno(), False)
                loop.watch(file, _Pipe(self, which))
        except Exception:
            self.finished = True    # nothing may run unwatched, and `done` is the caller's
            self._stop()
            raise

    def _readable(self, which):
        self._pull(which)
        if self.files[which] is None:      # EOF: the shell may be gone too
            self.check(self.loop.hub.now)

    def _pull(self, which, drain=False):
        """Read pipe `which` once (or, with `drain`, until it is empty); past the bound, the
        run is killed."""
        while not self.finished and self.files[which] is not None:
            try:
                data = os.read(self.files[which].fileno(), 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                return self._close(which)
            self.bufs[which].extend(data)
            if len(self.bufs[which]) > MAX_CHILD_OUTPUT:
                return self.kill(f"{NAMES[which]} over {MAX_CHILD_OUTPUT} bytes")
            if not drain:
                return

    def _close(self, which):
        file = self.files[which]
        if file is not None:
            self.files[which] = None
            try:
                self.loop.unwatch(file)
            except KeyError:
                pass        # never registered (the constructor failed)
            file.close()

    def check(self, now):
        """Finish when the shell has exited; kill the run when it is overdue."""
        if self.finished:
            return
        if self._exited():
            # Whatever it printed is in the pipes now: take it, and do not wait for the EOF a
            # background job holding them (`sleep 1000 &`) would give only when it ends.
            for which in (0, 1):
                self._pull(which, drain=True)
            self._end()
        elif now >= self.deadline:
            self.kill(f"killed after {self.timeout:g} s")

    def _exited(self):
        """Whether the shell has exited. It stays unreaped (WNOWAIT) until `_end` has killed
        its group, so its pid, the group's id, cannot have been reused by then."""
        try:
            return os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def kill(self, why):
        if not self.finished:
            self.error = why
            self._end()

    def _end(self):
        """Kill what is left of the run's process group, reap the shell, report."""
        if not self.finished:
            self._stop()
            self._finish()

    def _stop(self):
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass        # the group is empty: the shell was alone and has exited
        for which in (0, 1):
            self._close(which)
        self.proc.wait()

    def _finish(self):
        self.finished = True
        self.loop.children.finished(self)
        status = self.proc.returncode
        error = self.error
        if error is None and status != 0:
            error = (f"exit status {status}" if status > 0
                     else f"killed by {signal.Signals(-status).name}")
        if self.bufs[1].strip():
            self.loop.throttle((self.name, "stderr"), self.loop.hub.now, "warning",
                               f"{self.name}: command stderr: {shown(self.bufs[1])}")
        self.done(bytes(self.bufs[0]), error)


class _Pipe:
    """What the selector holds for one of a run's pipes (`close` is for a bug in reading)."""
    __slots__ = ("child", "which")

    def __init__(self, child, which):
        self.child, self.which = child, which

    def ready(self, mask):
        self.child._readable(self.which)

    def close(self, reason):
        self.child.kill(reason)


def shown(raw):
    """A run's stderr as part of one log line: control characters (line breaks, terminal
    escapes) escaped, so it can neither forge a line nor reach a terminal; cut if long."""
    text = raw.decode("utf-8", "replace").strip()
    if len(text) > SHOWN_STDERR:
        text = f"{text[:SHOWN_STDERR]}... ({len(raw)} bytes in all)"
    return escape(text)


def become_subreaper():
    """Adopt our orphaned descendants (a command's `setsid` job whose shell exited) instead
    of init, so that they can be reaped and ended at shutdown. Linux only; best effort."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes   # here, not at the top: only the daemon needs it, once
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:   # no libc symbol, a sandbox that forbids it: we do without
        return False


def reap_adopted(ours):
    """Reap the exited children whose pid is not in `ours` (the shells of running commands,
    which their ChildProc reaps for the exit status): the processes we adopted. Each is
    looked at first (WNOWAIT), so one of `ours` is never taken. A plugin's own
    `subprocess.Popen` children would be reaped here too: plugins use `Service.spawn`."""
    for _ in range(REAP_BURST):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in ours:
            return
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            pass


def descendants(pid, spare=None):
    """The pids of every live process below `pid` (from /proc: Linux; elsewhere none), but
    `spare` and those below it. Zombies are left out: they have ended already, and are
    reaped, or go with their parent."""
    children = {}
    try:
        names = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    for name in names:
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                state, ppid = f.read().rsplit(b")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue        # gone meanwhile
        if state != b"Z":
            children.setdefault(int(ppid), []).append(int(name))
    found, todo = [], [pid]
    while todo:
        below = [p for p in children.get(todo.pop(), []) if p != spare]
        found += below
        todo += below
    return found


def kill_descendants(timeout=2.0, spare=None):
    """At exit: SIGKILL every process below the daemon and reap those that come back to it,
    until none is left (a process forked during one scan is found by the next); how many
    were killed. Bounded by `timeout` (a process stuck in the kernel may take longer).
    `spare`: the new process of an upgrade, which lives on (with what it runs)."""
    me = os.getpid()
    end = time.monotonic() + timeout
    killed = set()
    while True:
        left = descendants(me, spare)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        reap_adopted(() if spare is None else (spare,))
        if not left or time.monotonic() > end:
            return len(killed)
        time.sleep(0.01)    # SIGKILL takes effect asynchronously
