"""HTTP errors from the daemon subprocess (SPEC section 4): malformed heads, unknown paths,
wrong methods and oversized heads each get a short text/plain reply and a closed
connection, and none of them disturbs a subscriber streaming at the same time.

One daemon serves the whole module; each case opens its own subscriber.
"""
import socket
import time

import pytest

from conftest import TIMEOUT, Daemon
from hostile import read_all

BODY = "[/svc]\n[/other]\n"
H = b"Host: x\r\n"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("errors"), BODY, top="retry = 0\n")
    yield daemon
    daemon.stop()


def parse_reply(raw):
    """(status, {lower name: value}, body) of a whole reply, checked for its framing."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete head: {raw!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ")
    assert version in ("HTTP/1.1", "HTTP/1.0"), lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers, body


def assert_error(raw, status):
    """A short text/plain reply with `status`; the caller saw the connection close."""
    got, headers, body = parse_reply(raw)
    assert got == status, raw
    assert headers["content-type"].startswith("text/plain"), headers
    assert int(headers["content-length"]) == len(body), raw
    assert 0 < len(body) < 300, body
    assert headers.get("connection", "").lower() == "close"
    assert b"event-stream" not in raw
    return headers, body


def undisturbed(d, before):
    """`before` (a stream opened before the bad request) still gets the next event."""
    ans = d.publish("/svc", "after the error")
    ev = before.wait_events(1)[0]
    assert (ev.id, ev.data) == (ans["id"], "after the error")
    before.close()


def subscriber(d):
    s = d.stream("/svc")
    s.wait_bytes(b"\n\n")       # the priming id: it is subscribed
    return s


# (name, raw request, status)
MALFORMED = [
    ("bad method character", b"G(T /svc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method with a slash", b"GE/T /svc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("missing version", b"GET /svc\r\n" + H + b"\r\n", 400),
    ("HTTP/0.9 request line", b"GET /svc\r\n\r\n", 400),
    ("lowercase protocol name", b"GET /svc http/1.1\r\n" + H + b"\r\n", 400),
    ("bad version digits", b"GET /svc HTTP/1.x\r\n" + H + b"\r\n", 400),
    ("two spaces after method", b"GET  /svc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space inside target", b"GET /s vc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("leading space on request line", b" GET /svc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target without slash", b"GET svc HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("NUL in the path", b"GET /svc%00 HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("target not UTF-8", b"GET /svc%ff HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("HTTP/2.0", b"GET /svc HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("HTTP/3.0", b"GET /svc HTTP/3.0\r\n" + H + b"\r\n", 505),
    ("header without colon", b"GET /svc HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n", 400),
    ("space before colon", b"GET /svc HTTP/1.1\r\n" + H + b"X-A : 1\r\n\r\n", 400),
    ("space before colon on Host", b"GET /svc HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("empty header name", b"GET /svc HTTP/1.1\r\n" + H + b": value\r\n\r\n", 400),
    ("non-token header name", b"GET /svc HTTP/1.1\r\n" + H + b"X@Y: 1\r\n\r\n", 400),
    ("obs-fold line", b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\r\n  folded\r\n\r\n", 400),
    ("obs-fold with a tab", b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb: c\r\n\r\n", 400),
    ("NUL in a value", b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("CTL in a value", b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("DEL in a value", b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    ("bare CR in a value", b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    ("missing Host on 1.1", b"GET /svc HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("duplicate Host", b"GET /svc HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("duplicate Content-Length",
     b"GET /svc HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n", 400),
    ("Content-Length and Transfer-Encoding",
     b"POST /svc HTTP/1.1\r\n" + H
     + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("negative Content-Length", b"GET /svc HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
     400),
    ("non-numeric Content-Length",
     b"GET /svc HTTP/1.1\r\n" + H + b"Content-Length: 1a\r\n\r\n", 400),
    ("duplicate Last-Event-ID",
     b"GET /svc HTTP/1.1\r\n" + H + b"Last-Event-ID: 1-0\r\nLast-Event-ID: 2-0\r\n\r\n", 400),
]


@pytest.mark.parametrize("raw, status", [c[1:] for c in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_malformed_request_gets_an_error_and_a_closed_connection(d, raw, status):
    before = subscriber(d)
    assert_error(d.request(raw), status)
    undisturbed(d, before)


def test_malformed_head_sent_byte_by_byte_gets_the_same_error(d):
    before = subscriber(d)
    raw = b"GET /svc HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n"
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            sock.sendall(raw[i:i + 1])
        reply = read_all(sock)
    assert_error(reply, 400)
    undisturbed(d, before)


def test_request_sent_byte_by_byte_opens_a_stream(d):
    raw = b"GET /other?client=slow HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(raw)):
            sock.sendall(raw[i:i + 1])
        buf = b""
        while not buf.endswith(b"\n\n") or b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            assert data, buf
            buf += data
    assert buf.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Type: text/event-stream\r\n" in buf


# -- 404, 405 ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", [b"/nope", b"/svc/", b"/SVC", b"//svc", b"/svc/x",
                                    b"/?service=/nope", b"/?service=/svc&service=/nope"])
def test_unknown_path_is_404(d, target):
    before = subscriber(d)
    _, body = assert_error(d.request(b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n"), 404)
    undisturbed(d, before)


def test_query_string_is_not_part_of_the_path(d):
    s = d.stream("/svc?x=1&y")
    assert s.status == 200
    s.close()


@pytest.mark.parametrize("method", [b"DELETE", b"PUT", b"PATCH", b"CONNECT", b"TRACE",
                                    b"get", b"FOO"])
def test_wrong_method_on_a_service_is_405_with_allow(d, method):
    before = subscriber(d)
    headers, _ = assert_error(
        d.request(method + b" /svc HTTP/1.1\r\n" + H + b"\r\n"), 405)
    allowed = {m.strip() for m in headers["allow"].split(",")}
    assert {"GET", "HEAD"} <= allowed and "POST" not in allowed
    assert method.decode() not in allowed
    undisturbed(d, before)


def test_post_to_a_service_without_publish_token_is_405_and_publishes_nothing(d):
    before = subscriber(d)
    raw = (b"POST /svc HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\n"
           b"Authorization: Bearer guess\r\nContent-Length: 5\r\n\r\nhello")
    headers, _ = assert_error(d.request(raw), 405)
    assert "POST" not in headers["allow"] and "GET" in headers["allow"]
    undisturbed(d, before)     # its next event is ours, not "hello"


# -- 431 --------------------------------------------------------------------------------

def test_head_over_8_kib_is_431(d):
    before = subscriber(d)
    raw = b"GET /svc HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n"
    assert_error(d.request(raw), 431)
    undisturbed(d, before)


def test_head_that_never_ends_is_431_once_over_8_kib(d):
    before = subscriber(d)
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /svc HTTP/1.1\r\n" + H)
        for i in range(200):       # 200 x ~60 bytes, no blank line ever
            try:
                sock.sendall(b"X-Header-%03d: " % i + b"v" * 40 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = read_all(sock)
    assert_error(reply, 431)
    undisturbed(d, before)


def test_head_just_under_8_kib_is_served(d):
    filler = b"X-Pad: " + b"p" * 7900 + b"\r\n"
    raw = b"GET /svc HTTP/1.1\r\n" + H + filler + b"\r\n"
    assert len(raw) < 8192
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            assert data, buf
            buf += data
    assert buf.startswith(b"HTTP/1.1 200 ")


# -- a request that succeeds is not kept alive either -----------------------------------

def test_error_connection_is_closed_even_if_the_client_keeps_sending(d):
    before = subscriber(d)
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"DELETE /svc HTTP/1.1\r\n" + H + b"\r\n"
                     b"GET /svc HTTP/1.1\r\n" + H + b"\r\n")
        start = time.monotonic()
        reply = read_all(sock)
        assert time.monotonic() - start < TIMEOUT
    assert_error(reply, 405)
    assert reply.count(b"HTTP/1.1 ") == 1      # the pipelined request is not answered
    undisturbed(d, before)
