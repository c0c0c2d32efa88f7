"""RESP2, the Redis protocol, both ways and sans-IO (SPEC 12): commands to bytes, bytes to replies.

`command(*args)` is one command as an array of bulk strings. `Parser.feed(bytes)` buffers what
a Redis connection read; `Parser.get()` returns the next whole reply or `NEED`. Replies: a
simple string is a `str`, an integer an `int`, a bulk string `bytes` (nil: None), an array a
`list` (nil: None), and an error reply an `Error` value: Redis's own errors (NOAUTH, LOADING,
WRONGTYPE...) are answers to a command, not faults of the connection. Bytes that are not RESP2,
or a reply over `max_reply`, raise `ProtocolError`: the connection must then be dropped.

The parser never goes back over what it has read: it keeps its place in the buffer and a stack
of the arrays it is inside, so a big XREAD reply that arrives in many reads is parsed once.
Nothing here touches a socket or a clock.
"""

MAX_REPLY = 64 * 1024 * 1024
MAX_DEPTH = 32            # arrays inside arrays; XREAD needs 4
MAX_DIGITS = 20           # a 64-bit integer with its sign; also spares int() huge digit strings
MIN_ELEMENT = 3           # the shortest element, "+\r\n": an array of n is at least 3n bytes
_KINDS = b"+-:$*"
_NUMBERS = {ord("$"): "bulk length", ord("*"): "array length", ord(":"): "integer"}


class _Need:
    __slots__ = ()

    def __repr__(self):
        return "NEED"

    def __bool__(self):
        return False


NEED = _Need()            # get()'s answer when the buffer holds no whole reply


class ProtocolError(Exception):
    """The peer's bytes are not RESP2, or a reply is over the cap: drop the connection."""


class Error:
    """An error reply (`-ERR ...`) as a value: `text` is the line, `code` its first word."""
    __slots__ = ("text", "code")

    def __init__(self, text):
        self.text = text
        self.code = text.split(" ", 1)[0]

    def __eq__(self, other):
        return isinstance(other, Error) and other.text == self.text

    def __hash__(self):
        return hash(("resp.Error", self.text))

    def __repr__(self):
        return f"Error({self.text!r})"

    def __str__(self):
        return self.text


def _arg(value):
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return b"%d" % value
    raise TypeError(f"a Redis argument is str, bytes or int, not {type(value).__name__}")


def command(*args):
    """One command, e.g. command("XADD", key, "*", "data", b"..."), as RESP2 bytes."""
    if not args:
        raise ValueError("a command needs at least its name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg(arg)
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def pipeline(commands):
    """Several commands (each a sequence of arguments) in one write; replies come in order."""
    return b"".join(command(*args) for args in commands)


def _number(line, what):
    """The digits of an integer or a length line; ProtocolError for anything else."""
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(line) > MAX_DIGITS:
        raise ProtocolError(f"bad {what} {bytes(line)[:40]!r}")
    return int(line)


def _nil(n, what):
    if n != -1:
        raise ProtocolError(f"{what} {n}")
    return None


def _text(line):
    if b"\r" in line:
        raise ProtocolError(f"a CR inside a line: {bytes(line)[:80]!r}")
    return line.decode("utf-8", "replace")


class Parser:
    """Bytes of one Redis connection in, its replies out, in order. One parser per connection."""
    __slots__ = ("max_reply", "_buf", "_pos", "_stack", "_size", "_broken")

    def __init__(self, max_reply=MAX_REPLY):
        self.max_reply = max_reply
        self._buf = bytearray()
        self._pos = 0             # where the next element starts in _buf
        self._stack = []          # [items, declared length] of each array being filled
        self._size = 0            # bytes of the reply in progress already taken
        self._broken = None       # the ProtocolError, once raised: every get() raises it again

    def feed(self, data):
        # Dropping the bytes already parsed from the front of a bytearray moves its start
        # pointer rather than copying the rest, so this stays linear in what was read.
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def buffered(self):
        """Bytes fed and not yet part of a returned reply (a partial reply counts in part)."""
        return len(self._buf) - self._pos

    def get(self):
        """The next whole reply, or NEED until more bytes are fed."""
        if self._broken:
            raise self._broken
        try:
            return self._next()
        except ProtocolError as exc:
            self._broken = exc
            raise

    def _next(self):
        buf, stack = self._buf, self._stack
        pos = self._pos
        while True:
            value, end, opened = self._element(buf, pos)
            if value is NEED:
                self._pos = pos
                return NEED
            self._size += end - pos
            pos = end
            if opened:
                if len(stack) >= MAX_DEPTH:
                    raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
                if self._size + MIN_ELEMENT * opened > self.max_reply:
                    raise ProtocolError(f"reply over {self.max_reply} bytes "
                                        f"(an array of {opened})")
                stack.append([[], opened])
                continue
            if self._size > self.max_reply:
                raise ProtocolError(f"reply over {self.max_reply} bytes")
            while stack:                # the element ends the arrays it fills, innermost first
                top = stack[-1]
                items = top[0]
                items.append(value)
                if len(items) < top[1]:
                    break
                stack.pop()
                value = items
            else:
                self._pos = pos
                self._size = 0
                return value

    def _element(self, buf, pos):
        """(value, end, 0) for the element at `pos`; (None, end, n) for the header of an array
        of n > 0 elements still to come; (NEED, pos, 0) when its bytes are not all here."""
        eol = buf.find(b"\n", pos)
        if eol < 0:
            return self._need(pos, len(buf) - pos), pos, 0
        if eol == pos or buf[eol - 1] != 13:
            raise ProtocolError(f"a line not ended by CRLF: {bytes(buf[pos:eol + 1])[:80]!r}")
        kind = buf[pos]
        line = buf[pos + 1:eol - 1]
        if kind == 36:                                  # $ bulk string
            n = _number(line, "bulk length")
            if n < 0:
                return _nil(n, "bulk length"), eol + 1, 0
            end = eol + 3 + n
            if self._size + end - pos > self.max_reply:
                raise ProtocolError(f"reply over {self.max_reply} bytes (a bulk of {n})")
            if end > len(buf):
                return self._need(pos, 0), pos, 0
            if buf[end - 2:end] != b"\r\n":
                raise ProtocolError("a bulk string not followed by CRLF")
            return bytes(buf[eol + 1:end - 2]), end, 0
        if kind == 42:                                  # * array
            n = _number(line, "array length")
            if n > 0:
                return None, eol + 1, n
            return ([] if n == 0 else _nil(n, "array length")), eol + 1, 0
        if kind == 43:                                  # + simple string
            return _text(line), eol + 1, 0
        if kind == 45:                                  # - error
            return Error(_text(line)), eol + 1, 0
        if kind == 58:                                  # : integer
            return _number(line, "integer"), eol + 1, 0
        raise ProtocolError(f"unknown reply type {bytes(buf[pos:pos + 1])!r}")

    def _need(self, pos, partial_line):
        """Keep our place; a partial line that cannot turn out well is refused now."""
        if partial_line:
            kind = self._buf[pos]
            if kind not in _KINDS:
                raise ProtocolError(f"unknown reply type {bytes(self._buf[pos:pos + 1])!r}")
            if kind in _NUMBERS and partial_line > MAX_DIGITS + 2:
                raise ProtocolError(f"bad {_NUMBERS[kind]} {bytes(self._buf[pos:pos + 40])!r}")
            if self._size + partial_line > self.max_reply:
                raise ProtocolError(f"reply over {self.max_reply} bytes (a line without an end)")
        self._pos = pos
        return NEED
