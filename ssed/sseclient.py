"""An SSE client over http:// with plain sockets, for `ssectl listen`: it sends the request,
reads the response head, undoes `Transfer-Encoding: chunked` if a server uses it, feeds the
body to `sse.EventParser` as it arrives, and reconnects after the server's `retry:` with
`Last-Event-ID`, as a browser's EventSource does.

`listen(url, on_event, ...)` raises ValueError for a URL it cannot use, `HttpRefused` for a
response that is not an event stream (4xx always; 5xx only before the first stream opened),
and OSError when the very first connection fails. Later failures are reported to `on_retry`
and retried.
"""
import socket
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from .sse import EventParser

TIMEOUT = 30.0              # seconds to connect and to receive the response head
DEFAULT_RETRY_MS = 3000     # the reconnection delay until the server sends retry:
MAX_HEAD = 65536


class HttpRefused(Exception):
    """A response other than 200 text/event-stream."""

    def __init__(self, status, text):
        super().__init__(f"HTTP {status} {text}".rstrip())
        self.status = status


class Target(NamedTuple):
    host: str
    port: int
    path: str
    host_header: str


def parse_url(url):
    """The Target of an http:// URL; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"listen takes an http:// URL, not {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Target(parts.hostname, port, path, host if port == 80 else f"{host}:{port}")


def request(target, last_id):
    """The GET request head; `Last-Event-ID` only when there is one."""
    lines = [f"GET {target.path} HTTP/1.1", f"Host: {target.host_header}",
             "Accept: text/event-stream", "Cache-Control: no-cache", "User-Agent: ssectl"]
    if last_id:
        lines.append(f"Last-Event-ID: {last_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _head_end(buf):
    """Where the head in `buf` ends and the body starts, or None while it is incomplete."""
    ends = [(i, i + len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    return min(ends, default=None)


def read_head(sock):
    """The status, the headers (lower-case names) and the body bytes read with the head."""
    buf = b""
    while (end := _head_end(buf)) is None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
        if len(buf) > MAX_HEAD:
            raise ConnectionError("response head too long")
    status_line, *lines = buf[:end[0]].decode("latin-1").splitlines()
    version, _, status = status_line.partition(" ")
    if not version.startswith("HTTP/") or not status[:3].isdigit():
        raise ConnectionError(f"not an HTTP response: {status_line[:80]!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status[:3]), headers, buf[end[1]:]


class Dechunker:
    """Transfer-Encoding: chunked, undone incrementally: `feed(bytes)` returns the payload;
    `done` once the last chunk came. A bad chunk size raises ConnectionError."""

    def __init__(self):
        self.buf = b""
        self.left = 0           # payload bytes left in the current chunk
        self.done = False

    def feed(self, data):
        self.buf += data
        out = []
        while self.buf and not self.done:
            if self.left:
                piece = self.buf[:self.left]
                out.append(piece)
                self.left -= len(piece)
                self.buf = self.buf[len(piece):]
                continue
            line, sep, rest = self.buf.partition(b"\n")
            if not sep:
                break
            self.buf = rest
            size = line.split(b";")[0].strip()
            if not size:                # the CR LF after a chunk's payload
                continue
            try:
                self.left = int(size, 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size {size[:20]!r}") from None
            self.done = self.left == 0
        return b"".join(out)


def _chunked(headers):
    return "chunked" in headers.get("transfer-encoding", "").lower()


def body(sock, headers, rest):
    """Yield the body's bytes as they arrive, until the stream ends."""
    dechunk = Dechunker() if _chunked(headers) else None
    data = rest
    while True:
        if data:
            yield dechunk.feed(data) if dechunk else data
            if dechunk and dechunk.done:
                return
        data = sock.recv(65536)
        if not data:
            return


def refusal(sock, status, headers, rest):
    """The HttpRefused for a response that is not an event stream, with its body's first line."""
    if status == 200:
        return HttpRefused(200, f"Content-Type {headers.get('content-type') or '(none)'}, "
                                "not text/event-stream")
    length = headers.get("content-length", "")
    limit = 0 if status in (204, 304) else min(int(length), 4096) if length.isdigit() else 4096
    text = rest
    try:
        while len(text) < limit and b"\n" not in text.lstrip():
            chunk = sock.recv(4096)
            if not chunk:
                break
            text += chunk
    except OSError:
        pass
    if _chunked(headers):
        try:
            text = Dechunker().feed(text)
        except ConnectionError:
            pass
    first = text.decode("utf-8", "replace").strip().split("\n")[0].strip()
    return HttpRefused(status, first)


def _keepalive(sock):
    """No read timeout on a stream (it may be quiet for long), but TCP keepalive probes so that
    a dead peer ends it within about a minute."""
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def greeting(event, last_id):
    """Whether `event` is ssed's per-stream `session` greeting (its client id; it comes with
    every new stream, reconnects included, and has no id of its own): shown, but not one of
    the `count` events, or a reconnect would use up the count before the replay came."""
    return event.type == "session" and event.id == last_id


class Listener:
    """What `listen` keeps across connections: the last event id, the server's retry, the count."""

    def __init__(self, target, last_id, count, on_event):
        self.target, self.last_id, self.count, self.on_event = target, last_id, count, on_event
        self.seen = 0
        self.retry_ms = None
        self.connected = False      # a stream opened once: from then on, failures are retried

    def stream_once(self):
        """Open the stream and pass on its events until it ends; True once `count` is reached."""
        with socket.create_connection((self.target.host, self.target.port), TIMEOUT) as sock:
            sock.sendall(request(self.target, self.last_id))
            status, headers, rest = read_head(sock)
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if status != 200 or media != "text/event-stream":
                raise refusal(sock, status, headers, rest)
            self.connected = True
            _keepalive(sock)
            parser = EventParser(self.last_id)
            try:
                for data in body(sock, headers, rest):
                    before = parser.last_event_id
                    if self._events(parser, before, parser.feed(data)):
                        return True
            except OSError:
                pass                # a broken stream ends as a closed one does
            return False

    def _events(self, parser, last_id, events):
        """Pass on `events` (the last event id was `last_id` before them); True once `count`
        events that count have gone by."""
        self.last_id = parser.last_event_id
        if parser.retry is not None:
            self.retry_ms = parser.retry
        for event in events:
            self.on_event(event)
            if not greeting(event, last_id):
                self.seen += 1
            last_id = event.id
            if self.count is not None and self.seen >= self.count:
                return True
        return False

    def delay(self):
        return (DEFAULT_RETRY_MS if self.retry_ms is None else self.retry_ms) / 1000


def listen(url, on_event, last_id="", count=None, on_retry=lambda why, delay: None):
    """Pass each event of the stream at `url` to `on_event` until `count` events (forever if
    None; `session` greetings are passed on but not counted), reconnecting when the stream
    ends; see the module docstring for what it raises."""
    listener = Listener(parse_url(url), last_id, count, on_event)
    if count is not None and count <= 0:
        return
    while True:
        try:
            if listener.stream_once():
                return
            why = "stream closed"
        except HttpRefused as e:
            if e.status < 500 or not listener.connected:
                raise
            why = str(e)
        except OSError as e:
            if not listener.connected:
                raise
            why = e.strerror or str(e)
        on_retry(why, listener.delay())
        time.sleep(listener.delay())
