"""The built-in sources, each a `Service` subclass written with the public API only.

Each declares the config keys it reads beside it: `uses`, the source keys it reads (config.py
refuses any other source key set in its section, since it would be ignored), and `needs`,
the keys of which exactly one must be set.
"""
import datetime
import json
import math
import os
import re
import stat

from .channel import PublishError
from .log import Episode, Throttle
from .limits import MAX_MESSAGES_FILE, MAX_QUOTES, MAX_SOURCE_EVENT
from .service import Service


def _text(raw):
    """Bytes from a command or file as event data: UTF-8, one final newline dropped."""
    text = raw.decode("utf-8", "replace")
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


class Time(Service):
    """The time every `interval` seconds: iso (local, with offset), unix, or a strftime."""
    uses, needs = ("interval", "format"), ()

    def on_tick(self):
        self.publish(format_time(self.now, self.config.format))


def format_time(now, fmt):
    if fmt == "unix":
        return str(int(now))
    moment = datetime.datetime.fromtimestamp(now).astimezone()
    if fmt == "iso":
        return moment.isoformat(timespec="seconds")
    return moment.strftime(fmt)


class Messages(Service):
    """One message per tick, round robin, from `messages` or the lines of `file`."""
    uses, needs = ("interval", "file", "messages"), ("file", "messages")

    def on_start(self):
        self.lines = list(self.config.messages)
        self.next = 0
        if self.config.file:
            data, error = read_file(self.config.file, MAX_MESSAGES_FILE)
            if error:
                self.log(error, "error")
            else:
                self.lines += self._lines(data)

    def _lines(self, data):
        """The file's non-blank lines; one over MAX_SOURCE_EVENT is skipped with a warning."""
        kept = []
        for number, line in enumerate(_LINE_END.split(data), 1):
            if len(line) > MAX_SOURCE_EVENT:
                self.log(f"{self.config.file}:{number}: line of {len(line)} bytes is over "
                         f"{MAX_SOURCE_EVENT} bytes; skipped", "warning")
            elif line.strip():
                kept.append(line.decode("utf-8", "replace"))
        return kept

    def on_lease(self):
        """A new holder in a cluster goes on after the message the last one sent."""
        last = self.last_event
        if last is not None and last.data in self.lines:
            self.next = self.lines.index(last.data) + 1

    def on_tick(self):
        if self.lines:
            self.publish(self.lines[self.next % len(self.lines)])
            self.next += 1


_LINE_END = re.compile(rb"\r\n|\r|\n")    # as a text-mode file splits lines


class Fed(Service):
    """A source whose feed can fail on every tick (a command, a file): one line when it starts
    failing, a reminder now and then with the count, one line when it recovers."""

    _episode = None
    stopped = False

    def feed(self):
        """The episode of this service's feed, made on first use (so a subclass's on_start
        need not call ours)."""
        if self._episode is None:
            self._episode = Episode(lambda level, text: self.log(text, level),
                                    "command" if self.config.command else "file")
        return self._episode

    def on_stop(self):
        self.stopped = True     # a run killed because we stop is no failure of the feed

    def failed(self, why):
        if not self.stopped:
            self.feed().failed(self.now, why, "warning")

    def fed(self, text):
        """Publish `text`; a publish the hub refuses (not JSON under `json = true`) is a
        failure of the feed, in one line."""
        try:
            self.publish(text)
        except PublishError as exc:
            return self.failed(f"publish refused: {exc}")
        self.feed().recovered(self.now)


class Command(Fed):
    """Each tick, run `command` (one at a time, killed after `interval`); publish its output."""
    uses, needs = ("interval", "command"), ("command",)

    def on_tick(self):
        self.spawn(self.config.command, self.on_output)

    def on_output(self, output, error):
        if error:
            self.failed(error)
        elif output:
            self.fed(_text(output))
        else:
            self.feed().recovered(self.now)


_QUOTE = re.compile(r"\s*([A-Za-z0-9._^=-]{1,32})\s+(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*\Z")


def parse_quotes(text):
    """Lines "SYMBOL PRICE" to {symbol: number}, and the lines that were not of that form."""
    quotes, bad = {}, []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _QUOTE.match(line)
        if m is None:
            bad.append(line)
            continue
        price = m.group(2)
        quotes[m.group(1)] = int(price) if price.lstrip("-").isdigit() else float(price)
    return quotes, bad


class Quotes(Fed):
    """Each tick, read quotes from `command` or `file`; publish the ones that changed."""
    uses, needs = ("interval", "command", "file"), ("command", "file")

    def on_start(self):
        self.last = {}          # what this node's ticks read last: the next publishes changes
        self.whole = True       # the next tick publishes every quote, changed or not
        self.known = {}         # symbol -> (id, price), of the newest event that had it
        self.ignored = Throttle(lambda level, text: self.log(text, level))

    def on_lease(self):
        self.whole = True

    def on_event(self, event):
        """Every event of this service, whoever published it (in a cluster, the node that
        holds the lease): so that every node knows every quote, for its new subscribers."""
        try:
            quotes = json.loads(event.data)
        except ValueError:
            return
        if type(quotes) is not dict:
            return
        key, known = tuple(map(int, event.id.split("-"))), self.known
        for symbol, price in quotes.items():
            if type(price) not in (int, float) or not math.isfinite(price):
                continue
            if symbol in known:
                if known[symbol][0] < key:
                    known[symbol] = (key, price)
            elif len(known) < MAX_QUOTES:
                known[symbol] = (key, price)
            else:
                self.ignored("too many", self.now, "warning", f"over {MAX_QUOTES} symbols: "
                             f"{symbol[:32]!r} and others not kept for new subscribers")

    def on_connect(self, client, request):
        """A new subscriber gets every quote known now at once (its events carry only what
        changed), in the form of the first tick's event; one that resumes gets what it
        missed from the history instead."""
        if self.known and client.last_event_id is None:
            known = {symbol: price for symbol, (_, price) in self.known.items()}
            self.publish(json.dumps(known, separators=(",", ":")), client=client)

    def on_tick(self):
        if self.config.command:
            self.spawn(self.config.command, self.on_output)
        else:
            self.on_output(*_read(self.config.file))

    def on_output(self, output, error):
        if error:
            return self.failed(error)
        quotes, bad = parse_quotes(output.decode("utf-8", "replace"))
        if bad and not quotes:
            return self.failed(f"no line of the form 'SYMBOL PRICE' (the first: {bad[0][:200]!r})")
        if bad:
            self.ignored("bad lines", self.now, "warning", f"ignored {len(bad)} line(s) not "
                         f"of the form 'SYMBOL PRICE': {bad[0][:200]!r}")
        changed = quotes if self.whole else {
            s: p for s, p in quotes.items() if self.last.get(s) != p}
        self.last.update(changed)
        self.whole = False
        if changed:
            self.fed(json.dumps(changed, separators=(",", ":")))
        else:
            self.feed().recovered(self.now)


def _read(path):
    return read_file(path, MAX_SOURCE_EVENT)


def read_file(path, limit):
    """(content, None) or (b"", why), without ever blocking the loop (see `_open`)."""
    f, why = _open(path, limit)
    if f is None:
        return b"", why
    with f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            return b"", f"cannot read {path}: {exc.strerror}"
    if len(data) > limit:
        return b"", f"{path} is over {limit} bytes; not read"
    return data, None


def _open(path, limit):
    """(file, None) or (None, why). Opened non-blocking, since a plain open of a FIFO with no
    writer never returns; then anything but a regular file is refused, since reading a FIFO,
    a device or a socket can stall the loop or never end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror}"
    st = os.fstat(fd)
    why = (f"{path} is not a regular file ({_kind(st.st_mode)}); not read"
           if not stat.S_ISREG(st.st_mode) else
           f"{path} is over {limit} bytes ({st.st_size}); not read" if st.st_size > limit
           else None)
    if why:
        os.close(fd)
        return None, why
    return open(fd, "rb"), None


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode):
    return next((name for test, name in _KINDS if test(mode)), "not a file")


class File(Service):
    """The content of `file` at start and whenever it changes (checked every `interval`); a
    new subscriber gets the content held now at once."""

    uses, needs = ("interval", "file"), ("file",)
    replay_last = True

    def on_start(self):
        self.seen = None
        self.failing = False
        self.on_tick()

    def on_lease(self):
        self.seen = None

    def on_tick(self):
        try:
            st = os.stat(self.config.file)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            stamp = ("missing", exc.strerror)
        if stamp == self.seen:
            return
        self.seen = stamp
        data, error = _read(self.config.file)
        if error:
            self.log(error, "warning")
        else:
            self.publish(_text(data))


# What each source reads from `file`, at most, and whether the file may be missing at start:
# a `file` source publishes the file once it appears (its content "whenever it changes"), while
# `messages` reads it once at start and `quotes` needs it for every tick.
_FILES = {"messages": (MAX_MESSAGES_FILE, False), "quotes": (MAX_SOURCE_EVENT, False),
          "file": (MAX_SOURCE_EVENT, True)}


def check(config):
    """(line, message) for each file a built-in source could not read now (missing,
    unreadable, not a regular file, over its limit) and each `messages` over the limit."""
    errors = []
    for sc in config.services:
        limit, optional = _FILES.get(sc.source, (None, True))
        if sc.cls or limit is None:
            continue    # a plugin reads what it likes; other sources read no file
        if sc.file and not (optional and not os.path.exists(sc.file)):
            f, why = _open(sc.file, limit)
            if f is None:
                errors.append((sc.lines.get("file", sc.line), f"file: {why}"))
            else:
                f.close()
        for message in sc.messages:
            if len(message.encode("utf-8", "surrogatepass")) > MAX_SOURCE_EVENT:
                errors.append((sc.lines.get("messages", sc.line),
                               f"messages: a message of over {MAX_SOURCE_EVENT} bytes"))
    return errors


class Publishers(Service):
    """`source = none`: fed only by publishers."""
    uses, needs = (), ()


# The `source` names, in the order config errors list them.
SOURCES = {"none": Publishers, "time": Time, "messages": Messages, "quotes": Quotes,
           "command": Command, "file": File}
