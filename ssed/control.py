"""The control line protocol (SPEC section 5): JSON or text lines in, one answer line out.

`handle_line(line, hub, daemon)` is all the loop and the stdin console need. A line that
starts with `{` is JSON and is answered in JSON; any other line is the text a person types
(read and answered by textform.py). `daemon` gives what needs more than the hub: `reload()`
and `rss()`. The `COMMANDS` table holds each command's handler, fields, text arguments, and
whether and how it is logged (`log_line`).
"""
import json
import math
import re

from . import textform
from .addresses import network_of
from .hub import PublishError
from .later import Later
from .textform import QUOTING, render as render_text

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
    result = hub.publish(req["service"], req["data"], req.get("event"), client)
    if type(result) is Later:       # a cluster's: answered once Redis has the event
        return result.map(lambda done: done if isinstance(done, Exception) else
                          _published(done[0], done[1], client))
    return _published(result[0].id, result[1], client)


def _published(id, delivered, client):
    return _absent({"id": id, "delivered": delivered}, client is not None and not delivered)


def _cluster(hub, daemon, req):
    """This node's view of the cluster (SPEC 12); ok while Redis is down, too."""
    if hub.cluster is None:
        raise CommandError("cluster: this node is in no cluster (its config has no [cluster])")
    return hub.cluster.info(hub.now)


def _list(hub, daemon, req):
    """The services, then each template once with its number of channels (SPEC 10)."""
    services = [{"path": ch.path, "source": ch.config.cls or ch.config.source,
                 "clients": len(ch.clients), "last_id": ch.history.last_id}
                for ch in hub.channels.values() if ch.template is None]
    services += [{"path": t.path, "source": t.config.cls or t.config.source,
                  "clients": t.clients(), "last_id": None, "channels": len(t.channels)}
                 for t in hub.ondemand.by_prefix.values()]
    return {"services": services}


def _channels(hub, daemon, req):
    """A template's channels: path, clients, last_id, and `idle`, the seconds since one
    last had a subscriber or a publish (0 while it has subscribers)."""
    template = hub.ondemand.template(req["template"])
    if template is None:
        raise CommandError(f"no template {req['template']} (a template path ends in /*)")
    return {"channels": [
        {"path": ch.path, "clients": len(ch.clients), "last_id": ch.history.last_id,
         "idle": 0 if ch.clients else round(max(0.0, hub.now - max(ch.last_sent, ch.used)), 3)}
        for ch in template.channels.values()]}


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
    """A command: its handler, its JSON fields (name -> allowed types, required?), the names
    of its text-form arguments, whether it changes the daemon's state, and at what level a
    control connection logs it (`log_line`): a change of state is always logged, by default
    at info; one that can come thousands a second (publish) at debug."""

    def __init__(self, run, fields=(), text_args=(), changes_state=False, log="info"):
        self.run = run
        self.fields = dict(fields)
        self.text_args = text_args
        self.changes_state = changes_state
        self.log = log if changes_state else None


STR, OPT_STR = (str,), (str, type(None))
NUMBER = (int, float)

COMMANDS = {
    "publish": Spec(_publish, {"service": (STR, True), "data": (STR, True),
                               "event": (OPT_STR, False), "client": (OPT_STR, False)},
                    ("SERVICE", "[-e EVENT]", "[--client ID]", "DATA..."), True, log="debug"),
    "list": Spec(_list),
    "clients": Spec(_clients, {"service": (STR, True)}, ("SERVICE",)),
    "kick": Spec(_kick, {"service": (STR, True), "client": (STR, True)},
                 ("SERVICE", "CLIENT"), True),
    "channels": Spec(_channels, {"template": (STR, True)}, ("TEMPLATE",)),
    "ban": Spec(_ban, {"ip": (STR, True), "seconds": (NUMBER, False)},
                ("ADDR", "[SECONDS]"), True),
    "unban": Spec(_unban, {"ip": (STR, True)}, ("ADDR",), True),
    "bans": Spec(_bans),
    "stats": Spec(_stats),
    "reload": Spec(_reload, changes_state=True),
    "admin": Spec(_admin, {"service": (STR, True), "args": ((list,), True)},
                  ("SERVICE", "ARGS..."), True),
    "cluster": Spec(_cluster),
    "help": Spec(_help),
}


def log_line(request, debug=True):
    """(level, text) for the log line a control connection writes about `request` (a
    request dict, or None for a line that could not be read), or None: not logged. The text
    leaves out the peer, which the caller adds, and the data, which it gives as its size in
    bytes. With `debug` false, commands logged at debug give None, before any text is made
    (publishes come thousands a second)."""
    name = request.get("cmd") if request is not None else None
    spec = COMMANDS.get(name) if isinstance(name, str) else None
    if spec is None or spec.log is None or (spec.log == "debug" and not debug):
        return None
    shown = {k: v for k, v in request.items() if k != "data"}
    if isinstance(request.get("data"), str):
        shown["bytes"] = len(request["data"].encode("utf-8", "replace"))
    return spec.log, " ".join(f"{k}={v}" for k, v in shown.items())


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
    """A line a person typed to the request dict its JSON form would be (see textform)."""
    try:
        return textform.parse(line, COMMANDS)
    except textform.TextError as exc:
        raise CommandError(str(exc)) from None


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
        answer = spec.run(hub, daemon, req)
    except (CommandError, PublishError) as exc:
        return _failed(exc)
    if type(answer) is Later:
        return answer.map(lambda done: _failed(done) if isinstance(done, Exception)
                          else {"ok": True, **done})
    return {"ok": True, **answer}


def _failed(exc):
    return {"ok": False, "error": str(exc), **getattr(exc, "extra", {})}


def handle_line(line, hub, daemon):
    """One request line (str, or the CommandError LineSplitter made of a bad one) to
    (answer line as bytes, or a Later of it: a publish in a cluster; the request dict or
    None)."""
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
    if type(answer) is Later:
        return answer.map(lambda done: _line(done, as_json)), req
    return _line(answer, as_json), req


def _line(answer, as_json):
    text = json.dumps(answer, separators=(",", ":")) if as_json else render_text(answer)
    return (text + "\n").encode()


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
