"""From a parsed request to what the loop must do: a whole reply to send and close, or a
stream to open. Routes, bans and limits, tokens, CORS, status endpoints, the index page and
POST publishing live here. No sockets: the hub and the peer's address come in as values.
"""
import functools
import hmac
import json
from importlib import resources

from . import admission, auth, clustered, forwarded, jwt, metrics, postbody, reasons
from .addresses import in_networks
from .config import RESERVED
from .control import CLIENT_ID
from .http1 import HttpError
from .responses import error_reply, keeps_alive, reply, response_head
from .hub import ChannelsFull, PublishError
from .channel import ClusterUnavailable
from .later import Later
from .service import Refuse

STREAM_HEADERS = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                  ("X-Accel-Buffering", "no"), ("Connection", "close"))
STREAM_HEAD = response_head(200, STREAM_HEADERS)
# What browsers ask of every server: nothing to show, and not a refusal to count. A day's
# max-age so that a browser does not ask again on every page.
FAVICON = response_head(204, (("Cache-Control", "max-age=86400"), ("Connection", "close")))
# Held events of each public service the index page shows a new visitor (issue 11).
INDEX_RECENT = 5


class Reply:
    """Bytes to send; `refused` names the reason when it turns a client away; `keep`: the
    connection stays open for the next request (publishers, scrapers) instead of closing."""
    __slots__ = ("data", "refused", "keep")

    def __init__(self, data, refused=None, keep=False):
        self.data = data
        self.refused = refused
        self.keep = keep


class Stream:
    """A new subscriber: `data` (head, retry, session event, replay) then live events."""
    __slots__ = ("data", "client", "head_only")

    def __init__(self, data, client, head_only=False):
        self.data = data
        self.client = client
        self.head_only = head_only


def refusal(status, text, reason, headers=()):
    return Reply(error_reply(status, text, headers), reason)


def handle(hub, request, address):
    """Route one request from `address` (the peer's): a Reply or a Stream. From a trusted
    proxy, the request is the client's it names (SPEC 14): from here on, bans, limits,
    `status_allow`, the stream's record and the logs know that address alone. Per request,
    not per connection: a proxy's kept-alive connection carries many clients."""
    trusted = hub.config.trusted_proxies
    if trusted:
        try:
            address = forwarded.client(request.headers, address, trusted)
        except HttpError as exc:
            return Reply(exc.reply(), reasons.http(exc.status))
    try:
        if hub.banned(address):     # the "request" ladder, whose one rung is a ban
            return _refused(admission.refusal("request", hub.config, banned=True))
        if request.path in RESERVED:     # /healthz, /metrics
            return _status(hub, request, address)
        channel = hub.channels.get(request.path)
        if channel is not None:
            return _service(hub, request, address, [channel])
        if request.path == "/favicon.ico":
            return _only(request, ("GET", "HEAD")) or Reply(FAVICON)
        if request.path == "/":
            if "service" in request.query:
                return _multiplexed(hub, request, address)
            if hub.config.index:
                return _only(request, ("GET", "HEAD")) or _index(hub, request)
        channel = _provisional(hub, request)
        if channel is not None:
            return _service(hub, request, address, [channel])
        return refusal(404, f"no service at {request.path}", reasons.NOT_FOUND)
    except HttpError as exc:
        return Reply(exc.reply(), reasons.http(exc.status))


def _provisional(hub, request):
    """The channel a template would make at the request's path (not made yet), or None.
    The path as sent: a percent-encoded one is no channel's (SPEC 10)."""
    if not hub.ondemand.by_prefix or "%" in request.target.partition("?")[0]:
        return None
    return hub.ondemand.find(request.path)


def _refused(refused):
    """The Reply for an admission.Refusal."""
    return Reply(refused.reply(), refused.reason)


def _only(request, methods):
    if request.method not in methods:
        return refusal(405, f"{request.method} not allowed here", reasons.METHOD,
                       [("Allow", ", ".join(methods))])
    return None


def _status(hub, request, address):
    refused = _only(request, ("GET", "HEAD"))
    if refused:
        return refused
    if not in_networks(address, hub.config.status_allow):
        return refusal(403, f"{request.path} is not open to {address}", reasons.STATUS_FORBIDDEN)
    status = 200
    if request.path == "/healthz":
        # A journal that cannot be written refuses every publish to its service.
        status, body = (
            (503, "cluster unavailable\n") if hub.cluster is not None and not hub.cluster.up
            else (503, "journal failing\n") if hub.journal_failing() else (200, "ok\n"))
        ctype = "text/plain; charset=utf-8"
    else:
        body = metrics.render(metrics.samples(hub))
        ctype = "text/plain; version=0.0.4; charset=utf-8"
    data = reply(status, body, ctype)
    return Reply(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if request.method == "HEAD" else data)


# -- services: streams, preflight, publishing --------------------------------------------

def _multiplexed(hub, request, address):
    """`/?service=/a&service=/b`: one stream for several services."""
    channels = []
    for path in request.query["service"]:
        channel = hub.channels.get(path) or hub.ondemand.find(path)
        if channel is None:
            return refusal(404, f"no service at {path}", reasons.NOT_FOUND)
        if all(ch.path != path for ch in channels):
            channels.append(channel)
    return _service(hub, request, address, channels)


def _service(hub, request, address, channels):
    if request.method == "OPTIONS":
        return _preflight(hub, request, channels)
    try:
        if request.method == "POST" and request.path != "/":
            result = _publish(hub, request, channels[0])
        elif request.method in ("GET", "HEAD"):
            result = _subscribe(hub, request, address, channels)
        else:
            result = _only(request, ("GET", "HEAD", "OPTIONS") + (
                ("POST",) if _takes_post(request, channels) else ()))
    except HttpError as exc:
        result = Reply(exc.reply(), reasons.http(exc.status))
    if isinstance(result, Reply) and result.refused:
        # A refusal carries CORS too, so that a page on an allowed origin can read the 401
        # (or 400, 429...) instead of seeing only a network error.
        result.data = _add_headers(result.data, _cors(hub, request, channels))
    return result


def _takes_post(request, channels):
    """Whether a POST here publishes: one service (not a multiplexed stream) with a
    publish_token."""
    config = channels[0].config
    return bool(config.publish_token or config.publish_auth) and request.path != "/"


def http_error(hub, exc, request):
    """The reply to an HttpError the request parser raised (a body over max_body, a bad
    chunk...) once it had read the head of `request` (None: it had not), with the CORS
    headers of the service(s) it was for, as every refusal there has, so that a page on an
    allowed origin can read it."""
    channels = _channels(hub, request) if request is not None else None
    data = exc.reply()
    return _add_headers(data, _cors(hub, request, channels)) if channels else data


def _channels(hub, request):
    """The services a request is for, or None (the index, a status path, an unknown one)."""
    channel = hub.channels.get(request.path) or _provisional(hub, request)
    if channel is not None:
        return [channel]
    if request.path == "/" and "service" in request.query:
        found = [hub.channels.get(path) or hub.ondemand.find(path)
                 for path in request.query["service"]]
        return found if all(found) else None
    return None


def _add_headers(data, headers):
    head, sep, body = data.partition(b"\r\n\r\n")
    extra = "".join(f"\r\n{name}: {value}" for name, value in headers).encode("latin-1")
    return head + extra + sep + body


def _cors(hub, request, channels):
    """The CORS headers for this request's Origin: the origin itself (or `*` where `*` is
    configured) if every service allows it; nothing but `Vary` otherwise."""
    origin = request.header("origin")
    if origin is None:
        return []
    wildcard = True
    for channel in channels:
        allowed = channel.config.cors_origins or hub.config.cors_origins
        if "*" not in allowed:
            wildcard = False
            if origin.lower() not in allowed:
                return [("Vary", "Origin")]
    if wildcard or not hub.config.jwt_cookie:
        return [("Access-Control-Allow-Origin", "*" if wildcard else origin), ("Vary", "Origin")]
    # A listed origin may send the JWT cookie (SPEC 11); `*` never goes with credentials.
    return [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin")]


def _preflight(hub, request, channels):
    headers = _cors(hub, request, channels)
    if not any(name == "Access-Control-Allow-Origin" for name, _ in headers):
        return Reply(reply(204, b"", headers=headers))
    methods = "GET, HEAD, POST, OPTIONS" if _takes_post(request, channels) else "GET, HEAD, OPTIONS"
    headers += [("Access-Control-Allow-Methods", methods),
                ("Access-Control-Allow-Headers", "Authorization, Last-Event-ID, Content-Type"),
                ("Access-Control-Max-Age", "600")]
    return Reply(reply(204, b"", headers=headers))


def _token_ok(expected, presented):
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def _admitted(hub, request, address, channels):
    """(a refusal, or None; the token's claims, if any; the client id): a stream's tokens
    (static or JWT, SPEC 4 and 11), its `client`, and the daemon's limits."""
    presented = None
    for channel in channels:
        token = channel.config.token
        if token:
            # Every token presented counts: a browser can name several only in the query.
            presented = presented or [auth.bearer(request), *request.query.get("access_token", ())]
            if not any(_token_ok(token, p) for p in presented):
                return refusal(401, f"{channel.path} needs a token", reasons.UNAUTHORIZED,
                               [("WWW-Authenticate", 'Bearer realm="ssed"')]), None, None
    client_id = request.first("client")
    if client_id is not None and not CLIENT_ID.match(client_id):
        raise HttpError(400, "client must be 1-64 of A-Za-z0-9._:-")
    claims = None
    if hub.jwt is not None and any(ch.config.auth for ch in channels):
        try:
            claims, client_id = auth.subscriber(hub, request, channels, client_id)
        except jwt.JwtError as exc:
            return _jwt_refusal(hub, exc), None, None
        except auth.Forbidden as exc:
            return refusal(403, str(exc), reasons.FORBIDDEN), None, None
    refused = admission.refusal("stream", hub.config, hub.per_ip.get(address, 0),
                                hub.client_count)
    if refused is not None:
        return _refused(refused), None, None
    return None, claims, client_id


def _subscribe(hub, request, address, channels):
    refused, claims, client_id = _admitted(hub, request, address, channels)
    if refused is not None:
        return refused
    cors = _cors(hub, request, channels)
    head = response_head(200, STREAM_HEADERS + tuple(cors)) if cors else STREAM_HEAD
    if request.method == "HEAD":
        return Stream(head, None, head_only=True)
    # Empty means no id, as with EventSource (which sends no header then): not "replay all".
    last_id = (request.header("last-event-id") or request.first("lastEventId")
               or request.first("last_event_id") or None)
    if hub.cluster is not None and last_id is not None:
        waiting = clustered.unfilled(hub, channels)
        if waiting is not None:     # replay from Redis's history: route it again once in
            # (`address` is the client's already; the headers would name it again.)
            return waiting.map(lambda _: handle(hub, request, address))
    try:
        client, preamble = hub.attach(channels, client_id, address, last_id, request)
    except Refuse as refuse:
        return refusal(refuse.status, refuse.reason, reasons.REFUSED_BY_SERVICE)
    except ChannelsFull:
        return _refused(admission.CHANNELS_FULL)
    if claims is not None:
        hub.expire_at(client, claims.exp + hub.config.jwt_leeway)
    return Stream(head + preamble, client)


def _jwt_refusal(hub, exc):
    """A refused token: 401 or 403 with its WWW-Authenticate; the reason logged (a minute
    apart per reason), never the token."""
    hub.throttle(("jwt", exc.reason), hub.now, "info", f"JWT refused: {exc.reason}")
    return refusal(exc.status, "the token does not allow this" if exc.status == 403
                   else "a valid token is needed", reasons.FORBIDDEN if exc.status == 403
                   else reasons.UNAUTHORIZED, [("WWW-Authenticate", exc.www_authenticate())])


def _publish(hub, request, channel):
    token = channel.config.publish_token
    if channel.config.publish_auth and hub.jwt is not None:
        try:
            auth.claims(hub, request, [channel.path], "publish")
        except jwt.JwtError as exc:
            return _jwt_refusal(hub, exc)
    elif not token:
        return refusal(405, f"{channel.path} does not take POST", reasons.METHOD,
                       [("Allow", "GET, HEAD, OPTIONS")])
    elif not _token_ok(token, auth.bearer(request)):
        return refusal(401, "publishing needs the publish token", reasons.UNAUTHORIZED,
                       [("WWW-Authenticate", 'Bearer realm="ssed publish"')])
    data, event, client = postbody.fields(request)
    try:
        result = hub.publish(channel.path, data, event, client)
    except PublishError as exc:
        return _not_published(exc)
    if type(result) is Later:       # a cluster's: answered once Redis has the event
        return result.map(lambda done: _with_cors(hub, request, channel,
                                                  _not_published(done))
                          if isinstance(done, Exception) else
                          _published(hub, request, channel, *done))
    return _published(hub, request, channel, result[0].id, result[1])


def _published(hub, request, channel, id, delivered):
    body = json.dumps({"id": id, "delivered": delivered})
    headers = _cors(hub, request, [channel])
    keep = keeps_alive(request)
    return Reply(reply(200, body, "application/json", headers, keep=keep), keep=keep is not None)


def _not_published(exc):
    """The refusal of a publish the hub (or, in a cluster, Redis) did not take."""
    if isinstance(exc, (ChannelsFull, ClusterUnavailable)):
        return refusal(503, str(exc), reasons.MAX_CHANNELS if isinstance(exc, ChannelsFull)
                       else reasons.CLUSTER, [("Retry-After", admission.retry_after())])
    return Reply(HttpError(400, str(exc)).reply(), reasons.http(400))


def _with_cors(hub, request, channel, result):
    """(What _service adds to a refusal it is given at once.)"""
    result.data = _add_headers(result.data, _cors(hub, request, [channel]))
    return result


# -- the index page ------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _index_template():
    return resources.files("ssed").joinpath("index.html").read_text(encoding="utf-8")


def public_services(hub):
    """What the index shows: services without a token, with the event types to listen for
    (every type the service has broadcast, held or not: the page can listen only for types
    it names)."""
    out = []
    for channel in hub.channels.values():
        if channel.config.token or channel.template is not None:
            continue    # (a template's channels are someone's own: not listed)
        types = {"message", "session"} | channel.history.types.keys()
        if channel.config.event:
            types.add(channel.config.event)
        out.append({"path": channel.path, "source": channel.config.cls or channel.config.source,
                    "clients": len(channel.clients), "types": sorted(types)})
    return out


def recent_since(channel, count=INDEX_RECENT):
    """The id after which a stream replays the service's last `count` held events ("0-0":
    all of them, when it holds no more); None when it holds none."""
    ring = channel.history.ring
    if not ring:
        return None
    return ring[-count - 1].id if len(ring) > count else "0-0"


def _index(hub, request):
    services = public_services(hub)
    if "application/json" in request.header("accept", ""):
        data = reply(200, json.dumps(services), "application/json")
    else:
        # The page opens each stream with lastEventId = `since`, so a new visitor sees the
        # last few events, and then every later one with no gap and no duplicate (the page
        # and its streams are separate requests). Replayed rather than embedded: the page
        # stays small whatever the events' size, and replay is the path reconnects take.
        for entry in services:
            entry["since"] = recent_since(hub.channels[entry["path"]])
        # "<" escaped so no data can close the script element it sits in.
        blob = json.dumps(services).replace("<", "\\u003c")
        data = reply(200, _index_template().replace("__SERVICES__", blob),
                     "text/html; charset=utf-8", [("Vary", "Accept")])
    return Reply(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if request.method == "HEAD" else data)
