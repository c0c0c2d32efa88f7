"""The SSE wire format, both ways: framing events for subscribers (once per event) and
parsing a stream back into events (the WHATWG algorithm), for `ssectl listen` and the tests.

Pure: text and bytes in, bytes and values out.
"""
import codecs
import re
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def frame(data, event=None, id=None):
    """One event as the bytes every subscriber gets: id, event, one data line per line."""
    parts = []
    if id is not None:
        parts.append(f"id: {id}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def bad_event_type(event):
    """Why `event` cannot be an event type (it would inject a field), or None if it can."""
    if event is None:
        return None
    if not isinstance(event, str):
        return "event type must be a string"
    for ch, name in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if ch in event:
            return f"event type must not contain {name}"
    return None


def comment(text):
    """A comment line (ignored by clients; keeps idle connections alive)."""
    return b"".join(b": " + line.encode() + b"\n" for line in _LINE_BREAK.split(text)) + b"\n"


def retry(ms):
    """The reconnection delay the client should use."""
    return b"retry: %d\n\n" % ms


def prime(id):
    """A bare id with no data: sets the browser's lastEventId without firing an event."""
    return b"id: " + id.encode() + b"\n\n"


# ---- parsing: the WHATWG "event stream interpretation" algorithm, incrementally ----------

@dataclass(frozen=True)
class Event:
    """One dispatched event, as a browser's MessageEvent would see it."""
    type: str = "message"
    data: str = ""
    id: str = ""            # the last event ID string at dispatch (may come from an earlier event)


class EventParser:
    """Bytes of a `text/event-stream` body in, dispatched events out.

    `feed(data)` returns the events completed by `data` (a list, maybe empty); chunks may split
    lines, CR LF pairs and UTF-8 sequences anywhere. `last_event_id` is the event source's last
    event ID string (what a client sends back as `Last-Event-ID`); it changes only when an event
    is dispatched, which includes a blank line after a bare `id:` (no event fires, the id is
    still taken). `retry` is the latest valid `retry:` value in ms, or None. A new connection
    needs a new parser: pass it `last_event_id` to carry the id over, as a browser does; an
    event left incomplete when a stream ends is never dispatched, so there is nothing to flush.
    """

    def __init__(self, last_event_id=""):
        self.last_event_id = last_event_id
        self.retry = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False       # True once the first character (a BOM or not) went by
        self._after_cr = False      # the last line ended with CR: a leading LF is its pair
        self._line = ""             # an incomplete line
        self._data = []             # the data buffer, one item per data field
        self._type = ""             # the event type buffer
        self._id = last_event_id    # the last event ID buffer

    def feed(self, data):
        """Parse the next bytes of the stream; returns the events they complete."""
        text = self._decoder.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._after_cr and text[:1] == "\n":
            text = text[1:]
        self._after_cr = False
        events = []
        start = 0
        for end in _LINE_BREAK.finditer(text):
            event = self._line_done(self._line + text[start:end.start()])
            self._line = ""
            if event is not None:
                events.append(event)
            start = end.end()
        self._line += text[start:]
        self._after_cr = text[-1:] == "\r"
        return events

    def _line_done(self, line):
        """Process one line; returns the event a blank line dispatches, if any."""
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self):
        self.last_event_id = self._id
        data, self._data = self._data, []
        type_, self._type = self._type, ""
        if not data:
            return None
        return Event(data="\n".join(data), type=type_ or "message", id=self.last_event_id)
