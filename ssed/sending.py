"""The sending end of a handover (SPEC 13), to the new process (upgrade.py) or to
systemd's fd store (fdstore.py): descriptors in batches, a record in a memfd.
receiving.py is the other end."""
import os
import socket

from .handover import MAX_FDS

__all__ = ["MAX_FDS", "send", "send_fds", "send_record", "memfd_of"]


def send(sock, socks, record, timeout):
    """The descriptors in batches of MAX_FDS (`F`), then the record in a memfd (`S`)."""
    send_fds(sock, socks, timeout)
    send_record(sock, record, timeout)


def send_fds(sock, socks, timeout):
    sock.settimeout(timeout)
    fds = [s.fileno() for s in socks]
    for at in range(0, len(fds), MAX_FDS):
        socket.send_fds(sock, [b"F"], fds[at:at + MAX_FDS])


def send_record(sock, record, timeout):
    sock.settimeout(timeout)
    memfd = memfd_of(record)
    try:
        socket.send_fds(sock, [b"S"], [memfd])
    finally:
        os.close(memfd)


def memfd_of(parts):
    """A memfd holding `parts` (byte strings) one after the other, read from its start."""
    fd = os.memfd_create("ssed-handover", os.MFD_CLOEXEC)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
