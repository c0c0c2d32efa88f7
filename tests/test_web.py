"""The web side against the daemon subprocess (SPEC section 4): CORS on streams and
preflights, subscriber tokens, POST publishing, the index page, and the clients people use
(curl, Python's http.client).

One daemon serves most of the module; tests that count clients start their own. Every wait
is bounded: socket timeouts, `wait_events`, curl's `--max-time`.
"""
import http.client
import json
import os
import re
import select
import shutil
import socket
import subprocess
import time

import pytest

from conftest import TIMEOUT, Daemon

CONFIG = """
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

[/count]
publish_token = ptok

[/direct]
publish_token = ptok
"""
TOP = """
cors_origins = http://a.example http://b.example
max_body = 1024
retry = 0
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("web"), CONFIG, top=TOP)
    yield daemon
    daemon.stop()


# -- helpers -------------------------------------------------------------------------------

class Reply:
    def __init__(self, raw):
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        assert sep, f"no complete head: {raw!r}"
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.pairs = [(n.strip().lower(), v.strip()) for n, _, v in
                      (line.partition(":") for line in lines[1:])]
        self.headers = dict(self.pairs)

    @property
    def cors(self):
        """The CORS headers and Vary, in order."""
        return [(n, v) for n, v in self.pairs if n.startswith("access-control-") or n == "vary"]

    def json(self):
        assert self.headers["content-type"] == "application/json", self.headers
        assert int(self.headers["content-length"]) == len(self.body)
        return json.loads(self.body)

    def __repr__(self):
        return f"<Reply {self.status} {self.pairs} {self.body[:200]!r}>"


def request(d, method, target, headers=(), body=b""):
    """One whole request; the Reply, read as far as its Content-Length says (a publish
    answer keeps the connection open for the next request), else to the close."""
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as s:
        s.sendall("\r\n".join(head).encode() + body)
        raw = b""
        while True:
            data = s.recv(65536)
            raw += data
            head_end = raw.find(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)\r$", raw[:head_end + 2])
            if not data or (head_end >= 0 and length
                            and len(raw) >= head_end + 4 + int(length.group(1))):
                return Reply(raw)


def stream_head(d, target, headers=()):
    """The head of a GET stream (the stream is then closed)."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as s:
        s.sendall("\r\n".join([f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *headers,
                               "", ""]).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = s.recv(65536)
            assert data, f"closed before the head: {buf!r}"
            buf += data
    return Reply(buf)


def post(d, path, body, ctype="text/plain", token="ptok", headers=()):
    if isinstance(body, str):
        body = body.encode()
    extra = [f"Content-Length: {len(body)}"]
    if ctype:
        extra.append(f"Content-Type: {ctype}")
    if token:
        extra.append(f"Authorization: Bearer {token}")
    return request(d, "POST", path, [*extra, *headers], body)


def subscribed(d, target, headers=()):
    """A stream that has seen its priming id, so it is in the hot set."""
    s = d.stream(target, headers)
    assert s.status == 200, (s.status, bytes(s.body))
    s.wait_bytes(b"\n\n")
    return s


ALLOW = "access-control-allow-origin"
VARY = ("vary", "Origin")


# -- CORS ------------------------------------------------------------------------------------

def test_stream_from_an_allowed_origin_gets_that_origin_back_and_vary_origin(d):
    for origin in ("http://a.example", "http://b.example"):
        r = stream_head(d, "/pub", [f"Origin: {origin}"])
        assert r.status == 200
        assert r.cors == [(ALLOW, origin), VARY]


def test_stream_without_origin_gets_no_cors_headers(d):
    r = stream_head(d, "/pub")
    assert r.status == 200
    assert not [n for n, _ in r.pairs if n.startswith("access-control-")]


PREFLIGHT = ["Access-Control-Request-Method: GET",
             "Access-Control-Request-Headers: last-event-id, authorization"]


def test_preflight_from_an_allowed_origin_is_204_with_methods_headers_and_max_age(d):
    r = request(d, "OPTIONS", "/pub", ["Origin: http://a.example", *PREFLIGHT])
    assert r.status == 204
    assert r.body == b""
    assert r.cors == [(ALLOW, "http://a.example"), VARY,
                      ("access-control-allow-methods", "GET, HEAD, POST, OPTIONS"),
                      ("access-control-allow-headers", "Authorization, Last-Event-ID, Content-Type"),
                      ("access-control-max-age", "600")]


def test_post_reply_carries_cors_for_an_allowed_origin(d):
    r = post(d, "/pub", "from a page", headers=["Origin: http://a.example"])
    assert r.status == 200
    assert r.cors == [(ALLOW, "http://a.example"), VARY]
    assert post(d, "/pub", "from elsewhere", headers=["Origin: http://c.example"]).cors == [VARY]


@pytest.mark.parametrize("method,target,headers,body,status", [
    ("GET", "/secret", [], b"", 401),
    ("POST", "/pub", ["Authorization: Bearer wrong"], b"x", 401),
    ("POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: application/json"],
     b"{oops", 400),
    ("POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: application/xml"], b"x", 415),
    ("POST", "/own", [], b"x", 405),
    ("GET", "/pub?client=bad/id", [], b"", 400),
], ids=["401-stream", "401-post", "400-json", "415", "405", "400-client"])
def test_refusals_carry_cors_so_an_allowed_page_can_read_them(d, method, target, headers,
                                                              body, status):
    origin = "http://own.example" if target.startswith("/own") else "http://a.example"
    r = request(d, method, target, [f"Origin: {origin}", f"Content-Length: {len(body)}",
                                    *headers], body)
    assert r.status == status, r
    assert r.cors == [(ALLOW, origin), VARY]
    assert int(r.headers["content-length"]) == len(r.body)
    r = request(d, method, target, ["Origin: http://c.example", f"Content-Length: {len(body)}",
                                    *headers], body)
    assert (r.status, r.cors) == (status, [VARY])


@pytest.mark.parametrize("headers, body", [
    (["Content-Length: 1025"], b"x" * 1025),
    (["Transfer-Encoding: chunked"], b"400\r\n" + b"x" * 1024 + b"\r\n1\r\nx\r\n0\r\n\r\n"),
], ids=["content-length", "chunked"])
def test_a_body_over_max_body_refused_by_the_parser_carries_cors_too(d, headers, body):
    # The 413 comes from the request parser, before routing (issue 13.8: it had no CORS).
    for origin, cors in (("http://a.example", [(ALLOW, "http://a.example"), VARY]),
                         ("http://c.example", [VARY])):
        r = request(d, "POST", "/pub", [f"Origin: {origin}", "Authorization: Bearer ptok",
                                        *headers], body)
        assert (r.status, r.cors) == (413, cors), r


# -- subscriber tokens -------------------------------------------------------------------------

def test_token_service_accepts_the_bearer_header_and_streams(d):
    s = subscribed(d, "/secret", ["Authorization: Bearer stok"])
    ev = d.publish("/secret", "private")
    assert s.wait_events(1)[0].data == "private" and ev["delivered"] >= 1
    s.close()


def test_token_service_accepts_access_token_in_the_query(d):
    s = subscribed(d, "/secret?access_token=stok&client=q1")
    d.publish("/secret", "via query")
    assert s.wait_events(1)[0].data == "via query"
    s.close()


def test_multiplexed_stream_includes_a_token_service_only_with_its_token(d):
    assert request(d, "GET", "/?service=/pub&service=/secret").status == 401
    s = subscribed(d, "/?service=/pub&service=/secret", ["Authorization: Bearer stok"])
    a = d.publish("/pub", "public")
    b = d.publish("/secret", "private")
    assert [(e.id, e.data) for e in s.wait_events(2)] == [(a["id"], "public"),
                                                          (b["id"], "private")]
    s.close()


def test_multiplexed_stream_of_two_token_services_needs_both_tokens(d):
    # Each service takes any token presented: the Authorization header and every
    # access_token parameter (a browser's EventSource can only use the query).
    target = "/?service=/secret&service=/secret2"
    assert request(d, "GET", target, ["Authorization: Bearer stok"]).status == 401
    assert request(d, "GET", target + "&access_token=stok2").status == 401
    assert stream_head(d, target + "&access_token=stok2",
                       ["Authorization: Bearer stok"]).status == 200
    s = subscribed(d, target + "&access_token=stok&access_token=stok2")
    a = d.publish("/secret2", "two")
    b = d.publish("/secret", "one")
    assert [e.id for e in s.wait_events(2)] == [a["id"], b["id"]]
    s.close()


# -- POST publishing -----------------------------------------------------------------------

def test_post_text_plain_publishes_and_answers_id_and_delivered_count(d):
    subs = [subscribed(d, "/count") for _ in range(2)]      # /count: only this test's streams
    r = post(d, "/count", "hello\nworld", ctype="text/plain; charset=utf-8")
    assert r.status == 200, r
    answer = r.json()
    assert sorted(answer) == ["delivered", "id"]
    assert answer["delivered"] == 2
    assert re.fullmatch(r"\d+-\d+", answer["id"])
    for s in subs:
        ev = s.wait_events(1)[0]
        assert (ev.id, ev.type, ev.data) == (answer["id"], "message", "hello\nworld")
        s.close()


def test_post_json_body_sets_data_and_event_type(d):
    s = subscribed(d, "/pub")
    r = post(d, "/pub", json.dumps({"data": "ünïcode ✓", "event": "note"}),
             ctype="application/json")
    assert r.status == 200, r
    ev = s.wait_events(1)[0]
    assert (ev.id, ev.type, ev.data) == (r.json()["id"], "note", "ünïcode ✓")
    s.close()


def test_post_form_body_sets_data_and_event_type(d):
    s = subscribed(d, "/pub")
    r = post(d, "/pub", "data=a+b%26c&event=chat", ctype="application/x-www-form-urlencoded")
    assert r.status == 200, r
    ev = s.wait_events(1)[0]
    assert (ev.type, ev.data) == ("chat", "a b&c")
    s.close()


def test_post_without_a_type_gets_the_service_event_type(d):
    s = subscribed(d, "/typed")
    assert post(d, "/typed", "x").status == 200
    assert s.wait_events(1)[0].type == "note"
    s.close()


def test_post_with_no_content_type_is_taken_as_text(d):
    s = subscribed(d, "/pub")
    assert post(d, "/pub", "plain", ctype=None).status == 200
    assert s.wait_events(1)[0].data == "plain"
    s.close()


@pytest.mark.parametrize("token", [None, "wrong", "stok"], ids=["missing", "wrong", "subscriber-token"])
def test_post_without_the_publish_token_is_401_and_publishes_nothing(d, token):
    s = subscribed(d, "/pub")
    r = post(d, "/pub", "nope", token=token)
    assert r.status == 401, r
    assert r.headers["www-authenticate"].startswith("Bearer")
    ok = post(d, "/pub", "marker")
    assert [e.data for e in s.wait_events(1)] == ["marker"]     # "nope" never came
    assert ok.json()["delivered"] >= 1
    s.close()


def test_post_body_of_exactly_max_body_is_taken_one_more_byte_is_413(d):
    assert post(d, "/pub", "x" * 1024).status == 200
    r = post(d, "/pub", "x" * 1025)
    assert r.status == 413
    assert r.headers["content-type"].startswith("text/plain")


def test_post_announcing_an_oversized_body_is_413_before_it_is_sent(d):
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as s:
        s.sendall(b"POST /pub HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ptok\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n")
        raw = b""
        while data := s.recv(65536):
            raw += data
    assert Reply(raw).status == 413


def chunked(*parts):
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_post_chunked_body_is_joined_and_published(d):
    s = subscribed(d, "/pub")
    r = request(d, "POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: text/plain",
                                    "Transfer-Encoding: chunked"],
                chunked(b"chun", b"ked ", b"body \xe2\x9c", b"\x93"))
    assert r.status == 200, r
    assert s.wait_events(1)[0].data == "chunked body ✓"
    s.close()


def test_post_chunked_body_over_max_body_is_413(d):
    r = request(d, "POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: text/plain",
                                    "Transfer-Encoding: chunked"],
                chunked(b"x" * 600, b"y" * 600))
    assert r.status == 413


@pytest.mark.parametrize("body,ctype", [
    (json.dumps({"data": "to c1", "client": "c1"}), "application/json"),
    ("data=to+c1&client=c1", "application/x-www-form-urlencoded"),
], ids=["json", "form"])
def test_post_with_client_sends_to_that_client_id_only(d, body, ctype):
    c1, c1_again, c2 = (subscribed(d, f"/direct?client={c}") for c in ("c1", "c1", "c2"))
    r = post(d, "/direct", body, ctype=ctype)
    assert r.status == 200, r
    assert r.json()["delivered"] == 2       # both streams of c1, as `publish --client` does
    marker = post(d, "/direct", "marker").json()
    assert marker["delivered"] == 3
    for s in (c1, c1_again):
        assert [(e.id, e.data) for e in s.wait_events(2)] == [
            (r.json()["id"], "to c1"), (marker["id"], "marker")]
    assert [e.data for e in c2.wait_events(1)] == ["marker"]
    assert len(c2.events) == 1
    for s in (c1, c1_again, c2):
        s.close()


def test_post_text_plain_body_is_all_data_even_when_it_looks_like_keys(d):
    s = subscribed(d, "/direct?client=c2")
    r = post(d, "/direct", 'client=c1&foo=1')
    assert r.status == 200, r
    assert s.wait_events(1)[0].data == "client=c1&foo=1"
    s.close()


def test_post_with_expect_100_continue_gets_continue_then_the_answer(d):
    s = subscribed(d, "/pub")
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as c:
        c.sendall(b"POST /pub HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ptok\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                  b"Connection: close\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            data = c.recv(65536)
            assert data, interim
            interim += data
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.sendall(b"later")
        raw = b""
        while data := c.recv(65536):
            raw += data
    assert Reply(raw).status == 200
    assert s.wait_events(1)[0].data == "later"
    s.close()


def test_post_with_expect_and_the_body_already_sent_gets_no_interim_response(d):
    r = request(d, "POST", "/pub", ["Authorization: Bearer ptok", "Content-Type: text/plain",
                                    "Content-Length: 3", "Expect: 100-continue"], b"now")
    assert r.status == 200 and b"100 Continue" not in r.body


# -- the index page ----------------------------------------------------------------------------

INDEX_CONFIG = """
[/time]
source = time
interval = 3600
event = tick

[/chat]

[/private]
token = sekrit
"""


def embedded(html):
    m = re.search(r'<script id="services" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no services JSON in the page"
    return json.loads(m.group(1))


def test_index_page_lists_public_services_with_source_and_client_count(daemon):
    d = daemon(INDEX_CONFIG)
    s = subscribed(d, "/chat")
    r = request(d, "GET", "/")
    assert r.status == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert int(r.headers["content-length"]) == len(r.body)
    html = r.body.decode()
    services = embedded(html)
    assert [(x["path"], x["source"], x["clients"]) for x in services] == [
        ("/time", "time", 0), ("/chat", "none", 1)]
    assert "/private" not in html and "sekrit" not in html
    assert "EventSource" in html
    s.close()


def test_index_page_is_self_contained(d):
    html = request(d, "GET", "/").body.decode()
    refs = re.findall(r"""(?:src|href|action)\s*=\s*["']?([^"'\s>]+)""", html, re.I)
    assert not [u for u in refs if re.match(r"(?i)(https?:)?//", u)], refs
    assert not re.search(r"<link[^>]+stylesheet", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", html, re.I)
    assert not re.search(r"""<script[^>]+src""", html, re.I)


def test_index_json_variant_has_exact_keys_and_counts(daemon):
    d = daemon(INDEX_CONFIG)
    streams = [subscribed(d, "/time"), subscribed(d, "/time"), subscribed(d, "/chat")]
    r = request(d, "GET", "/", ["Accept: application/json"])
    services = r.json()
    assert [sorted(x) for x in services] == [["clients", "path", "source", "types"]] * 2
    assert [(x["path"], x["source"], x["clients"]) for x in services] == [
        ("/time", "time", 2), ("/chat", "none", 1)]
    assert "tick" in services[0]["types"] and "message" in services[1]["types"]
    for s in streams:
        s.close()


def test_index_page_escapes_data_that_could_close_its_script(daemon):
    d = daemon("[/chat]\n")
    d.publish("/chat", "x", event="</script><script>alert(1)</script>")
    html = request(d, "GET", "/").body.decode()
    assert "alert(1)</script>" not in html
    assert "</script><script>alert" in json.dumps(embedded(html))  # still there, as data
    assert embedded(html)[0]["types"].count("</script><script>alert(1)</script>") == 1


def test_index_page_gives_each_service_the_id_that_replays_its_last_five_events(daemon):
    d = daemon("[/chat]\nhistory = 100\n[/few]\n[/empty]\n[/private]\ntoken = sekrit\n")
    ids = [d.publish("/chat", f"m{i}")["id"] for i in range(40)]
    d.publish("/few", "only one")
    services = {s["path"]: s for s in embedded(request(d, "GET", "/").body.decode())}
    assert [services[p]["since"] for p in ("/chat", "/few", "/empty")] == [ids[-6], "0-0", None]
    assert "/private" not in services
    # What the page's stream gets from there: the last five, then live, none twice.
    s = subscribed(d, f"/chat?lastEventId={services['/chat']['since']}")
    live = d.publish("/chat", "live")
    assert [(e.id, e.data) for e in s.wait_events(6)] == [
        *[(ids[i], f"m{i}") for i in range(35, 40)], (live["id"], "live")]
    s.close()
    few = subscribed(d, "/few?lastEventId=0-0")
    assert [e.data for e in few.wait_events(1)] == ["only one"]
    few.close()
    # The JSON the page polls is unchanged.
    assert [sorted(x) for x in request(d, "GET", "/", ["Accept: application/json"]).json()] == [
        ["clients", "path", "source", "types"]] * 3


def test_favicon_is_204_and_not_counted_as_a_refusal(daemon):
    d = daemon("[/chat]\n", top="index = false")
    for method in ("GET", "HEAD"):
        r = request(d, method, "/favicon.ico")
        assert (r.status, r.body) == (204, b""), r
        assert r.headers["cache-control"] == "max-age=86400"
        assert "content-length" not in r.headers
    assert request(d, "GET", "/nothing-here").status == 404
    assert d.ctl({"cmd": "stats"})["refused"] == {"not_found": 1}


def test_a_service_at_favicon_ico_is_served_instead(daemon):
    d = daemon("[/favicon.ico]\n")
    s = subscribed(d, "/favicon.ico")
    assert s.headers["content-type"] == "text/event-stream"
    s.close()


def test_service_at_the_root_is_served_instead_of_the_index(daemon):
    d = daemon("[/]\n")
    s = subscribed(d, "/")
    assert s.headers["content-type"] == "text/event-stream"
    s.close()


# -- clients people use ---------------------------------------------------------------------

def read_until(pipe, needle, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    out = b""
    while needle not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not in {out!r}"
        ready, _, _ = select.select([pipe], [], [], left)
        if ready:
            data = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
            assert data, f"EOF before {needle!r}: {out!r}"
            out += data
    return out


def need_curl():
    """curl's path; under CI=true a missing curl fails (.ci/run installs it), else skips."""
    path = shutil.which("curl")
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("curl is not installed (.ci/run installs it)", pytrace=False)
        pytest.skip("curl is not installed")
    return path


def test_curl_n_receives_a_published_event(d):
    need_curl()
    curl = subprocess.Popen(["curl", "-sS", "-N", "--max-time", "10",
                             f"http://127.0.0.1:{d.port}/pub?client=curl1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        primed = read_until(curl.stdout, b"\n\n")        # the priming id: subscribed
        assert re.fullmatch(rb"id: \d+-\d+\n\n", primed), primed
        ev = d.publish("/pub", "to curl")
        out = read_until(curl.stdout, b"data: to curl\n\n")
        assert f"id: {ev['id']}\ndata: to curl\n\n".encode() in out
    finally:
        curl.kill()
        curl.wait()


def test_curl_publishes_with_a_bearer_token(d):
    need_curl()
    s = subscribed(d, "/pub")
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Authorization: Bearer ptok",
                          "-H", "Content-Type: application/json",
                          "--data-binary", '{"data": "from curl", "event": "c"}',
                          f"http://127.0.0.1:{d.port}/pub"],
                         capture_output=True, timeout=15, check=True).stdout
    answer = json.loads(out)
    ev = s.wait_events(1)[0]
    assert (ev.id, ev.type, ev.data) == (answer["id"], "c", "from curl")
    s.close()


def test_http_client_reads_a_stream_line_by_line(d):
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=TIMEOUT)
    conn.request("GET", "/pub?client=httpclient1", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    assert resp.fp.readline().startswith(b"id: ")        # the priming id
    assert resp.fp.readline() == b"\n"
    ev = d.publish("/pub", "line one\nline two", event="lines")
    lines = [resp.fp.readline() for _ in range(5)]
    assert lines == [f"id: {ev['id']}\n".encode(), b"event: lines\n", b"data: line one\n",
                     b"data: line two\n", b"\n"]
    conn.close()


def test_http_client_publishes_with_post(d):
    s = subscribed(d, "/pub")
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=TIMEOUT)
    conn.request("POST", "/pub", body="from http.client".encode(),
                 headers={"Authorization": "Bearer ptok", "Content-Type": "text/plain"})
    resp = conn.getresponse()
    answer = json.loads(resp.read())
    assert resp.status == 200 and answer["delivered"] >= 1
    assert s.wait_events(1)[0].data == "from http.client"
    conn.close()
    s.close()


# -- keep-alive for publishers ----------------------------------------------------------------

def _answers(sock, count):
    """`count` whole answers (head + Content-Length body) read from one connection."""
    raw, answers = b"", []
    while len(answers) < count:
        data = sock.recv(65536)
        assert data, f"closed after {len(answers)} answers: {raw!r}"
        raw += data
        while True:
            end = raw.find(b"\r\n\r\n")
            m = re.search(rb"(?im)^content-length: *(\d+)\r$", raw[:end + 2]) if end >= 0 else None
            if not m or len(raw) < end + 4 + int(m.group(1)):
                break
            size = end + 4 + int(m.group(1))
            answers.append(Reply(raw[:size]))
            raw = raw[size:]
    return answers, raw


def _publish_head(body, extra=""):
    return (b"POST /pub HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ptok\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), extra.encode(), body))


def test_a_publisher_keeps_its_connection_for_many_posts_pipelined_or_not(d):
    s = subscribed(d, "/pub")
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as c:
        c.sendall(_publish_head(b"one"))
        (first,), _ = _answers(c, 1)
        assert first.status == 200 and "connection" not in first.headers
        c.sendall(_publish_head(b"two") + _publish_head(b"three") + _publish_head(b"four"))
        rest, leftover = _answers(c, 3)
        assert [r.status for r in rest] == [200, 200, 200] and leftover == b""
        ids = [first.json()["id"]] + [r.json()["id"] for r in rest]
        # The last request asks to close: its answer says so and the connection ends.
        c.sendall(_publish_head(b"five", "Connection: close\r\n"))
        (last,), _ = _answers(c, 1)
        assert last.headers["connection"] == "close"
        assert c.recv(65536) == b""
    events = s.wait_events(5)
    assert [e.data for e in events] == ["one", "two", "three", "four", "five"]
    assert [e.id for e in events[:4]] == ids


def test_a_kept_connection_can_go_on_to_open_a_stream(d):
    # The stream then takes over a connection already in the selector (not one just accepted).
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as c:
        c.sendall(_publish_head(b"before"))
        (answer,), _ = _answers(c, 1)
        assert answer.status == 200
        c.sendall(b"GET /pub HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = c.recv(65536)
            assert data, raw
            raw += data
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in raw
        d.publish("/pub", "after")
        while b"data: after\n\n" not in raw:
            data = c.recv(65536)
            assert data, raw
            raw += data
        assert b"data: before" not in raw


def test_an_http_10_publisher_keeps_its_connection_only_when_it_asks(d):
    body = b"old"
    head = (b"POST /pub HTTP/1.0\r\nAuthorization: Bearer ptok\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 3\r\n")
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as c:
        c.sendall(head + b"Connection: keep-alive\r\n\r\n" + body)
        (answer,), _ = _answers(c, 1)
        assert answer.headers["connection"] == "keep-alive"
        c.sendall(head + b"\r\n" + body)
        (answer,), _ = _answers(c, 1)
        assert answer.headers["connection"] == "close" and c.recv(65536) == b""


def test_an_idle_kept_connection_is_closed_quietly_after_header_timeout(daemon):
    d2 = daemon("[/pub]\npublish_token = ptok\n", top="header_timeout = 0.5\n")
    with socket.create_connection(("127.0.0.1", d2.port), timeout=TIMEOUT) as c:
        c.sendall(_publish_head(b"x"))
        _answers(c, 1)
        assert c.recv(65536) == b""          # closed, no 408 for a request never begun
    assert d2.ctl({"cmd": "stats"})["refused"].get("header_timeout", 0) == 0


def test_a_refused_publish_still_closes_the_connection(d):
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as c:
        c.sendall(b"POST /pub HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n"
                  b"Content-Length: 1\r\n\r\nx" + _publish_head(b"never"))
        (answer,), _ = _answers(c, 1)
        assert answer.status == 401 and answer.headers["connection"] == "close"
        assert c.recv(65536) == b""
