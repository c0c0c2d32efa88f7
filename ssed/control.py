"""The control line protocol (SPEC section 5): JSON or text lines in, one answer line out.

`handle_line(line, hub, daemon)` is all the loop and the stdin console need. A line that
starts with `{` is JSON and is answered in JSON; any other line is the text a person types.
`daemon` gives what needs more than the hub: `reload()` and `rss()`.
"""
import json
import math
import re

from .addresses import network_of
from .hub import PublishError

MAX_LINE = 1 << 20
CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
# SPEC 4: publishers cannot set ids. One they name is refused, not silently replaced.
NO_PUBLISHER_IDS = "ids are made by the daemon; a publisher cannot set one"


class CommandError(Exception):
    """A request that cannot be done; the text is the answer's error, `extra` more fields."""

    def __init__(self, message, **extra):
        super().__init__(message)
        self.extra = extra


# -- the commands: each takes (hub, daemon, request dict), returns the answer's fields ----

def _publish(hub, daemon, req):
    if req.get("id") is not None:
        raise CommandError(f"publish: {NO_PUBLISHER_IDS}")
    client = req.get("client")
    if client is not None and not CLIENT_ID.match(client):
        raise CommandError("client must be 1-64 of A-Za-z0-9._:-")
    event, delivered = hub.publish(req["service"], req["data"], req.get("event"), client)
    return _absent({"id": event.id, "delivered": delivered}, client is not None and not delivered)


def _list(hub, daemon, req):
    return {"services": [{"path": ch.path, "source": ch.config.cls or ch.config.source,
                          "clients": len(ch.clients), "last_id": ch.history.last_id}
                         for ch in hub.channels.values()]}


def _clients(hub, daemon, req):
    return {"clients": [c.info() for c in _channel(hub, req["service"]).clients]}


def _kick(hub, daemon, req):
    closed = hub.kick(req["service"], req["client"])
    return _absent({"closed": closed}, not closed)


def _absent(answer, absent):
    """A publish to, or kick of, a client id with no stream on the service succeeds (the
    client may be reconnecting) but says so: `no_such_client`, only when true."""
    if absent:
        answer["no_such_client"] = True
    return answer


def _network(text):
    """An address or range to ban (addresses.network_of), or the command's error."""
    try:
        return network_of(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _ban(hub, daemon, req):
    seconds = req.get("seconds", 3600)
    try:    # JSON lets NaN, Infinity and integers too large for a float in
        finite = not isinstance(seconds, bool) and 0 < float(seconds) < math.inf
    except OverflowError:
        finite = False
    if not finite:
        raise CommandError("seconds must be a finite number > 0")
    return {"closed": hub.ban(_network(req["ip"]), seconds)}


def _unban(hub, daemon, req):
    return {"closed": 0, "removed": hub.unban(_network(req["ip"]))}


def _bans(hub, daemon, req):
    return {"bans": [{"ip": str(net), "until": until} for net, until in hub.bans.current(hub.now)]}


def _stats(hub, daemon, req):
    return {"uptime": round(hub.now - hub.started, 3), "clients": hub.client_count,
            "events_published": hub.stats["events_published"],
            "events_delivered": hub.stats["events_delivered"],
            "bytes_sent": hub.stats["bytes_sent"], "dropped": dict(hub.dropped),
            "refused": dict(hub.refused), "journal_failures": hub.stats["journal_failures"],
            "rss_bytes": daemon.rss(),
            "loop_stalls": hub.stats["loop_stalls"], "longest_stall": hub.stats["longest_stall"]}


def _reload(hub, daemon, req):
    return {"changes": daemon.reload()}


def _admin(hub, daemon, req):
    channel = _channel(hub, req["service"])
    try:
        result = channel.service.on_admin(list(req["args"]))
    except NotImplementedError as exc:
        raise CommandError(str(exc) or f"{channel.path} takes no admin commands") from None
    except Exception as exc:
        hub.hook_failed(channel.path, "on_admin", exc)
        raise CommandError(f"{channel.path}: admin failed: {exc}") from None
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = str(result)
    return {"result": result}


def _help(hub, daemon, req):
    return {"commands": [f"{name} {' '.join(spec.text_args)}".strip()
                         for name, spec in COMMANDS.items()], "quoting": QUOTING}


def _channel(hub, path):
    channel = hub.channels.get(path)
    if channel is None:
        raise CommandError(f"no service {path}")
    return channel


class Spec:
    """A command: its handler, its JSON fields (name -> allowed types, required?) and
    the names of its text-form arguments."""

    def __init__(self, run, fields=(), text_args=(), changes_state=False):
        self.run = run
        self.fields = dict(fields)
        self.text_args = text_args
        self.changes_state = changes_state


STR, OPT_STR = (str,), (str, type(None))
NUMBER = (int, float)

COMMANDS = {
    "publish": Spec(_publish, {"service": (STR, True), "data": (STR, True),
                               "event": (OPT_STR, False), "client": (OPT_STR, False)},
                    ("SERVICE", "[-e EVENT]", "[--client ID]", "DATA..."), True),
    "list": Spec(_list),
    "clients": Spec(_clients, {"service": (STR, True)}, ("SERVICE",)),
    "kick": Spec(_kick, {"service": (STR, True), "client": (STR, True)},
                 ("SERVICE", "CLIENT"), True),
    "ban": Spec(_ban, {"ip": (STR, True), "seconds": (NUMBER, False)},
                ("ADDR", "[SECONDS]"), True),
    "unban": Spec(_unban, {"ip": (STR, True)}, ("ADDR",), True),
    "bans": Spec(_bans),
    "stats": Spec(_stats),
    "reload": Spec(_reload, changes_state=True),
    "admin": Spec(_admin, {"service": (STR, True), "args": ((list,), True)},
                  ("SERVICE", "ARGS..."), True),
    "help": Spec(_help),
}


# -- parsing and answering -----------------------------------------------------------

def parse_json(line):
    try:
        req = json.loads(line)
    except ValueError as exc:
        raise CommandError(f"invalid JSON: {exc}") from None
    if not isinstance(req, dict):
        raise CommandError("a JSON request must be an object")
    return req


def parse_text(line):
    """A line a person typed to the request dict its JSON form would be. Words are read as a
    POSIX shell reads them (QUOTING says how); publish's DATA is the exception."""
    _, head, rest = _first_word(line.strip(), "command")
    if head.startswith("/"):
        return {"cmd": "admin", "service": head, "args": _words(rest, head)}
    if head == "publish":
        return _parse_text_publish(rest)
    spec = COMMANDS.get(head)
    if spec is None:
        return {"cmd": head}
    words = _words(rest, head)
    names = list(spec.fields)
    if head == "admin":
        return {"cmd": "admin", "service": words[0] if words else None, "args": words[1:]}
    if len(words) > len(names):
        raise CommandError(f"{head}: too many arguments (usage: {head} {' '.join(spec.text_args)})")
    req = {"cmd": head, **dict(zip(names, words))}
    if head == "ban" and "seconds" in req:
        req["seconds"] = _number(req["seconds"])
    return req


QUOTING = ("words are split at spaces; quote a word with '...' (taken as is) or \"...\" "
           "(where \\\" and \\\\ are \" and \\), or escape one character with \\, as in "
           "a shell. publish's DATA is the rest of the line as typed, quotes and spaces "
           "included, unless it starts with a quote: then it is one quoted word")

# One piece of a shell word: a plain character, a backslash escape, or a quoted string.
_PIECE = r"[^ \t'\"\\]|\\.|'[^']*'|" + r'"(?:[^"\\]|\\.)*"'
_WORD = re.compile(f"(?:{_PIECE})+")
_FLAG = re.compile(r"[ \t]*(-e|--event|--client)(?=[ \t]|\Z)")


def _first_word(text, command):
    """The first word of `text` as typed and unquoted (both '' at the end of the line), and
    the text after it."""
    text = text.lstrip(" \t")
    match = _WORD.match(text)
    end = match.end() if match else 0
    if end < len(text) and text[end] not in " \t":     # a quote or a backslash that is open
        raise CommandError(f"{command}: " + ("nothing after the final \\ to escape"
                                             if text[end] == "\\" else f"no closing {text[end]}"))
    raw = text[:end]
    return raw, re.sub(_PIECE, _unquote, raw), text[end:]


def _unquote(piece):
    text = piece.group()
    if text[0] == "'":
        return text[1:-1]
    if text[0] == '"':
        return re.sub(r'\\([\\"])', r"\1", text[1:-1])
    return text[-1]     # a plain character, or the one a backslash escapes


def _words(text, command):
    words = []
    while True:
        raw, word, text = _first_word(text, command)
        if not raw:
            return words
        words.append(word)


def _parse_text_publish(rest):
    """publish SERVICE [-e EVENT] [--client ID] DATA: the options end at the first word that
    is not one; DATA is the rest as typed (`it's`, JSON with its quotes, runs of spaces) unless
    it starts with a quote, which makes it one quoted word (to keep leading spaces, or to
    send data that looks like an option)."""
    raw, service, rest = _first_word(rest, "publish")
    req = {"cmd": "publish", "service": service if raw else None}
    while flag := _FLAG.match(rest):
        raw, value, rest = _first_word(rest[flag.end():], "publish")
        if not raw:
            raise CommandError(f"publish: {flag[1]} needs a value")
        req["client" if flag[1] == "--client" else "event"] = value
    data = rest.lstrip(" \t")
    if data[:1] in ("'", '"'):
        _, data, after = _first_word(data, "publish")
        if after.strip(" \t"):
            raise CommandError("publish: text after the quoted DATA (quote all of it, or "
                               "start it with another character to send it as typed)")
    req["data"] = data
    return req


def _number(text):
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise CommandError(f"not a number: {text!r}") from None


def validate(req):
    """The command's Spec, or CommandError naming what is wrong with the request."""
    name = req.get("cmd")
    if not isinstance(name, str):
        raise CommandError('missing "cmd"')
    spec = COMMANDS.get(name)
    if spec is None:
        raise CommandError(f"unknown command {name!r} (try: help)")
    for field, (types, required) in spec.fields.items():
        if field not in req or (req[field] is None and type(None) not in types):
            if required:
                raise CommandError(f"{name}: missing {field}")
            continue
        if not isinstance(req[field], types) or isinstance(req[field], bool):
            raise CommandError(f"{name}: {field} must be {_type_name(types)}")
    if name == "admin" and not all(isinstance(a, str) for a in req["args"]):
        raise CommandError("admin: args must be a list of strings")
    return spec


def _type_name(types):
    return {STR: "a string", OPT_STR: "a string or null", NUMBER: "a number",
            (list,): "a list"}.get(types, "of another type")


def execute(req, hub, daemon):
    """Run one request dict: the answer dict (with "ok")."""
    try:
        spec = validate(req)
        return {"ok": True, **spec.run(hub, daemon, req)}
    except CommandError as exc:
        return {"ok": False, "error": str(exc), **exc.extra}
    except PublishError as exc:
        return {"ok": False, "error": str(exc)}


def handle_line(line, hub, daemon):
    """One request line (str, or the CommandError LineSplitter made of a bad one) to
    (answer line as bytes, the request dict or None)."""
    if isinstance(line, CommandError):
        as_json = getattr(line, "as_json", False)
    else:
        as_json = line.lstrip().startswith("{")
    try:
        if isinstance(line, CommandError):
            raise line
        req = parse_json(line) if as_json else parse_text(line)
    except CommandError as exc:
        answer, req = {"ok": False, "error": str(exc)}, None
    else:
        answer = execute(req, hub, daemon)
    text = json.dumps(answer, separators=(",", ":")) if as_json else render_text(answer)
    return (text + "\n").encode(), req


def render_text(answer):
    """An answer as one line for a person: `ok key=value ...` or `error: ...`; control
    characters (a service's multi-line admin text, a CR in a typed path) escaped."""
    if not answer.get("ok"):
        return "error: " + _one_line(answer.get("error", "failed"))
    parts = ["ok"]
    for key, value in answer.items():
        if key == "ok" or key in NOTES:
            continue
        if isinstance(value, (list, dict)):
            value = json.dumps(value, separators=(",", ":"))
        elif value is None:
            value = "-"
        parts.append(f"{key}={value}")
    parts.extend(f"({note})" for key, note in NOTES.items() if answer.get(key) is True)
    return _one_line(" ".join(parts))


# Flags of an answer that the text form shows as a note rather than as key=value.
NOTES = {"no_such_client": "no such client now"}


_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _one_line(text):
    return _CONTROL_CHAR.sub(lambda m: _NAMED.get(m.group(), "\\x%02x" % ord(m.group())), text)


class LineSplitter:
    """Bytes in, whole lines out; a line over MAX_LINE yields one error and is skipped."""

    def __init__(self, limit=MAX_LINE):
        self.limit = limit
        self.buffer = bytearray()
        self.skipping = False

    def feed(self, data):
        """A list of str lines, or CommandError placeholders for oversized/bad ones."""
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                break
            raw = bytes(self.buffer[:end])
            del self.buffer[:end + 1]
            if self.skipping:
                self.skipping = False
                continue
            # A whole line can arrive in one read and still be over the limit.
            out.append(self._too_long(raw) if len(raw.removesuffix(b"\r")) > self.limit
                       else _decode(raw))
        # Not over yet if the extra byte is a CR that may end a line of exactly `limit`.
        if len(self.buffer) > self.limit + self.buffer.endswith(b"\r"):
            error = self._too_long(self.buffer)
            self.buffer.clear()
            if not self.skipping:
                self.skipping = True
                out.append(error)
        return out

    def _too_long(self, raw):
        error = CommandError(f"line over {self.limit} bytes")
        error.as_json = raw[:1] == b"{"
        return error


def _decode(raw):
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        error = CommandError("line is not valid UTF-8")
        error.as_json = raw[:1] == b"{"
        return error
