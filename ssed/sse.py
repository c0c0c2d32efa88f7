"""The SSE wire format, both ways: framing events for subscribers (once per event) and
parsing a stream back into events (the WHATWG algorithm), for `ssectl listen` and the tests.

Pure: text and bytes in, bytes and values out.
"""
import re

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
