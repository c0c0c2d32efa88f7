"""systemd's notify protocol with the standard library. `env` is passed in (no globals)."""
import errno
import os
import socket


class Notifier:
    """Sends READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS= to $NOTIFY_SOCKET."""

    def __init__(self, env):
        path = env.get("NOTIFY_SOCKET", "")
        self.address = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]      # an abstract socket
        elif path.startswith("/"):
            self.address = path
        self.sock = None
        self.watchdog = watchdog_interval(env)

    def __call__(self, *fields):
        if self.address is None:
            return False
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError:
            return False


STATUS_EVERY = 5.0      # seconds between STATUS= lines, at most


class Watchdog:
    """WATCHDOG=1 at half the interval, sent by the turning loop itself (a loop that is
    stuck sends none, and systemd restarts it), and STATUS= at most every STATUS_EVERY
    seconds while the line changes."""

    def __init__(self, notify, status):
        self.notify = notify
        self.status = status        # the STATUS= line now
        self.next_ping = self.next_status = 0.0
        self.last_status = None

    def due(self, now):
        """Send what is due at `now`; the next time something is."""
        notify = self.notify
        if notify.address is None:
            return float("inf")
        if notify.watchdog is not None and now >= self.next_ping:
            notify("WATCHDOG=1")
            self.next_ping = now + notify.watchdog
        if now >= self.next_status:
            status = self.status()
            if status != self.last_status:
                notify(status)
                self.last_status = status
            self.next_status = now + STATUS_EVERY
        return min(self.next_ping if notify.watchdog else self.next_status, self.next_status)


def watchdog_interval(env):
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


class ActivationError(Exception):
    """A passed descriptor that is not a listening stream socket: one line, exit 1."""


STORED = "ssed-"     # the names of what the daemon put in the fd store (fdstore.py)


def _passed(env, pid):
    """(name, fd) of each descriptor systemd passed (LISTEN_FDS from fd 3, for this
    LISTEN_PID); names from LISTEN_FDNAMES, else "unknown"."""
    if env.get("LISTEN_PID") != str(pid) or not env.get("LISTEN_FDS", "").isdigit():
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    return [(names[i] if i < len(names) else "unknown", 3 + i)
            for i in range(int(env["LISTEN_FDS"]))]


def listen_fds(env, pid):
    """The sockets systemd passed to listen on, as (name, socket) pairs, what this daemon
    put in the fd store aside (`stored_fds`). ActivationError names the first descriptor
    that is not a listening stream socket (closed, a file, UDP...)."""
    passed = _passed(env, pid)
    return [(name, _listening(fd, len(passed))) for name, fd in passed
            if not name.startswith(STORED)]


def stored_fds(env, pid):
    """(name, fd) of what a previous run put in the fd store: raw descriptors, close-on-exec."""
    out = []
    for name, fd in _passed(env, pid):
        if name.startswith(STORED):
            try:
                os.set_inheritable(fd, False)
            except OSError:
                continue        # not open after all
            out.append((name, fd))
    return out


def _listening(fd, count):
    """fd as a socket, if it is one we can accept on."""
    where = f"socket activation: fd {fd} (of LISTEN_FDS={count})"
    try:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        why = {errno.EBADF: "is not open", errno.ENOTSOCK: "is not a socket"}.get(
            exc.errno, exc.strerror or str(exc))
        raise ActivationError(f"{where} {why}") from None
    try:
        kind = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError as exc:
        raise ActivationError(f"{where}: {exc.strerror or exc}") from None
    if kind != socket.SOCK_STREAM:
        raise ActivationError(f"{where} is a {_KINDS.get(kind, f'type {kind}')} socket, "
                              "not a listening stream socket (ListenStream=)")
    if not listening:
        raise ActivationError(f"{where} is a stream socket that is not listening")
    return sock


_KINDS = {socket.SOCK_DGRAM: "datagram", socket.SOCK_SEQPACKET: "seqpacket",
          socket.SOCK_RAW: "raw"}
