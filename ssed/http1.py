"""HTTP/1.0 and 1.1 requests parsed by hand (the bytes of our responses: responses.py).

Sans-IO: `RequestParser.feed(bytes)` returns a `Request`, None ("need more"), or raises
`HttpError` carrying the status to answer with. `whole_request(bytes)` is the fast path the
loop tries first on a connection's first read: the same Request for a whole head of the
common form, None for anything else. Nothing here touches a socket or a clock.
"""
import re
from urllib.parse import parse_qs, unquote

from .responses import error_reply

MAX_HEAD = 8192
JWT_HEAD = 16384          # with JWT keys configured (SPEC 11): room for an 8 KiB token
MAX_CHUNK_LINE = 4096     # a chunk size line or a trailer line

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d)\.(\d)\Z")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
# A whole block of well-formed header lines, each ended by a line end, checked in one match.
_HEADER_BLOCK = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*\r?\n)*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_ABSOLUTE = re.compile(r"(?i)https?://[^/?#]*")    # the scheme and authority
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?\Z")


class HttpError(Exception):
    """A peer's mistake, with the status and short text to answer with."""

    def __init__(self, status, text, headers=()):
        super().__init__(f"{status} {text}")
        self.status = status
        self.text = text
        self.headers = tuple(headers)

    def reply(self):
        return error_reply(self.status, self.text, self.headers)


class Request:
    __slots__ = ("method", "target", "path", "query", "version", "headers", "body")

    def __init__(self, method, target, path, query, version, headers, body=b""):
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name, default)

    def first(self, name, default=None):
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def __repr__(self):
        return f"<Request {self.method} {self.target}>"


class RequestParser:
    """Feed it bytes until it returns a Request. One request per parser."""
    __slots__ = ("max_body", "max_head", "buffer", "request", "continue_needed", "trailing",
                 "_body", "_scanned")

    def __init__(self, max_body=65536, max_head=MAX_HEAD):
        self.max_body = max_body
        self.max_head = max_head
        self.buffer = bytearray()
        self.request = None         # set once the head is parsed
        self.continue_needed = False
        self.trailing = b""
        self._body = None           # a body reader once the head is parsed
        self._scanned = 0           # bytes of the buffer already searched for the head's end

    def feed(self, data):
        self.buffer += data
        if self.request is None:
            if not self._parse_head():
                return None
            if self._body is None:
                return self._done()
        body, rest = self._body.feed(self.buffer)
        self.buffer = bytearray(rest)
        if body is None:
            return None
        self.request.body = body
        return self._done()

    def _done(self):
        self.trailing = bytes(self.buffer) if self.buffer else b""
        self.buffer.clear()
        return self.request

    def _parse_head(self):
        buffer = self.buffer
        # Empty lines before a request line are allowed (RFC 9112 2.2).
        while buffer.startswith((b"\r\n", b"\n")):
            del buffer[:2 if buffer[0] == 13 else 1]
        # Search only the new bytes (and 3 before them, where an end may have begun): a
        # head trickled a byte at a time must not be rescanned from the start each time.
        limit = self.max_head
        m = _HEAD_END.search(buffer, max(0, self._scanned - 3), limit + 4)
        if m is None:
            self._scanned = len(buffer)
            # Over only once no end of head (up to 4 bytes) can start within the limit.
            if len(buffer) >= limit + 4:
                raise HttpError(431, f"request head over {limit // 1024} KiB")
            return False
        if m.start() > limit:
            raise HttpError(431, f"request head over {limit // 1024} KiB")
        self.request = request = parse_head(bytes(buffer[:m.start()]))
        del buffer[:m.end()]
        self._body = body_reader(request, self.max_body)
        if self._body is not None:
            expect = request.headers.get("expect", "").lower()
            self.continue_needed = (expect == "100-continue" and request.version == (1, 1)
                                    and not buffer)
        return True


VERSION_NAMES = {"HTTP/1.1": (1, 1), "HTTP/1.0": (1, 0)}


def whole_request(data, max_head=MAX_HEAD):
    """`data` as a Request when it is exactly one complete head of the common form with no
    body; None otherwise (more to come, a body, repeated headers, anything odd), for the
    general parser. Same result as RequestParser, with a few string methods instead of
    regexes: letters for a method, printable ASCII for a target, CRLF line ends, letters,
    digits and '-' for header names, printable values."""
    if len(data) > max_head + 2 or not data.endswith(b"\r\n\r\n"):
        return None
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    version = VERSION_NAMES.get(version)
    if not (version and method.isalpha() and method.isascii() and target[:1] == "/"
            and target.isascii() and target.isprintable()):
        return None
    headers = {}
    for line in lines[1:-2]:
        name, colon, value = line.partition(":")
        key = name.lower()
        value = value.strip(" \t")
        if not (colon and key.isascii() and key.replace("-", "").isalnum()
                and value.isprintable()) or key in headers:
            return None
        headers[key] = value
    if "content-length" in headers or "transfer-encoding" in headers:
        return None
    if version == (1, 1) and "host" not in headers:
        return None
    if "?" in target or "%" in target or "#" in target:
        try:
            path, query = _split_target(method, target)
        except HttpError:
            return None
    else:
        path, query = target, {}
    return Request(method, target, path, query, version, headers)


def parse_head(head):
    """A request head (without the blank line) to a Request with an empty body."""
    end = head.find(b"\n")
    if end < 0:
        line, block = head, b""
    else:
        line, block = head[:end], head[end + 1:] + b"\n"
    method, target, version = _request_line(line[:-1] if line.endswith(b"\r") else line)
    headers = _headers(block)
    if version == (1, 1) and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without Host")
    path, query = _split_target(method, target)
    return Request(method, target, path, query, version, headers)


VERSIONS = {(b"1", b"1"): (1, 1), (b"1", b"0"): (1, 0)}


def _request_line(line):
    m = _REQUEST_LINE.match(line)
    if m is None:
        raise HttpError(400, "malformed request line")
    method, target, major, minor = m.groups()
    version = VERSIONS.get((major, minor))
    if version is None:
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    try:
        target = target.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request target is not ASCII") from None
    return method.decode("ascii"), target, version


REPEAT_REFUSED = ("host", "content-length", "authorization", "last-event-id")


def _headers(block):
    """Header lines, each ended by a line end, to a dict of lowercase names. The block is
    checked in one match (the common case); only a bad one is walked line by line, to
    say what is wrong with it."""
    if not _HEADER_BLOCK.match(block):
        _header_error(block)
    headers = {}
    # Latin-1 keeps obs-text bytes as they are; the check above left no CR but at line ends.
    for line in block.decode("latin-1").split("\n")[:-1]:
        name, _, value = line.partition(":")
        key = name.lower()
        value = value.strip(" \t\r")
        if key in headers:
            if key in REPEAT_REFUSED:
                raise HttpError(400, f"repeated {key} header")
            value = headers[key] + ", " + value
        headers[key] = value
    return headers


def _header_error(block):
    for line in _LINE_END.split(block)[:-1]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise HttpError(400, "malformed header line")
        if not _FIELD_VALUE.match(value):
            raise HttpError(400, "control character in a header value")
    raise HttpError(400, "malformed header line")


def _split_target(method, target):
    if not target.startswith("/"):
        absolute = _ABSOLUTE.match(target)      # absolute-form (RFC 9112 3.2.2)
        if absolute:
            target = "/" + target[absolute.end():].removeprefix("/")
        elif target == "*" and method == "OPTIONS":
            return "*", {}
        else:
            raise HttpError(400, "request target must start with /")
    raw_path, _, raw_query = target.partition("?")
    raw_path = raw_path.partition("#")[0]
    try:
        path = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
        query = parse_qs(raw_query, keep_blank_values=True, errors="strict") if raw_query else {}
    except UnicodeDecodeError:
        raise HttpError(400, "request target is not valid UTF-8") from None
    if _CONTROL.search(path):
        raise HttpError(400, "control character in the path")
    return path, query


def body_reader(request, max_body):
    """The reader for this request's body, or None when it has none."""
    headers = request.headers
    te = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if te is not None:
        if length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if te.strip().lower() != "chunked" or request.version != (1, 1):
            raise HttpError(501, "only the chunked transfer coding is supported")
        return ChunkedBody(max_body)
    if length is None:
        return None
    if not length.isdigit() or not length.isascii() or len(length) > 18:
        raise HttpError(400, "malformed Content-Length")
    size = int(length)
    if size > max_body:
        raise HttpError(413, f"body over {max_body} bytes")
    return FixedBody(size) if size else None


class FixedBody:
    def __init__(self, size):
        self.size = size
        self.data = bytearray()

    def feed(self, buf):
        """(body, trailing bytes) once complete, else (None, b"")."""
        self.data += buf
        if len(self.data) < self.size:
            return None, b""
        return bytes(self.data[:self.size]), bytes(self.data[self.size:])


class ChunkedBody:
    """The chunked transfer coding (RFC 9112 7.1), trailers read and ignored."""

    def __init__(self, max_body):
        self.max_body = max_body
        self.pending = bytearray()
        self.data = bytearray()
        self.need = None    # bytes of chunk data (plus its CRLF) still to read
        self.trailers = False

    def feed(self, buf):
        self.pending += buf
        while True:
            if self.trailers:
                return self._trailers()
            if self.need is None:
                if not self._size_line():
                    return None, b""
            elif not self._chunk_data():
                return None, b""

    def _line(self):
        m = _LINE_END.search(self.pending)
        # The same limit whether the line came whole or in pieces (a final CR may end it).
        end = len(self.pending) - self.pending.endswith(b"\r") if m is None else m.start()
        if end > MAX_CHUNK_LINE:
            raise HttpError(400, "chunk size line too long")
        if m is None:
            return None
        line = bytes(self.pending[:m.start()])
        del self.pending[:m.end()]
        return line

    def _size_line(self):
        line = self._line()
        if line is None:
            return False
        m = _CHUNK_SIZE.match(line.strip(b" \t"))
        if m is None:
            raise HttpError(400, "malformed chunk size")
        size = int(m.group(1), 16)
        if len(self.data) + size > self.max_body:
            raise HttpError(413, f"body over {self.max_body} bytes")
        if size == 0:
            self.trailers = True
        else:
            self.need = size
        return True

    def _chunk_data(self):
        if len(self.pending) < self.need + 1:
            return False
        end = self.need
        if self.pending[end:end + 2] == b"\r\n":
            skip = 2
        elif self.pending[end:end + 1] == b"\n":
            skip = 1
        elif len(self.pending) < end + 2:
            return False
        else:
            raise HttpError(400, "chunk data not followed by CRLF")
        self.data += self.pending[:end]
        del self.pending[:end + skip]
        self.need = None
        return True

    def _trailers(self):
        while True:
            line = self._line()
            if line is None:
                return None, b""
            if not line:
                return bytes(self.data), bytes(self.pending)
