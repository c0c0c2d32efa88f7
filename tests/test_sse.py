"""sse: framing, and EventParser against the WHATWG event stream interpretation.

Every parser table row is fed whole, byte by byte, and split in two at every position: the
events, the last event ID and the reconnection time must come out the same each way.
"""
import pytest

from ssed.sse import Event, EventParser, comment, frame, prime, retry


def feed_all(chunks, last_event_id=""):
    parser = EventParser(last_event_id)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser.last_event_id, parser.retry


def feedings(stream):
    """The ways to cut one stream into chunks: whole, byte by byte, two pieces at every cut."""
    yield [stream]
    yield [stream[i:i + 1] for i in range(len(stream))]
    for cut in range(len(stream) + 1):
        yield [stream[:cut], stream[cut:]]


def ev(data, type="message", id=""):
    return Event(type=type, data=data, id=id)


# (name, stream, events, last_event_id, retry)
TABLE = [
    ("one event", b"data: hello\n\n", [ev("hello")], "", None),
    ("type and id", b"event: add\nid: 7\ndata: 73857293\n\n", [ev("73857293", "add", "7")], "7", None),
    ("two data lines", b"data: a\ndata: b\n\n", [ev("a\nb")], "", None),
    ("CR LF", b"data: a\r\ndata: b\r\n\r\n", [ev("a\nb")], "", None),
    ("CR", b"data: a\rdata: b\r\r", [ev("a\nb")], "", None),
    ("mixed line ends", b"data: a\r\ndata: b\rdata: c\n\r\n", [ev("a\nb\nc")], "", None),
    ("CR CR LF is two lines", b"data: a\r\r\ndata: b\n\n", [ev("a"), ev("b")], "", None),
    ("comments", b": hi\ndata: x\n: there\n:\n\n", [ev("x")], "", None),
    ("comment only", b": keepalive\n\n", [], "", None),
    ("field without colon", b"data\n\ndata\ndata\n\ndata:", [ev(""), ev("\n")], "", None),
    ("empty data field", b"data:\n\n", [ev("")], "", None),
    ("one space stripped", b"data:  two\n\ndata:none\n\n", [ev(" two"), ev("none")], "", None),
    ("colon in value", b"data: a: b\n\n", [ev("a: b")], "", None),
    ("spec example: test", b"data:test\n\ndata: test\n\n", [ev("test"), ev("test")], "", None),
    ("unknown field", b"foo: bar\ndata: x\n\n", [ev("x")], "", None),
    ("names are case sensitive", b"Data: x\nEVENT: y\n\n", [], "", None),
    ("empty event type is message", b"event:\ndata: x\n\n", [ev("x")], "", None),
    ("the last event type wins", b"event: a\nevent: b\ndata: x\n\n", [ev("x", "b")], "", None),
    ("type resets after dispatch", b"event: a\ndata: x\n\ndata: y\n\n", [ev("x", "a"), ev("y")], "", None),
    ("type dropped with empty data", b"event: a\n\ndata: y\n\n", [ev("y")], "", None),
    ("id persists", b"id: 1\ndata: a\n\ndata: b\n\n", [ev("a", id="1"), ev("b", id="1")], "1", None),
    ("bare id resets", b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev("a", id="1"), ev("b")], "", None),
    ("id with NUL ignored", b"id: 1\n\nid: a\x00b\ndata: x\n\n", [ev("x", id="1")], "1", None),
    ("priming id", b"id: 1700000000000-5\n\n", [], "1700000000000-5", None),
    ("id then retry then prime", b"retry: 3000\n\nid: 9-0\n\n", [], "9-0", 3000),
    ("id set only at dispatch", b"id: 5\ndata: x\n", [], "", None),
    ("incomplete event dropped", b"data: x\n\ndata: y", [ev("x")], "", None),
    ("retry", b"retry: 1500\n", [], "", 1500),
    ("retry zero", b"retry: 0\n", [], "", 0),
    ("retry not digits", b"retry: 1000\nretry: 2.5\nretry: -1\nretry: 15x\nretry:\nretry\n", [], "", 1000),
    ("retry with space", b"retry:  100\n", [], "", None),
    ("retry later wins", b"retry: 1000\nretry: 50\n", [], "", 50),
    ("retry non-ASCII digits", "retry: \u0661\u0662\n".encode(), [], "", None),
    ("BOM", b"\xef\xbb\xbfdata: x\n\n", [ev("x")], "", None),
    ("second BOM is not stripped", b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", [], "", None),
    ("BOM only at the start", b"data: \xef\xbb\xbfx\n\n", [ev("\ufeffx")], "", None),
    ("unicode", "data: h\u00e9llo \u20ac \U0001d11e\n\n".encode(), [ev("h\u00e9llo \u20ac \U0001d11e")], "", None),
    ("unicode id and type", "id: \u00e9\nevent: \u4e16\ndata: x\n\n".encode(), [ev("x", "\u4e16", "\u00e9")], "\u00e9", None),
    ("invalid UTF-8 replaced", b"data: a\xffb\n\n", [ev("a\ufffdb")], "", None),
    ("truncated UTF-8 replaced", b"data: a\xe2\x82\n\n", [ev("a\ufffd")], "", None),
    ("nothing", b"", [], "", None),
]


@pytest.mark.parametrize("name, stream, events, last_id, retry_ms", TABLE, ids=[t[0] for t in TABLE])
def test_parser_table(name, stream, events, last_id, retry_ms):
    for chunks in feedings(stream):
        assert feed_all(chunks) == (events, last_id, retry_ms), chunks


def test_cr_at_end_of_chunk_then_lf_is_one_line_end():
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []                # the LF pairs with the CR: not a blank line
    assert parser.feed(b"\n") == [ev("a")]


def test_cr_dispatches_without_waiting_for_the_next_byte():
    assert EventParser().feed(b"data: a\r\r") == [ev("a")]


def test_lf_after_cr_still_paired_after_empty_feeds():
    parser = EventParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [ev("a")]


def test_utf8_split_across_chunks_after_cr():
    parser = EventParser()
    assert parser.feed(b"data: a\rdata: \xe2") == []
    assert parser.feed(b"\x82\xac\n\n") == [ev("a\n\u20ac")]


def test_last_event_id_carried_into_a_new_connection():
    parser = EventParser("41")
    assert parser.feed(b"data: x\n\n") == [ev("x", id="41")]
    assert parser.last_event_id == "41"


def test_retry_kept_across_events():
    parser = EventParser()
    parser.feed(b"retry: 50\n\n")
    parser.feed(b"data: x\n\n")
    assert parser.retry == 50


# ---- framing, and frame() -> EventParser round trips -----------------------------------

def test_frame_bytes():
    assert frame("a\r\nb", event="e", id="1-0") == b"id: 1-0\nevent: e\ndata: a\ndata: b\n\n"
    assert frame("") == b"data: \n\n"


def test_comment_retry_prime_bytes():
    assert comment("keepalive") == b": keepalive\n\n"
    assert retry(3000) == b"retry: 3000\n\n"
    assert prime("5-1") == b"id: 5-1\n\n"


ROUND_TRIPS = [
    ("plain", "hello", "hello"),
    ("LF lines", "a\nb\nc", "a\nb\nc"),
    ("CR LF lines", "a\r\nb\r\nc", "a\nb\nc"),
    ("CR lines", "a\rb\rc", "a\nb\nc"),
    ("mixed lines", "a\r\nb\rc\nd", "a\nb\nc\nd"),
    ("empty", "", ""),
    ("only a newline", "\n", "\n"),
    ("trailing newline", "a\n", "a\n"),
    ("blank lines inside", "a\n\n\nb", "a\n\n\nb"),
    ("leading spaces", "  two spaces\n one", "  two spaces\n one"),
    ("a single space", " ", " "),
    ("colons", ": not a comment\ndata: x", ": not a comment\ndata: x"),
    ("unicode", "h\u00e9llo \u4e16\u754c\n\U0001f389 \u2028", "h\u00e9llo \u4e16\u754c\n\U0001f389 \u2028"),
    ("JSON", '{"ACME": 12.5}', '{"ACME": 12.5}'),
]


@pytest.mark.parametrize("name, data, expected", ROUND_TRIPS, ids=[t[0] for t in ROUND_TRIPS])
def test_frame_round_trip(name, data, expected):
    stream = retry(50) + frame(data, event="t", id="1-0") + comment("x") + frame(data)
    for chunks in feedings(stream):
        assert feed_all(chunks) == ([ev(expected, "t", "1-0"), ev(expected, id="1-0")], "1-0", 50)


def test_prime_then_frames_round_trip():
    stream = prime("7-0") + frame("a", id="7-1") + prime("7-2")
    for chunks in feedings(stream):
        assert feed_all(chunks) == ([ev("a", id="7-1")], "7-2", None)
