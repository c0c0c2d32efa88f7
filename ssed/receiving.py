"""The new process's end of a handover (SPEC 13): the descriptors and the record as they
arrive, from the old process over the socketpair it passed us (upgrade.py), or from
systemd's fd store (fdstore.py): a Received. What is done with them: takeover.py.
"""
import mmap
import os
import socket
import _socket

from . import handover
from .handover import MAX_FDS, HandoverError

ENV = "SSED_HANDOVER_FD"    # (upgrade.ENV) our end of the old process's socketpair


def inherited(env):
    """The socketpair end the old process gave us (and the variable removed, so that our
    own children do not see it), or None: not an upgrade."""
    value = env.pop(ENV, None)
    if value is None:
        return None
    if not value.isdigit():
        raise HandoverError(f"{ENV}={value!r} is not a descriptor")
    fd = int(value)
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


HANDOVER_WAIT = 30.0    # seconds the new process waits for the old one's sockets


def ready_then_receive(sock):
    """Say we are ready (config read), then take what the old process sends (bounded)."""
    try:
        sock.sendall(b"ready")
        return receive(sock, HANDOVER_WAIT)
    except OSError as exc:
        raise HandoverError(f"handover: {exc.strerror or exc}") from None


def receive(sock, timeout):
    """What the old process sends: batches of descriptors (`F`), then the memfd of the
    record (`S`): a Received. HandoverError if it is cut short or the kernel dropped
    descriptors (MSG_CTRUNC: over our RLIMIT_NOFILE)."""
    sock.settimeout(timeout)
    fds = []
    try:
        while True:
            msg, got, flags, _ = socket.recv_fds(sock, 16, MAX_FDS)
            if flags & socket.MSG_CTRUNC:
                for fd in fds + got:
                    os.close(fd)
                raise HandoverError("handover: descriptors were dropped (MSG_CTRUNC): "
                                    "raise LimitNOFILE")
            if msg == b"F":
                fds += got
            elif msg == b"S" and len(got) == 1:
                return Received(read_memfd(got[0]), fds)
            else:
                raise HandoverError(f"handover: unexpected message {msg[:40]!r}")
    except socket.timeout:
        raise HandoverError(f"handover: nothing from the old process for {timeout:g} s") from None


def read_memfd(fd):
    """The memfd's bytes, mapped (no copy: each stream's queued bytes are copied once, out
    of it); the descriptor is closed (the mapping stays)."""
    try:
        size = os.fstat(fd).st_size
        if not size:
            return b""
        return memoryview(mmap.mmap(fd, size, prot=mmap.PROT_READ))
    finally:
        os.close(fd)


class Received:
    """A record and the descriptors it names: `fds[i]` is its fd `i` (None once taken)."""

    def __init__(self, data, fds=None):
        """`fds` None: none yet (an fd store's, matched by inode afterwards)."""
        self.document, self.blob = handover.decode(data)
        named = len(self.document.get("inodes", ()))
        self.fds = [None] * named if fds is None else list(fds)
        if len(self.fds) != named:
            raise HandoverError(f"handover: {len(self.fds)} descriptors came, the record "
                                f"names {len(self.document.get('inodes', ()))}")

    def sock(self, index):
        """The socket at fd `index`, taken (each is taken once)."""
        fd = self.fds[index]
        if fd is None:
            raise HandoverError(f"handover: fd {index} named twice")
        self.fds[index] = None
        return _socket.socket(fileno=fd)

    def fd(self, index):
        fd, self.fds[index] = self.fds[index], None
        return fd

    def close_rest(self):
        for fd in self.fds:
            if fd is not None:
                os.close(fd)

    def listeners(self):
        """{listen entry: socket}: ("systemd", i) entries stay as they were."""
        out = {}
        for index, entry, _ in self.document["listeners"]:
            fd = self.fd(index)
            if fd is not None:      # (an fd store may have lost one: it is bound anew)
                out[tuple(entry)] = socket.socket(fileno=fd)
        return out

    def control(self):
        """(socket, whether we made it) of the control socket, or (None, False)."""
        info = self.document.get("control")
        fd = None if info is None else self.fd(info["fd"])
        if fd is None:
            return None, False
        return socket.socket(fileno=fd), info["owned"]
