"""Log lines on stderr: one line per event worth a log, control characters escaped, token
values a client sent (`access_token=`, `Bearer`) and Redis URL passwords redacted.

Under journald (JOURNAL_STREAM names stderr's device:inode) each line carries the `<N>`
syslog priority prefix and no timestamp, since the journal stamps lines itself.
"""
import datetime
import re

LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Token values a client sent, wherever a request target or header ends up in a line. The
# shape, not the configured values: replacing every occurrence of a configured token garbled
# unrelated words ("SIGHU***: reloading" for a token "P") and so told the reader the token.
_TOKENS = re.compile(r"(?i)(access_token=|bearer\s+)[^&\s\"']+")
# Anything shaped like a JWT (a base64url JSON header, two more segments), wherever it came
# from: a cookie, a header, a query, a plugin's own line.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
# The password of a Redis URL ([cluster] redis), should one ever reach a line: what follows
# `user:` up to the last `@` of the word (a password may hold `@`), or the whole user info
# when it has no `:`.
_REDIS = re.compile(r"(?i)(rediss?://(?:[^\s:/@]*:)?)\S*@")


def escape(text):
    """Control characters as \\xNN, so one log call is always one line."""
    return _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), text)


def redact(text):
    """`text` (a request target, a header) with the token values in it as `***`."""
    return _REDIS.sub(r"\1***@", _JWT.sub("***", _TOKENS.sub(r"\1***", text)))


def under_journald(env, stderr_stat):
    """systemd's rule: JOURNAL_STREAM is "DEV:INODE" of the stream connected to stderr."""
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()) or stderr_stat is None:
        return False
    return (int(dev), int(ino)) == (stderr_stat.st_dev, stderr_stat.st_ino)


class Logger:
    """Writes to `stream`; `clock()` gives the wall time for timestamps (None under journald)."""

    def __init__(self, stream, level="info", clock=None, journald=False):
        self.stream = stream
        self.threshold = LEVELS[level]
        self.debug = self.threshold >= LEVELS["debug"]     # so hot paths skip building lines
        self.clock = None if journald else clock
        self.journald = journald

    def __call__(self, level, message):
        priority = LEVELS[level]
        if priority > self.threshold:
            return
        # The places that log targets and config lines redact them; this catches the rest.
        text = redact(escape(str(message)))
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


class Throttle:
    """Lines that can repeat without end (a plugin hook that raises on every connect, a
    command's stderr): the first of each key is logged, then at most one per `every`
    seconds, saying how many were held back. `now` comes from the caller (house rule 6)."""

    MAX_KEYS = 4096     # keys are services and hooks; past this, forget the quiet ones

    def __init__(self, log, every=60.0):
        self.log = log
        self.every = every
        self.keys = {}      # key -> [next time a line may go out, lines held back]

    def __call__(self, key, now, level, message):
        """Log `message` unless `key` logged within `every` seconds; whether it went out."""
        entry = self.keys.get(key)
        if entry is not None and now < entry[0]:
            entry[1] += 1
            return False
        held = entry[1] if entry is not None else 0
        if entry is None and len(self.keys) >= self.MAX_KEYS:
            self.keys = {k: e for k, e in self.keys.items() if now < e[0]}
        self.keys[key] = [now + self.every, 0]
        if held:
            message = (f"{message} [{held} more like this in the last "
                       f"{self.every:g} s were not logged]")
        self.log(level, message)
        return True


class Episode:
    """A condition that fails and later recovers (a command, a journal's disk): one line
    when it starts failing, a reminder with the count every `remind` seconds while it lasts,
    one line when it recovers. `what` names it in every line."""

    def __init__(self, log, what, remind=300.0):
        self.log = log
        self.what = what
        self.remind = remind
        self.since = None       # when the episode began; None while all is well
        self.count = 0
        self.next_reminder = None

    @property
    def failing(self):
        return self.since is not None

    def failed(self, now, why, level="error"):
        """One more failure; logs the first of an episode, then a reminder now and then."""
        self.count += 1
        if self.since is None:
            self.since, self.next_reminder = now, now + self.remind
            self.log(level, f"{self.what} failing: {why} (logged once until it recovers)")
        elif now >= self.next_reminder:
            self.next_reminder = now + self.remind
            self.log(level, f"{self.what} still failing since {_when(self.since)}, "
                     f"{self.count} times: {why}")

    def recovered(self, now):
        """All is well again; logs the end of an episode, if one was going on."""
        if self.since is None:
            return
        self.log("info", f"{self.what} recovered after {self.count} failures since "
                 f"{_when(self.since)} ({now - self.since:.0f} s)")
        self.since, self.count, self.next_reminder = None, 0, None


def _when(timestamp):
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
