"""Log lines on stderr: one line per event worth a log, control characters escaped.

Under journald (JOURNAL_STREAM names stderr's device:inode) each line carries the `<N>`
syslog priority prefix and no timestamp, since the journal stamps lines itself.
"""
import datetime
import re

LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Token values a client sent, wherever a request target or header ends up in a line.
_TOKENS = re.compile(r"(?i)(access_token=|bearer\s+)[^&\s\"']+")


def escape(text):
    """Control characters as \\xNN, so one log call is always one line."""
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def under_journald(env, stderr_stat):
    """systemd's rule: JOURNAL_STREAM is "DEV:INODE" of the stream connected to stderr."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()) or stderr_stat is None:
        return False
    return (int(dev), int(ino)) == (stderr_stat.st_dev, stderr_stat.st_ino)


class Logger:
    """Writes to `stream`; `clock()` gives the wall time for timestamps (None under journald)."""

    def __init__(self, stream, level="info", clock=None, journald=False, secrets=()):
        self.stream = stream
        self.threshold = LEVELS[level]
        self.debug = self.threshold >= LEVELS["debug"]     # so hot paths skip building lines
        self.clock = None if journald else clock
        self.journald = journald
        self.secrets = set(s for s in secrets if s)

    def set_secrets(self, secrets):
        self.secrets = set(s for s in secrets if s)

    def __call__(self, level, message):
        priority = LEVELS[level]
        if priority > self.threshold:
            return
        text = _TOKENS.sub(r"\1***", escape(str(message)))
        for secret in self.secrets:
            text = text.replace(secret, "***")
        if self.journald:
            line = f"<{priority}>{text}\n"
        else:
            line = f"{self._stamp()} {level} {text}\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass    # a closed or full stderr must never take the daemon down

    def _stamp(self):
        now = self.clock() if self.clock else 0
        return datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds")
