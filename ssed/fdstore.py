"""`systemctl restart` with every stream kept (SPEC 13): on SIGTERM the daemon puts its
sockets and a memfd of their state (the record of snapshot.py) in systemd's fd store, and
the next start takes them back from LISTEN_FDS / LISTEN_FDNAMES.

Storing: one notify datagram per name, `FDSTORE=1` + `FDNAME=ssed-N` with up to MAX_FDS
descriptors (SCM_RIGHTS), then `FDNAME=ssed-state` with the memfd. systemd promises no order
for what it hands back, so the next start matches each descriptor to the record by its
(device, inode), closes what it does not know, and asks systemd to forget every name it
took (`FDSTOREREMOVE=1`). On by `$FDSTORE` (systemd >= 254 sets it to the unit's
FileDescriptorStoreMax=) or `fdstore = true` (older systemd).
"""
import array
import gc
import os
import socket
import stat

from . import snapshot
from .handover import MAX_FDS, HandoverError
from .receiving import Received, read_memfd
from .sending import memfd_of

PREFIX = "ssed-"
STATE = PREFIX + "state"
SEND_WITHIN = 5.0   # seconds a datagram may wait for room in systemd's queue


def enabled(cfg, env):
    value = env.get("FDSTORE", "")
    return (value.isdigit() and int(value) > 0) or bool(getattr(cfg, "fdstore", False))


class Store:
    """The SIGTERM side. `store(loop)`: True once everything is in the fd store (the loop
    then ends without a shutdown `retry:`), False to shut down as usual."""

    def __init__(self, daemon, notify, log):
        self.daemon, self.notify, self.log = daemon, notify, log

    def wanted(self):
        return self.notify.address is not None and enabled(self.daemon.cfg, os.environ)

    def store(self, loop):
        gc.disable()        # no collection in the middle of the freeze
        try:
            return self._store(loop)
        finally:
            gc.enable()

    def _store(self, loop):
        controls = snapshot.answer_controls(loop)
        snapshot.flush(loop)
        shot = snapshot.take(loop, self.daemon.listeners, self.daemon.control_info(),
                             {"stderr": None})
        names = []
        try:
            fds = [s.fileno() for s in shot.socks]
            for n, at in enumerate(range(0, len(fds), MAX_FDS)):
                names.append(f"{PREFIX}{n}")
                self._send(names[-1], fds[at:at + MAX_FDS])
            memfd = memfd_of(shot.data())
            try:
                self._send(STATE, [memfd])
            finally:
                os.close(memfd)
                self.notify.sock.settimeout(None)   # as the Notifier has it
        except OSError as exc:
            if self.notify.sock is not None:
                self.notify.sock.settimeout(None)
            for name in names:      # what did go in would keep those connections open
                self._remove(name)
            snapshot.rewatch(loop)
            self.log("error", f"fd store: storing failed ({exc.strerror or exc}); shutting "
                     "down without it")
            return False
        self.notify("STOPPING=1")
        snapshot.release(loop, shot)
        self.daemon.let_go("systemd's fd store")
        loop.leave(controls)
        self.log("info", f"SIGTERM: {len(shot.streams)} streams, {len(shot.socks)} sockets "
                 "and their state are in systemd's fd store; exiting")
        return True

    def _send(self, name, fds):
        sock = self.notify.sock or _dgram()
        self.notify.sock = sock
        # systemd reads as we send, but a datagram queue holds ~10 (net.unix.max_dgram_qlen):
        # wait for room, boundedly (then give up on the store and shut down as usual).
        sock.settimeout(SEND_WITHIN)
        # (socket.send_fds takes an address but does not pass it on to sendmsg)
        sock.sendmsg([f"FDSTORE=1\nFDNAME={name}".encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))], 0,
                     self.notify.address)

    def _remove(self, name):
        self.notify("FDSTOREREMOVE=1", f"FDNAME={name}")


def _dgram():
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)


def take(stored, notify, log):
    """The next start: `stored` is [(name, fd)] of the ssed-* names systemd passed. A
    Received with its descriptors in the record's order (those it does not name closed),
    or None (no state among them: each is closed). systemd forgets every name either way."""
    state = [fd for name, fd in stored if name == STATE]
    others = [fd for name, fd in stored if name != STATE]
    for name in sorted({name for name, _ in stored}):
        notify("FDSTOREREMOVE=1", f"FDNAME={name}")
    if len(state) != 1:
        for fd in others + state:
            os.close(fd)
        if stored:
            log("warning", f"fd store: {len(stored)} descriptors but no single state "
                "record among them: closed")
        return None
    data = read_memfd(state[0])
    try:
        received = Received(data)
    except HandoverError:
        for fd in others:
            os.close(fd)
        raise
    by_inode = {tuple(i): n for n, i in enumerate(received.document["inodes"]) if i}
    unknown = 0
    for fd in others:
        st = os.fstat(fd)
        n = by_inode.pop((st.st_dev, st.st_ino), None)
        if n is None:
            os.close(fd)
            unknown += 1
        else:
            received.fds[n] = fd
    if unknown or by_inode:
        log("warning", f"fd store: {unknown} descriptors the record does not name (closed), "
            f"{len(by_inode)} it names missing")
    return received


def at_path(sock, path):
    """Whether the control socket from the fd store is still reachable at `path` (its
    name, and a socket there). (A socket's fstat inode is sockfs's, not the path's: the
    two cannot be compared.)"""
    try:
        name = sock.getsockname()
        there = os.stat(path)
    except OSError:
        return False
    return stat.S_ISSOCK(there.st_mode) and os.path.abspath(name) == os.path.abspath(path)
