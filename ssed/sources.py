"""The built-in sources, each a `Service` subclass written with the public API only."""
import datetime
import json
import os
import re

from .log import Episode, Throttle
from .service import Service

MAX_OUTPUT = 1 << 20     # bytes of a command's output or a file's content we publish


def _text(raw):
    """Bytes from a command or file as event data: UTF-8, one final newline dropped."""
    text = raw.decode("utf-8", "replace")
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


class Time(Service):
    """The time every `interval` seconds: iso (local, with offset), unix, or a strftime."""

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

    def on_start(self):
        self.lines = list(self.config.messages)
        self.next = 0
        if self.config.file:
            try:
                with open(self.config.file, encoding="utf-8", errors="replace") as f:
                    self.lines += [line.rstrip("\r\n") for line in f if line.strip()]
            except OSError as exc:
                self.log(f"cannot read {self.config.file}: {exc.strerror}", "error")

    def on_tick(self):
        if self.lines:
            self.publish(self.lines[self.next % len(self.lines)])
            self.next += 1


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
        from .hub import PublishError   # not at the top: the hub imports the sources
        try:
            self.publish(text)
        except PublishError as exc:
            return self.failed(f"publish refused: {exc}")
        self.feed().recovered(self.now)


class Command(Fed):
    """Each tick, run `command` (one at a time, killed after `interval`); publish its output."""

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

    def on_start(self):
        self.last = {}
        self.ignored = Throttle(lambda level, text: self.log(text, level))

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
        changed = {s: p for s, p in quotes.items() if self.last.get(s) != p}
        self.last.update(changed)
        if changed:
            self.fed(json.dumps(changed, separators=(",", ":")))
        else:
            self.feed().recovered(self.now)


def _read(path):
    """(content, None) or (b"", why)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_OUTPUT + 1)
    except OSError as exc:
        return b"", f"cannot read {path}: {exc.strerror}"
    if len(data) > MAX_OUTPUT:
        return b"", f"{path} is over {MAX_OUTPUT} bytes"
    return data, None


class File(Service):
    """The content of `file` at start and whenever it changes (checked every `interval`)."""

    def on_start(self):
        self.seen = None
        self.failing = False
        self.on_tick()

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


class Publishers(Service):
    """`source = none`: fed only by publishers."""


SOURCES = {"time": Time, "messages": Messages, "quotes": Quotes, "command": Command,
           "file": File, "none": Publishers}
