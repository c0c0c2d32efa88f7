"""http1: the sans-IO request parser and the bytes of our responses.

Every good request is fed whole, byte by byte, and followed by trailing bytes (which the
parser must hand back untouched in `parser.trailing`). Every bad request, whole and byte by
byte, must raise HttpError with the same status, and never any other exception. The
one-match `whole_request` (tried first at accept) must agree with the parser or decline.
"""
import pytest

from ssed.http1 import MAX_HEAD, HttpError, RequestParser, whole_request
from ssed.responses import error_reply, reply, response_head

MAX_BODY = 64


def feed_whole(data, max_body=MAX_BODY):
    parser = RequestParser(max_body)
    return parser.feed(data), parser


def feed_bytewise(data, max_body=MAX_BODY):
    """Byte by byte; the request and the parser once it is complete."""
    parser = RequestParser(max_body)
    for i in range(len(data)):
        request = parser.feed(data[i:i + 1])
        if request is not None:
            assert i == len(data) - 1, f"request complete after {i + 1} of {len(data)} bytes"
            return request, parser
    return None, parser


def outcome(chunks):
    """What feeding `chunks` in turn gives: the request's fields, its status, or None."""
    parser = RequestParser(MAX_BODY)
    try:
        for chunk in chunks:
            request = parser.feed(chunk)
            if request is not None:
                return shape(request), parser.trailing
    except HttpError as exc:
        return exc.status
    return None


def shape(request):
    return (request.method, request.target, request.path, request.query, request.version,
            request.headers, request.body)


# (name, raw request, method, path, query, version, headers, body)
GOOD = [
    ("GET with a query",
     b"GET /chat?a=1&b=two HTTP/1.1\r\nHost: x\r\n\r\n",
     "GET", "/chat", {"a": ["1"], "b": ["two"]}, (1, 1), {"host": "x"}, b""),
    ("absolute-form target",
     b"GET http://example.com:8080/time?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
     "GET", "/time", {"x": ["1"]}, (1, 1), {"host": "example.com"}, b""),
    ("absolute-form target without a path",
     b"GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
     "GET", "/", {}, (1, 1), {"host": "example.com"}, b""),
    ("absolute-form target with an uppercase scheme",
     b"GET HTTP://Example.COM/time HTTP/1.1\r\nHost: example.com\r\n\r\n",
     "GET", "/time", {}, (1, 1), {"host": "example.com"}, b""),
    ("absolute-form target with a query and no path",
     b"GET http://example.com?service=/a HTTP/1.1\r\nHost: example.com\r\n\r\n",
     "GET", "/", {"service": ["/a"]}, (1, 1), {"host": "example.com"}, b""),
    ("HTTP/1.0 without Host",
     b"GET /time HTTP/1.0\r\n\r\n",
     "GET", "/time", {}, (1, 0), {}, b""),
    ("leading empty lines",
     b"\r\n\n\r\nGET /time HTTP/1.1\r\nHost: x\r\n\r\n",
     "GET", "/time", {}, (1, 1), {"host": "x"}, b""),
    ("LF-only line endings",
     b"GET /time HTTP/1.1\nHost: x\nAccept: text/event-stream\n\n",
     "GET", "/time", {}, (1, 1), {"host": "x", "accept": "text/event-stream"}, b""),
    ("header names are case-insensitive, values trimmed",
     b"GET / HTTP/1.1\r\nHOST:   x  \r\nLast-Event-ID:\t1-2\t\r\nX-Empty:\r\n\r\n",
     "GET", "/", {}, (1, 1), {"host": "x", "last-event-id": "1-2", "x-empty": ""}, b""),
    ("obs-text bytes kept as Latin-1; \\x85 (NEL) is no line break",
     b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x85b\xe9\r\nX-B: c\r\n\r\n",
     "GET", "/", {}, (1, 1), {"host": "x", "x-a": "a\x85b\xe9", "x-b": "c"}, b""),
    ("inner whitespace of a value kept",
     b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: a  b\tc\r\n\r\n",
     "GET", "/", {}, (1, 1), {"host": "x", "user-agent": "a  b\tc"}, b""),
    ("repeated headers combined",
     b"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\naccept: b\r\n\r\n",
     "GET", "/", {}, (1, 1), {"host": "x", "accept": "a, b"}, b""),
    ("percent-encoded path decoded",
     b"GET /caf%C3%A9%20bar HTTP/1.1\r\nHost: x\r\n\r\n",
     "GET", "/caf\u00e9 bar", {}, (1, 1), {"host": "x"}, b""),
    ("repeated query parameter is a list",
     b"GET /?service=/a&service=/b&lastEventId=1-0 HTTP/1.1\r\nHost: x\r\n\r\n",
     "GET", "/", {"service": ["/a", "/b"], "lastEventId": ["1-0"]}, (1, 1), {"host": "x"}, b""),
    ("percent-encoded query, blank values kept",
     b"GET /chat?client=a%3Ab&x=&data=caf%C3%A9+ok HTTP/1.1\r\nHost: x\r\n\r\n",
     "GET", "/chat", {"client": ["a:b"], "x": [""], "data": ["caf\u00e9 ok"]}, (1, 1),
     {"host": "x"}, b""),
    ("fragment dropped from the path",
     b"GET /time#frag HTTP/1.1\r\nHost: x\r\n\r\n",
     "GET", "/time", {}, (1, 1), {"host": "x"}, b""),
    ("HEAD",
     b"HEAD /time HTTP/1.1\r\nHost: x\r\n\r\n",
     "HEAD", "/time", {}, (1, 1), {"host": "x"}, b""),
    ("OPTIONS *",
     b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
     "OPTIONS", "*", {}, (1, 1), {"host": "x"}, b""),
    ("POST with a Content-Length body",
     b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello\r\nworld",
     "POST", "/chat", {}, (1, 1), {"host": "x", "content-length": "12"}, b"hello\r\nworld"),
    ("POST with Content-Length 0",
     b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
     "POST", "/chat", {}, (1, 1), {"host": "x", "content-length": "0"}, b""),
    ("POST body of exactly max_body",
     b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n" + b"b" * 64,
     "POST", "/chat", {}, (1, 1), {"host": "x", "content-length": "64"}, b"b" * 64),
    ("chunked body with extensions and trailers",
     b"POST /chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5;name=value\r\nhello\r\n"
     b"A\r\n, world!!\n\r\n"
     b"0;last\r\nX-Trailer: 1\r\nAnother: 2\r\n\r\n",
     "POST", "/chat", {}, (1, 1), {"host": "x", "transfer-encoding": "chunked"},
     b"hello, world!!\n"),
    ("chunked body with LF-only lines and no trailers",
     b"POST /chat HTTP/1.1\nHost: x\nTransfer-Encoding: Chunked\n\n3\nabc\n0\n\n",
     "POST", "/chat", {}, (1, 1), {"host": "x", "transfer-encoding": "Chunked"}, b"abc"),
    ("empty chunked body",
     b"POST /chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "POST", "/chat", {}, (1, 1), {"host": "x", "transfer-encoding": "chunked"}, b""),
    ("chunked body of exactly max_body in two chunks",
     b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"20\r\n" + b"a" * 32 + b"\r\n20\r\n" + b"b" * 32 + b"\r\n0\r\n\r\n",
     "POST", "/c", {}, (1, 1), {"host": "x", "transfer-encoding": "chunked"},
     b"a" * 32 + b"b" * 32),
]

GOOD_IDS = [row[0] for row in GOOD]
TRAILING = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("name, raw, method, path, query, version, headers, body", GOOD,
                         ids=GOOD_IDS)
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def test_good_request_parses_the_same_whole_and_byte_by_byte(
        feed, name, raw, method, path, query, version, headers, body):
    request, parser = feed(raw)
    assert request is not None
    assert (request.method, request.path, request.query, request.version, request.headers,
            request.body) == (method, path, query, version, headers, body)
    assert parser.trailing == b""


@pytest.mark.parametrize("name, raw, method, path, query, version, headers, body", GOOD,
                         ids=GOOD_IDS)
def test_good_request_followed_by_more_bytes_leaves_them_in_trailing(
        name, raw, method, path, query, version, headers, body):
    request, parser = feed_whole(raw + TRAILING)
    alone, _ = feed_whole(raw)
    assert shape(request) == shape(alone)
    assert parser.trailing == TRAILING


@pytest.mark.parametrize("name, raw, method, path, query, version, headers, body", GOOD,
                         ids=GOOD_IDS)
def test_good_request_is_not_complete_one_byte_early(
        name, raw, method, path, query, version, headers, body):
    parser = RequestParser(MAX_BODY)
    assert parser.feed(raw[:-1]) is None
    assert parser.feed(raw[-1:]) is not None


def test_request_target_keeps_the_raw_form():
    request, _ = feed_whole(b"GET /a%20b?x=%41 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request.target == "/a%20b?x=%41"
    assert request.path == "/a b"
    assert request.first("x") == "A"
    assert request.first("missing", "dflt") == "dflt"
    assert request.header("host") == "h"
    assert request.header("nope") is None


def test_expect_100_continue_is_needed_when_the_head_comes_without_the_body():
    parser = RequestParser(MAX_BODY)
    head = (b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n")
    assert parser.feed(head) is None
    assert parser.continue_needed is True
    request = parser.feed(b"hello")
    assert request.body == b"hello"


def test_expect_100_continue_is_not_needed_when_the_body_came_with_the_head():
    parser = RequestParser(MAX_BODY)
    request = parser.feed(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                          b"Expect: 100-continue\r\n\r\nhello")
    assert request.body == b"hello"
    assert parser.continue_needed is False


def test_expect_100_continue_on_a_request_without_body_needs_nothing():
    parser = RequestParser(MAX_BODY)
    request = parser.feed(b"GET /time HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
    assert request is not None
    assert parser.continue_needed is False


def test_expect_100_continue_with_a_chunked_body_is_needed():
    parser = RequestParser(MAX_BODY)
    assert parser.feed(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                       b"Expect: 100-Continue\r\n\r\n") is None
    assert parser.continue_needed is True
    assert parser.feed(b"2\r\nhi\r\n0\r\n\r\n").body == b"hi"


def test_head_of_exactly_8_KiB_is_accepted_whole_and_byte_by_byte():
    line = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
    raw = line + b"p" * (MAX_HEAD - len(line)) + b"\r\n\r\n"
    assert len(raw) == MAX_HEAD + 4
    for feed in (feed_whole, feed_bytewise):
        request, _ = feed(raw)
        assert request is not None
        assert len(request.headers["x-pad"]) == MAX_HEAD - len(line)


# (name, raw request, status)
BAD = [
    ("request line with one space", b"GET /time\r\nHost: x\r\n\r\n", 400),
    ("request line with two spaces", b"GET  /time HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("request line with a trailing space", b"GET /time HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
    ("lowercase version", b"GET /time http/1.1\r\nHost: x\r\n\r\n", 400),
    ("garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("bad method characters", b"GE(T /time HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("method with a slash", b"G/ET /time HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("target not starting with /", b"GET time HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("asterisk target on GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("non-ASCII target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
    ("whitespace before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("tab before colon", b"GET / HTTP/1.1\r\nHost: x\r\nAccept\t: a\r\n\r\n", 400),
    ("empty header name", b"GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", 400),
    ("obs-fold continuation", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n", 400),
    ("obs-fold with a colon", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tX-B: b\r\n\r\n", 400),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    ("CR in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    ("DEL in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n", 400),
    ("escape in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x1b[31m\r\n\r\n", 400),
    ("missing Host on HTTP/1.1", b"GET /time HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("duplicate Content-Length",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 400),
    ("duplicate Last-Event-ID",
     b"GET / HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1-0\r\nLast-Event-ID: 2-0\r\n\r\n", 400),
    ("duplicate Authorization",
     b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400),
    ("non-numeric Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", 400),
    ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("Content-Length list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", 400),
    ("non-ASCII digits in Content-Length",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\nab", 400),
    ("both Content-Length and Transfer-Encoding",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("bad chunk size",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400),
    ("negative chunk size",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n", 400),
    ("empty chunk size line",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nab\r\n0\r\n\r\n", 400),
    ("chunk data not followed by CRLF",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", 400),
    ("chunk data followed by CR and garbage",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\rX0\r\n\r\n", 400),
    ("chunk size line too long",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"e" * 5000, 400),
    ("invalid UTF-8 in the path", b"GET /%C3%28 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("invalid UTF-8 in the query", b"GET /t?x=%FF HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("encoded NUL in the path", b"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("encoded LF in the path", b"GET /a%0Ab HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("Content-Length body over max_body",
     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n" + b"a" * 65, 413),
    ("huge Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
    ("chunked body over max_body",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"40\r\n" + b"a" * 64 + b"\r\n1\r\nb\r\n0\r\n\r\n", 413),
    ("one chunk over max_body",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n", 413),
    ("head over 8 KiB", b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * MAX_HEAD + b"\r\n\r\n", 431),
    ("head of 8 KiB + 1",
     b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (MAX_HEAD - 31) + b"\r\n\r\n", 431),
    ("no line end at all", b"G" * (MAX_HEAD + 100), 431),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("HTTP/0.9 style version", b"GET / HTTP/0.9\r\n\r\n", 505),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    ("Transfer-Encoding gzip",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ("Transfer-Encoding gzip, chunked",
     b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
]


def test_head_of_8_KiB_plus_1_row_is_one_byte_over():
    raw = dict((row[0], row[1]) for row in BAD)["head of 8 KiB + 1"]
    assert raw.index(b"\r\n\r\n") == MAX_HEAD + 1


@pytest.mark.parametrize("name, raw, status", BAD, ids=[row[0] for row in BAD])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def test_bad_request_raises_its_status_whole_and_byte_by_byte(feed, name, raw, status):
    with pytest.raises(HttpError) as info:
        request, _ = feed(raw)
        pytest.fail(f"parsed as {request!r}")
    assert info.value.status == status
    assert info.value.text
    assert info.value.reply().startswith(f"HTTP/1.1 {status} ".encode())


# Whatever the chunking, one outcome per request: every cut in two of a sample of the tables.
SPLIT = [row[1] for row in GOOD] + [row[1] for row in BAD if len(row[1]) < 200]


@pytest.mark.parametrize("raw", SPLIT)
def test_any_two_piece_split_gives_the_same_outcome_as_whole(raw):
    whole = outcome([raw + TRAILING])
    assert whole is not None
    for cut in range(len(raw)):
        assert outcome([raw[:cut], raw[cut:] + TRAILING]) == whole, f"cut at {cut}"


# -- responses ------------------------------------------------------------------------------

# whole_request: the one-match parser the loop tries first on what it read at accept. It may
# decline anything (RequestParser then decides); where it answers, it answers as the parser.
WHOLE_ANSWERS = [
    b"GET /time HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: text/event-stream\r\n\r\n",
    b"GET /time HTTP/1.0\r\n\r\n",
    b"HEAD /time?client=a%20b&lastEventId=1-2 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /p%C3%A9 HTTP/1.1\r\nHost: x\r\nX-Blank:\r\nX-Pad: \t a  b \t\r\nX-Latin: \xe9\r\n\r\n",
]
WHOLE_DECLINES = [     # each one is the parser's to take or refuse
    b"GET /time HTTP/1.1\nHost: x\n\n",                           # bare LF line ends
    b"GET /time HTTP/1.1\r\nHost: x\r\nX-Tab: a\tb\r\n\r\n",         # a tab inside a value
    b"GET /time HTTP/1.1\r\nHost: x\r\nX-Obs: \x80\r\n\r\n",          # a C1 control byte
    b"GET /time HTTP/1.1\r\nHost: x\r\nX_Under: 1\r\n\r\n",           # a rarer token character
    b"GET /time HTTP/1.1\r\nHost: x\r\n",                       # not complete
    b"GET /time HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n",  # more after the head
    b"\r\nGET /time HTTP/1.1\r\nHost: x\r\n\r\n",                # a blank line first
    b"GET /time HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n",   # a repeated header
    b"POST /time HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",  # a body to read
    b"GET http://x/time HTTP/1.1\r\nHost: x\r\n\r\n",            # absolute form
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("raw", WHOLE_ANSWERS)
def test_whole_request_answers_the_common_forms_as_the_parser_does(raw):
    request = whole_request(raw)
    assert request is not None
    assert shape(request) == shape(feed_whole(raw)[0])


@pytest.mark.parametrize("raw", WHOLE_DECLINES)
def test_whole_request_leaves_the_rest_to_the_parser(raw):
    assert whole_request(raw) is None


@pytest.mark.parametrize("name, raw, method, path, query, version, headers, body", GOOD,
                         ids=GOOD_IDS)
def test_whole_request_agrees_with_the_parser_on_every_good_request(
        name, raw, method, path, query, version, headers, body):
    request = whole_request(raw)
    assert request is None or shape(request) == shape(feed_whole(raw)[0])
    assert whole_request(raw + TRAILING) is None


@pytest.mark.parametrize("name, raw, status", BAD, ids=[b[0] for b in BAD])
def test_whole_request_never_takes_a_bad_request(name, raw, status):
    assert whole_request(raw) is None


def test_response_head_is_a_status_line_headers_and_a_blank_line():
    assert response_head(200, [("Content-Type", "text/event-stream"), ("X-A", "1")]) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-A: 1\r\n\r\n")
    assert response_head(204) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert response_head(299) == b"HTTP/1.1 299 Unknown\r\n\r\n"


def test_reply_has_length_type_no_store_and_close():
    assert reply(200, "ok\n") == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 3\r\n"
        b"Cache-Control: no-store\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"ok\n")


def test_reply_counts_utf8_bytes_and_keeps_extra_headers_before_connection():
    assert reply(200, "caf\u00e9", "application/json", [("X-Id", "1-0")]) == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 5\r\n"
        b"Cache-Control: no-store\r\n"
        b"X-Id: 1-0\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"caf\xc3\xa9")


def test_reply_takes_bytes_bodies_as_they_are():
    assert reply(200, b"\x00\xff", "application/octet-stream").endswith(
        b"Content-Length: 2\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n\x00\xff")


def test_error_reply_bytes():
    assert error_reply(405, "POST not allowed here", [("Allow", "GET, HEAD")]) == (
        b"HTTP/1.1 405 Method Not Allowed\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 46\r\n"
        b"Cache-Control: no-store\r\n"
        b"Allow: GET, HEAD\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"405 Method Not Allowed: POST not allowed here\n")


def test_http_error_renders_its_own_reply():
    exc = HttpError(503, "shutting down", [("Retry-After", "5")])
    assert str(exc) == "503 shutting down"
    assert exc.reply() == error_reply(503, "shutting down", [("Retry-After", "5")])
    assert b"\r\nRetry-After: 5\r\n" in exc.reply()
    assert exc.reply().endswith(b"\r\n\r\n503 Service Unavailable: shutting down\n")
