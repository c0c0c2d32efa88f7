"""Signals as bytes on a socketpair (`signal.set_wakeup_fd`): a signal wakes the selector
like any other ready descriptor, and no flag is polled. `close()` puts back the wakeup fd
and the handlers that were there before, so a Loop leaves the process as it found it.
"""
import signal
import socket


def _ignore(signum, frame):
    """The byte on the wakeup fd does the work."""


class Wakeup:
    def __init__(self, signals):
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.previous_fd = signal.set_wakeup_fd(self.writer.fileno(), warn_on_full_buffer=False)
        self.previous = {sig: signal.signal(sig, _ignore) for sig in signals}

    def fileno(self):
        return self.reader.fileno()

    def read(self):
        """The signal numbers that came since the last read."""
        try:
            return self.reader.recv(64)
        except BlockingIOError:
            return b""

    def close(self):
        signal.set_wakeup_fd(self.previous_fd)
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.reader.close()
        self.writer.close()
