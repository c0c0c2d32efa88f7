"""web.handle in process (SPEC section 4): a request's bytes and a peer address in, the reply's
bytes (or the stream's head) out, as tables; no subprocess, no socket.

Requests are parsed from bytes by http1 (`whole_request`, else `RequestParser`), routed by
`web.handle` against a real Hub built from a config string. Routes, methods and `Allow`,
404, 401/403, CORS on answers and refusals, preflights, the status endpoints from allowed and
other addresses, POST bodies and their 400/413/415 refusals, the index and the favicon.
test_web.py keeps the end-to-end tests that prove the wiring (streams, publishes reaching
them, keep-alive, the clients people use).
"""
import ipaddress
import json
import re

import pytest

from ssed import config as configmod
from ssed import web
from ssed.http1 import HttpError, RequestParser, whole_request
from ssed.hub import Hub

T0 = 1000.0
CONFIG = """
[ssed]
cors_origins = http://a.example http://b.example
max_body = 1024
retry = 0

[/pub]
publish_token = ptok

[/own]
cors_origins = http://own.example

[/star]
cors_origins = *

[/secret]
token = stok

[/secret2]
token = stok2

[/jsononly]
json = true
publish_token = ptok

[/typed]
publish_token = ptok
event = note
"""


def make_hub(text=CONFIG):
    """A started Hub for `text`. Routing publishes only to services nobody streams, so the
    hub needs no loop (the one place that changes when the Hub's constructor does)."""
    hub = Hub(configmod.parse(text, "web.ini"), lambda level, line: None, now=T0)
    hub.start()
    return hub


@pytest.fixture(scope="module")
def hub():
    return make_hub()


def parse(raw, max_body=1024):
    """A whole request from its bytes, as the loop reads it."""
    return whole_request(raw) or RequestParser(max_body).feed(raw)


def raw_request(method, target, headers=(), body=b""):
    head = [f"{method} {target} HTTP/1.1", "Host: x", *headers]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Answer:
    """What handle gave, read as a client would: status, headers (in order), body; `stream`
    when it opens a stream (its head and preamble)."""

    def __init__(self, result):
        self.stream = isinstance(result, web.Stream)
        self.refused = None if self.stream else result.refused
        head, _, self.body = result.data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.pairs = [(n.lower(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])]
        self.headers = dict(self.pairs)

    @property
    def cors(self):
        return [(n, v) for n, v in self.pairs if n.startswith("access-control-") or n == "vary"]


def handle(hub, method, target, headers=(), body=b"", address="127.0.0.1"):
    return Answer(web.handle(hub, parse(raw_request(method, target, headers, body)), address))


ALLOW = "access-control-allow-origin"
VARY = ("vary", "Origin")
PREFLIGHT = ["Access-Control-Request-Method: GET"]


# -- routes and methods ------------------------------------------------------------------------

@pytest.mark.parametrize("method, target, status, allow, refused", [
    ("GET", "/nope", 404, None, "not_found"),
    ("GET", "/pub/", 404, None, "not_found"),
    ("GET", "/?service=/pub&service=/nope", 404, None, "not_found"),
    ("DELETE", "/pub", 405, "GET, HEAD, OPTIONS, POST", "method"),
    ("PUT", "/own", 405, "GET, HEAD, OPTIONS", "method"),
    ("POST", "/own", 405, "GET, HEAD, OPTIONS", "method"),
    ("POST", "/secret", 405, "GET, HEAD, OPTIONS", "method"),
    ("POST", "/?service=/pub", 405, "GET, HEAD, OPTIONS", "method"),
    ("POST", "/", 405, "GET, HEAD", "method"),
    ("PUT", "/healthz", 405, "GET, HEAD", "method"),
    ("POST", "/metrics", 405, "GET, HEAD", "method"),
    ("DELETE", "/favicon.ico", 405, "GET, HEAD", "method"),
    ("GET", "/favicon.ico", 204, None, None),
    ("HEAD", "/favicon.ico", 204, None, None),
    ("OPTIONS", "/pub", 204, None, None),
])
def test_routes_answer_the_status_allow_and_refusal_reason(hub, method, target, status, allow,
                                                            refused):
    a = handle(hub, method, target)
    assert (a.stream, a.status, a.headers.get("allow"), a.refused) == (False, status, allow,
                                                                      refused)
    if status >= 400:
        assert a.headers["content-type"] == "text/plain; charset=utf-8"
        assert a.body.startswith(f"{status} ".encode()) and a.headers["connection"] == "close"


@pytest.mark.parametrize("target", ["/pub", "/star", "/?service=/pub&service=/star",
                                    "/secret?access_token=stok"])
def test_get_on_a_service_opens_a_stream_and_head_only_its_head(hub, target):
    a = handle(hub, "GET", target)
    assert (a.stream, a.status, a.headers["content-type"]) == (True, 200, "text/event-stream")
    assert re.fullmatch(rb"id: \d+-\d+\n\n", a.body)        # the priming id, no retry: 0
    for client in {c for ch in hub.channels.values() for c in ch.clients}:     # each once
        hub.detach(client, "eof")
    head = web.handle(hub, parse(raw_request("HEAD", target)), "127.0.0.1")
    assert head.head_only and Answer(head).pairs == a.pairs and Answer(head).body == b""


def test_a_banned_address_is_403_everywhere(hub):
    hub.ban(ipaddress.ip_network("10.6.0.0/16"), 60)
    try:
        for target in ("/pub", "/nope", "/healthz", "/"):
            a = handle(hub, "GET", target, address="10.6.1.2")
            assert (a.status, a.refused) == (403, "banned"), target
        assert handle(hub, "GET", "/pub", address="::ffff:10.6.1.2").status == 403
        assert handle(hub, "GET", "/nope", address="10.7.1.2").status == 404
    finally:
        hub.unban(ipaddress.ip_network("10.6.0.0/16"))


# -- tokens ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers,target", [
    ([], "/secret"),
    (["Authorization: Bearer wrong"], "/secret"),
    (["Authorization: Bearer STOK"], "/secret"),
    (["Authorization: Bearer sto"], "/secret"),
    (["Authorization: Bearer stokk"], "/secret"),
    (["Authorization: Basic c3Rvaw=="], "/secret"),
    (["Authorization: stok"], "/secret"),
    ([], "/secret?access_token="),
    ([], "/secret?access_token=stok2"),         # another service's token
    (["Authorization: Bearer stok2"], "/secret"),
    ([], "/?service=/pub&service=/secret"),
    (["Authorization: Bearer stok"], "/?service=/secret&service=/secret2"),
    ([], "/?service=/secret&service=/secret2&access_token=stok2"),
], ids=["none", "wrong", "case", "prefix", "longer", "basic", "no-scheme", "empty-query",
        "other-service-query", "other-service-header", "mux-without", "mux-one-of-two-header",
        "mux-one-of-two-query"])
def test_missing_or_wrong_token_is_401_with_www_authenticate(hub, headers, target):
    for method in ("GET", "HEAD"):
        a = handle(hub, method, target, headers)
        assert (a.status, a.refused) == (401, "unauthorized"), a.pairs
        assert a.headers["www-authenticate"] == 'Bearer realm="ssed"'
        assert b"stok" not in a.body


@pytest.mark.parametrize("headers,target", [
    (["Authorization: Bearer stok"], "/secret"),
    (["Authorization: bearer stok"], "/secret"),
    (["Authorization: BEARER   stok"], "/secret"),
    ([], "/secret?access_token=stok"),
    (["Authorization: Bearer stok"], "/?service=/secret&service=/secret2&access_token=stok2"),
    ([], "/?service=/secret&service=/secret2&access_token=stok&access_token=stok2"),
])
def test_the_right_tokens_open_the_stream(hub, headers, target):
    a = Answer(web.handle(hub, parse(raw_request("HEAD", target, headers)), "127.0.0.1"))
    assert (a.stream, a.status) == (True, 200)


# -- CORS and preflights -----------------------------------------------------------------------

@pytest.mark.parametrize("target, origin, cors", [
    ("/pub", "http://a.example", [(ALLOW, "http://a.example"), VARY]),
    ("/pub", "http://b.example", [(ALLOW, "http://b.example"), VARY]),
    ("/pub", "http://c.example", [VARY]),
    ("/pub", "https://a.example", [VARY]),
    ("/pub", "http://a.example:8080", [VARY]),
    ("/pub", "http://a.example.evil", [VARY]),
    ("/pub", "null", [VARY]),
    ("/pub", None, []),
    ("/star", "http://anything.example", [(ALLOW, "*"), VARY]),
    ("/own", "http://own.example", [(ALLOW, "http://own.example"), VARY]),
    ("/own", "http://a.example", [VARY]),
    ("/?service=/pub&service=/star", "http://a.example", [(ALLOW, "http://a.example"), VARY]),
    ("/?service=/pub&service=/star", "http://z.example", [VARY]),
    ("/?service=/pub&service=/own", "http://a.example", [VARY]),
])
def test_streams_carry_cors_for_allowed_origins_and_vary_always(hub, target, origin, cors):
    headers = [f"Origin: {origin}"] if origin else []
    a = Answer(web.handle(hub, parse(raw_request("HEAD", target, headers)), "127.0.0.1"))
    assert (a.status, a.cors) == (200, cors)


@pytest.mark.parametrize("target, origin, allowed, methods", [
    ("/pub", "http://a.example", "http://a.example", "GET, HEAD, POST, OPTIONS"),
    ("/jsononly", "http://b.example", "http://b.example", "GET, HEAD, POST, OPTIONS"),
    ("/own", "http://own.example", "http://own.example", "GET, HEAD, OPTIONS"),
    ("/secret", "http://b.example", "http://b.example", "GET, HEAD, OPTIONS"),
    ("/star", "http://x.example", "*", "GET, HEAD, OPTIONS"),
    ("/?service=/pub&service=/secret", "http://a.example", "http://a.example",
     "GET, HEAD, OPTIONS"),
    ("/?service=/pub", "http://a.example", "http://a.example", "GET, HEAD, OPTIONS"),
], ids=["publish", "publish-json", "no-publish", "token", "wildcard", "mux", "mux-of-one"])
def test_preflight_lists_post_only_where_a_post_publishes(hub, target, origin, allowed,
                                                          methods):
    a = handle(hub, "OPTIONS", target, [f"Origin: {origin}", *PREFLIGHT])
    assert (a.status, a.body) == (204, b"")
    assert a.cors == [(ALLOW, allowed), VARY, ("access-control-allow-methods", methods),
                      ("access-control-allow-headers",
                       "Authorization, Last-Event-ID, Content-Type"),
                      ("access-control-max-age", "600")]


def test_preflight_from_an_origin_not_allowed_gets_only_vary(hub):
    a = handle(hub, "OPTIONS", "/pub", ["Origin: http://c.example", *PREFLIGHT])
    assert (a.status, a.cors) == (204, [VARY])


@pytest.mark.parametrize("method,target,headers,body,status", [
    ("GET", "/secret", [], b"", 401),
    ("POST", "/pub", ["Authorization: Bearer wrong"], b"x", 401),
    ("POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: application/json"],
     b"{oops", 400),
    ("POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: application/xml"], b"x", 415),
    ("POST", "/own", [], b"x", 405),
    ("GET", "/pub?client=bad/id", [], b"", 400),
    ("POST", "/pub", ["Authorization: Bearer ptok"], b"ok", 200),
], ids=["401-stream", "401-post", "400-json", "415", "405", "400-client", "200-post"])
def test_answers_and_refusals_on_a_service_carry_cors(hub, method, target, headers, body,
                                                      status):
    origin = "http://own.example" if target.startswith("/own") else "http://a.example"
    a = handle(hub, method, target, [f"Origin: {origin}", *headers], body)
    assert (a.status, a.cors) == (status, [(ALLOW, origin), VARY])
    assert int(a.headers["content-length"]) == len(a.body)
    a = handle(hub, method, target, ["Origin: http://c.example", *headers], body)
    assert (a.status, a.cors) == (status, [VARY])


# -- errors the parser raises after the head: the path's CORS too (issue 13.8) -----------------

@pytest.mark.parametrize("raw, status", [
    (b"POST /pub HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
     b"Content-Length: 1025\r\n\r\n", 413),
    (b"POST /pub HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + b"x" * 1024 + b"\r\n1\r\n", 413),
    (b"POST /pub HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
     b"Transfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST /?service=/pub&service=/star HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
     b"Content-Length: 5000\r\n\r\n", 413),
], ids=["content-length", "chunked", "transfer-coding", "multiplexed"])
def test_a_parser_error_after_the_head_carries_the_cors_of_its_service(hub, raw, status):
    parser = RequestParser(1024)
    with pytest.raises(HttpError) as info:
        parser.feed(raw)
    a = Answer(web.Reply(web.http_error(hub, info.value, parser.request)))
    assert (a.status, a.cors) == (status, [(ALLOW, "http://a.example"), VARY])
    assert a.headers["connection"] == "close" and int(a.headers["content-length"]) == len(a.body)
    other = raw.replace(b"a.example", b"c.example")
    parser = RequestParser(1024)
    with pytest.raises(HttpError) as info:
        parser.feed(other)
    assert Answer(web.Reply(web.http_error(hub, info.value, parser.request))).cors == [VARY]


@pytest.mark.parametrize("raw", [
    b"GET /pub HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\nBad header\r\n\r\n",
    b"POST /nope HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\nContent-Length: 5000\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
    b"Content-Length: 5000\r\n\r\n",
], ids=["head-not-read", "no-service", "status-path"])
def test_a_parser_error_with_no_service_to_name_is_the_plain_error(hub, raw):
    parser = RequestParser(1024)
    with pytest.raises(HttpError) as info:
        parser.feed(raw)
    assert web.http_error(hub, info.value, parser.request) == info.value.reply()


# -- status endpoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("address, status", [
    ("127.0.0.1", 200), ("127.9.9.9", 200), ("::1", 200), ("::ffff:127.0.0.1", 200),
    ("10.0.0.1", 403), ("::2", 403), ("::ffff:10.0.0.1", 403), ("fe80::1%eth0", 403),
])
def test_status_endpoints_answer_status_allow_only(hub, address, status):
    health = handle(hub, "GET", "/healthz", address=address)
    assert health.status == status
    if status == 200:
        assert (health.headers["content-type"], health.body) == ("text/plain; charset=utf-8",
                                                                 b"ok\n")
        metrics = handle(hub, "GET", "/metrics", address=address)
        assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert b'ssed_clients{service="/pub"} 0' in metrics.body
    else:
        assert health.refused == "status_forbidden" and address.encode() in health.body


def test_head_on_a_status_endpoint_is_its_get_head(hub):
    get, head = handle(hub, "GET", "/metrics"), handle(hub, "HEAD", "/metrics")
    assert (head.status, head.body, head.pairs) == (200, b"", get.pairs)


# -- POST publishing ----------------------------------------------------------------------------

@pytest.mark.parametrize("path, body, ctype, event", [
    ("/pub", b"hello\nworld", "text/plain; charset=utf-8", None),
    ("/pub", json.dumps({"data": "\u00fcn\u00efcode", "event": "note"}).encode(),
     "application/json", "note"),
    ("/pub", b"data=a+b%26c&event=chat", "application/x-www-form-urlencoded", "chat"),
    ("/pub", b"client=c1&foo=1", None, None),
    ("/typed", b"x", "text/plain", "note"),
    ("/jsononly", b'{"price": 1}', "text/plain", None),
    ("/pub", b'{"data": "to c1", "client": "c1"}', "application/json", None),
    ("/pub", b"x" * 1024, "text/plain", None),
])
def test_post_publishes_and_answers_its_id_and_delivered_count(hub, path, body, ctype, event):
    headers = ["Authorization: Bearer ptok"] + ([f"Content-Type: {ctype}"] if ctype else [])
    before = hub.channels[path].published
    a = handle(hub, "POST", path, headers, body)
    assert (a.status, a.headers["content-type"]) == (200, "application/json"), a.body
    answer = json.loads(a.body)
    assert sorted(answer) == ["delivered", "id"] and answer["delivered"] == 0
    assert hub.channels[path].published == before + 1
    held = hub.channels[path].history.ring
    if b"client" not in body or ctype is None:
        assert (held[-1].id, held[-1].type) == (answer["id"], event)
    assert "connection" not in a.headers        # a publisher keeps its connection (1.1)


@pytest.mark.parametrize("body,ctype,named", [
    (b"{not json", "application/json", "malformed JSON"),
    (b'["data"]', "application/json", "JSON body must be"),
    (b'{"event": "x"}', "application/json", "JSON body must be"),
    (b'{"data": 5}', "application/json", "JSON body must be"),
    (b'{"data": "x", "event": 5}', "application/json", "event must be a string"),
    (b'{"data": "x", "event": "a\\nb"}', "application/json", "LF"),
    (b'{"data": "x", "event": "a\\rb"}', "application/json", "CR"),
    (b"event=x", "application/x-www-form-urlencoded", "needs a data field"),
    (b"data=x&event=a%0Db", "application/x-www-form-urlencoded", "CR"),
    (b"data=x&event=a%00b", "application/x-www-form-urlencoded", "NUL"),
    (b"caf\xe9", "text/plain", "not valid UTF-8"),
    (b'{"data": "caf\xe9"}', "application/json", "not valid UTF-8"),
    (b'{"data": "x", "cliend": "c1"}', "application/json", "'cliend'"),
    (b'{"data": "x", "to": "c1", "retry": 5}', "application/json", "'retry', 'to'"),
    (b'{"data": "x", "extra": null}', "application/json", "'extra'"),
    (b'{"data": "x", "client": 7}', "application/json", "client must be a string"),
    (b'{"data": "x", "client": "a b"}', "application/json", "client must be 1-64"),
    (b'{"data": "x", "client": ""}', "application/json", "client must be 1-64"),
    (b'{"data": "x", "client": "' + b"c" * 65 + b'"}', "application/json", "client must be 1-64"),
    (b"data=x&cliend=c1", "application/x-www-form-urlencoded", "'cliend'"),
    (b"data=x&client=", "application/x-www-form-urlencoded", "client must be 1-64"),
    (b"data=x&client=a%0Ab", "application/x-www-form-urlencoded", "client must be 1-64"),
    (b"data=x&client=c1&client=c2", "application/x-www-form-urlencoded", "more than once"),
    (b"data=x&id=1-1", "application/x-www-form-urlencoded", "ids are made by the daemon"),
    (b'{"data": "x", "id": "1-1"}', "application/json", "ids are made by the daemon"),
    (b'{"data": "x", "id": "1-1", "foo": 1}', "application/json", "ids are made by the daemon"),
    (b"x", "application/xml", "415"),
    (b"x", "text/html", "415"),
    (b"x", "multipart/form-data; boundary=x", "415"),
    (b"x", "application/octet-stream", "415"),
], ids=["malformed-json", "json-array", "json-no-data", "json-data-not-string",
        "json-event-not-string", "json-event-lf", "json-event-cr", "form-no-data",
        "form-event-cr", "form-event-nul", "text-not-utf8", "json-not-utf8",
        "json-misspelt-client", "json-two-unknown", "json-unknown-null", "json-client-number",
        "json-client-space", "json-client-empty", "json-client-too-long", "form-misspelt-client",
        "form-client-empty", "form-client-lf", "form-client-twice", "form-id", "json-id",
        "json-id-first", "xml", "html", "multipart", "octet-stream"])
def test_a_bad_post_body_is_refused_and_publishes_nothing(hub, body, ctype, named):
    before = hub.channels["/pub"].published
    a = handle(hub, "POST", "/pub", ["Authorization: Bearer ptok", f"Content-Type: {ctype}"], body)
    assert a.status == (415 if named == "415" else 400), a.body
    assert named in a.body.decode() and a.headers["content-type"].startswith("text/plain")
    assert a.headers["connection"] == "close"
    assert hub.channels["/pub"].published == before


@pytest.mark.parametrize("token", [None, "wrong", "stok"])
def test_post_without_the_publish_token_is_401(hub, token):
    headers = [f"Authorization: Bearer {token}"] if token else []
    a = handle(hub, "POST", "/pub", headers, b"nope")
    assert (a.status, a.headers["www-authenticate"]) == (401, 'Bearer realm="ssed publish"')


def test_post_of_non_json_to_a_json_only_service_is_400(hub):
    a = handle(hub, "POST", "/jsononly", ["Authorization: Bearer ptok"], b"not json")
    assert a.status == 400 and b"takes JSON data only" in a.body


def test_a_body_over_max_body_is_refused_by_the_parser_before_routing():
    with pytest.raises(HttpError) as info:
        parse(raw_request("POST", "/pub", ["Authorization: Bearer ptok"], b"x" * 1025))
    assert info.value.status == 413


# -- the index ---------------------------------------------------------------------------------

def test_index_page_and_its_json_list_the_public_services(hub):
    page = handle(hub, "GET", "/")
    assert (page.status, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert page.headers["vary"] == "Accept" and b"EventSource" in page.body
    blob = re.search(rb'<script id="services" type="application/json">(.*?)</script>',
                     page.body, re.S).group(1)
    paths = [s["path"] for s in json.loads(blob)]
    assert paths == ["/pub", "/own", "/star", "/jsononly", "/typed"]    # no token services
    listed = json.loads(handle(hub, "GET", "/", ["Accept: application/json"]).body)
    assert [s["path"] for s in listed] == paths
    assert [sorted(s) for s in listed] == [["clients", "path", "source", "types"]] * 5
    head = handle(hub, "HEAD", "/")
    assert (head.body, head.pairs) == (b"", page.pairs)


@pytest.mark.parametrize("text, status", [
    ("[ssed]\nindex = false\n[/chat]\n", 404),
    ("[/]\n", 200),
])
def test_index_false_or_a_service_at_the_root(text, status):
    hub = make_hub(text)
    a = handle(hub, "HEAD", "/")
    assert a.status == status and a.stream == (status == 200)
    assert handle(hub, "GET", "/favicon.ico").status == 204
    if status == 404:       # multiplexing at the root still works
        assert handle(hub, "HEAD", "/?service=/chat").stream


def test_index_lists_every_type_a_service_broadcast_held_or_not():
    hub = make_hub("[/ticker]\nhistory = 0\n[/chat]\nhistory = 1\nevent = said\n")
    hub.publish("/ticker", "1", "quote")
    hub.publish("/chat", "a", "joined")
    hub.publish("/chat", "b")                   # the service's own type, `said`
    listed = json.loads(handle(hub, "GET", "/", ["Accept: application/json"]).body)
    assert {s["path"]: s["types"] for s in listed} == {
        "/ticker": ["message", "quote", "session"],
        "/chat": ["joined", "message", "said", "session"]}
