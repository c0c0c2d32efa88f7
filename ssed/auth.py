"""Per-user authorization with JWT (SPEC 11), for web.py: where a request's token comes from,
whether its claims cover the paths it asks for, and the config rules that go with it.

Pure: the hub's verifier (a jwt.Verifier, or None without `jwt_key`), the config and `now`
come in. A refusal is a jwt.JwtError carrying its status and WWW-Authenticate value; no
token text ever goes into one, nor into a log line.
"""
import heapq

from . import jwt
from .http1 import JWT_HEAD, MAX_HEAD

NO_TOKEN = 'Bearer realm="ssed"'


class Forbidden(Exception):
    """A valid token that may not do this (a `client` that is not its `sub`)."""


def verifier(config):
    """The JWT verifier of `config`, or None without `jwt_key` (a new one on each reload:
    its cache is keyed by token alone)."""
    return None if not config.jwt_key else jwt.Verifier(
        config.jwt_key, config.jwt_issuer, config.jwt_audience, config.jwt_leeway)


def max_head(config):
    """The request head limit: 16 KiB with JWT keys (room for an 8 KiB token), else 8."""
    return JWT_HEAD if config.jwt_key else MAX_HEAD


def bearer(request):
    """The token of an `Authorization: Bearer` header (the scheme in any case), or None."""
    scheme, _, token = request.header("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def token_of(request, cookie):
    """The JWT a request carries: `Authorization: Bearer`, else the cookie `cookie`, else
    `?access_token=` (what an EventSource can send). Of several query values (a multiplexed
    stream may also carry static tokens), the first shaped like a JWT."""
    found = bearer(request)
    if found:
        return found
    if cookie:
        found = cookie_value(request.header("cookie", ""), cookie)
        if found:
            return found
    values = request.query.get("access_token", ())
    return next((v for v in values if v.count(".") == 2), values[0] if values else None)


def cookie_value(header, name):
    """The value of cookie `name` in a Cookie header (RFC 6265 5.4), or None."""
    for pair in header.split(";"):
        key, eq, value = pair.strip().partition("=")
        if eq and key == name:
            return value.strip().strip('"')
    return None


def claims(hub, request, paths, what):
    """The token's claims if they let it `what` ("subscribe" or "publish") every one of
    `paths`; else jwt.JwtError (401 without or with a bad token, 403 out of scope)."""
    token = token_of(request, hub.config.jwt_cookie)
    if token is None:
        raise jwt.JwtError(401, None, "no token")
    found = hub.jwt.verify(token, hub.now)
    if not jwt.covers_all(getattr(found, what), paths):
        raise jwt.JwtError(403, "insufficient_scope", f"the token may not {what} there")
    return found


def subscriber(hub, request, channels, client_id):
    """(claims, the client id) for a stream to `channels`, of which some have `auth = jwt`;
    the client id is the token's `sub`, and a `client` parameter must be the same."""
    found = claims(hub, request, [ch.path for ch in channels if ch.config.auth], "subscribe")
    if client_id is not None and client_id != found.sub:
        raise Forbidden("client must be the token's sub")
    return found, found.sub


def check(config):
    """(line, message) for each service whose auth settings cannot work: a check for
    config.load, so that --check finds them."""
    errors = []
    for sc in (*config.services, *config.templates):
        for key, static in (("auth", "token"), ("publish_auth", "publish_token")):
            if getattr(sc, key) != "jwt":
                continue
            line = sc.lines.get(key, sc.line)
            if not config.jwt_key:
                errors.append((line, f"{key} = jwt needs jwt_key in [ssed]"))
            if getattr(sc, static):
                errors.append((line, f"{key} = jwt and {static} both set: choose one"))
    return errors


class Expiring:
    """Streams to close when their token expires: a heap of (when, n, client). Closed
    streams' entries are dropped when they come due, or in a sweep once they outnumber the
    open ones (a reconnect storm with hour-long tokens must not pile them up)."""

    def __init__(self):
        self.heap = []
        self.n = 0

    def add(self, client, when, open_count):
        self.n += 1
        heapq.heappush(self.heap, (when, self.n, client))
        if len(self.heap) > 2 * open_count + 1024:
            self.heap = [e for e in self.heap if _open(e[2])]
            heapq.heapify(self.heap)

    def next(self):
        return self.heap[0][0] if self.heap else float("inf")

    def due(self, now):
        """The open streams whose time has come."""
        out = []
        while self.heap and self.heap[0][0] <= now:
            client = heapq.heappop(self.heap)[2]
            if _open(client):
                out.append(client)
        return out


def _open(client):
    return client in client.channels[0].clients
