"""resp: RESP2 commands to bytes and the sans-IO reply parser.

Every good reply is fed whole, byte by byte (no reply before its last byte), followed by
another reply, and several in one feed. Every bad input, whole and byte by byte, must raise
ProtocolError and never anything else. The cap on a reply's size is met before its bytes are
buffered. A seeded fuzzer splits random nested replies at random points, and feeds garbage.
"""
import random
import time

import pytest

from ssed import resp
from ssed.resp import NEED, Error, Parser, ProtocolError, command, pipeline



def nest(value, depth):
    for _ in range(depth):
        value = [value]
    return value


XREAD = [[b"{ssed}:events", [
    [b"1700000000000-0", [b"p", b"/chat", b"d", b"hi"]],
    [b"1700000000000-1", [b"p", b"/time", b"d", b"line1\r\nline2", b"t", b"tick"]],
]]]

# (name, bytes, reply)
GOOD = [
    ("simple string", b"+OK\r\n", "OK"),
    ("empty simple string", b"+\r\n", ""),
    ("UTF-8 simple string", "+héllo\r\n".encode(), "héllo"),
    ("error", b"-ERR unknown command 'FOO'\r\n", Error("ERR unknown command 'FOO'")),
    ("NOAUTH", b"-NOAUTH Authentication required.\r\n", Error("NOAUTH Authentication required.")),
    ("LOADING", b"-LOADING Redis is loading the dataset in memory\r\n",
     Error("LOADING Redis is loading the dataset in memory")),
    ("UNBLOCKED", b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
     Error("UNBLOCKED client unblocked via CLIENT UNBLOCK")),
    ("zero", b":0\r\n", 0),
    ("negative integer", b":-1\r\n", -1),
    ("largest integer", b":9223372036854775807\r\n", 2 ** 63 - 1),
    ("smallest integer", b":-9223372036854775808\r\n", -2 ** 63),
    ("bulk", b"$5\r\nhello\r\n", b"hello"),
    ("empty bulk", b"$0\r\n\r\n", b""),
    ("nil bulk", b"$-1\r\n", None),
    ("bulk holding CRLF", b"$4\r\na\r\nb\r\n", b"a\r\nb"),
    ("binary bulk", b"$4\r\n\x00\xff\n\r\r\n", b"\x00\xff\n\r"),
    ("empty array", b"*0\r\n", []),
    ("nil array", b"*-1\r\n", None),
    ("array of mixed", b"*4\r\n$3\r\nfoo\r\n:1\r\n+OK\r\n-ERR x\r\n",
     [b"foo", 1, "OK", Error("ERR x")]),
    ("array with nils", b"*3\r\n$-1\r\n*-1\r\n*0\r\n", [None, None, []]),
    ("nested arrays", b"*2\r\n*1\r\n*1\r\n:7\r\n*0\r\n", [[[7]], []]),
    ("XREAD reply",
     b"*1\r\n*2\r\n$13\r\n{ssed}:events\r\n*2\r\n"
     b"*2\r\n$15\r\n1700000000000-0\r\n*4\r\n$1\r\np\r\n$5\r\n/chat\r\n$1\r\nd\r\n$2\r\nhi\r\n"
     b"*2\r\n$15\r\n1700000000000-1\r\n*6\r\n$1\r\np\r\n$5\r\n/time\r\n$1\r\nd\r\n"
     b"$12\r\nline1\r\nline2\r\n$1\r\nt\r\n$4\r\ntick\r\n", XREAD),
    ("nested 32 deep", b"*1\r\n" * 32 + b":1\r\n", nest(1, 32)),
]

# (name, bytes): each must raise ProtocolError
BAD = [
    ("RESP3 blob error", b"!3\r\nabc\r\n"),
    ("RESP3 map", b"%1\r\n+a\r\n+b\r\n"),
    ("RESP3 null", b"_\r\n"),
    ("unknown type", b"x\r\n"),
    ("an empty line", b"\r\n"),
    ("a bare LF", b"\n"),
    ("LF without CR", b"+OK\n"),
    ("CR inside a line", b"+a\rb\r\n"),
    ("CR inside an error", b"-ERR a\rb\r\n"),
    ("bulk without CRLF after it", b"$3\r\nfooXY"),
    ("bulk with LF only after it", b"$3\r\nfoo\n\r"),
    ("bulk length -2", b"$-2\r\n"),
    ("array length -5", b"*-5\r\n"),
    ("bulk length not digits", b"$abc\r\n"),
    ("bulk length with a space", b"$ 3\r\nfoo\r\n"),
    ("bulk length with a plus", b"$+3\r\nfoo\r\n"),
    ("bulk length with a suffix", b"$3x\r\nfoo\r\n"),
    ("bulk length empty", b"$\r\n"),
    ("array length with an underscore", b"*1_0\r\n"),
    ("bulk length in Arabic digits", "$٣\r\nfoo\r\n".encode()),
    ("integer with a point", b":1.5\r\n"),
    ("integer empty", b":\r\n"),
    ("integer two minus signs", b":--1\r\n"),
    ("integer minus alone", b":-\r\n"),
    ("integer too long", b":" + b"1" * 25 + b"\r\n"),
    ("bulk length too long", b"$" + b"9" * 40 + b"\r\n"),
    ("nested 33 deep", b"*1\r\n" * 33 + b":1\r\n"),
    ("bad element inside an array", b"*2\r\n:1\r\n?\r\n"),
]


def encode(value):
    """A reply as Redis would send it (None as a nil bulk)."""
    if isinstance(value, Error):
        return b"-" + value.text.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(encode(v) for v in value)


def drain(parser):
    """Every whole reply the parser holds."""
    out = []
    while (reply := parser.get()) is not NEED:
        out.append(reply)
    return out


def parse_chunks(chunks, max_reply=resp.MAX_REPLY):
    parser = Parser(max_reply)
    out = []
    for chunk in chunks:
        parser.feed(chunk)
        out.extend(drain(parser))
    return out, parser


def ids(table):
    return [row[0] for row in table]


# -- good replies ------------------------------------------------------------------------

@pytest.mark.parametrize("name,data,expected", GOOD, ids=ids(GOOD))
def test_good_reply_fed_whole(name, data, expected):
    replies, parser = parse_chunks([data])
    assert replies == [expected]
    assert parser.buffered() == 0


@pytest.mark.parametrize("name,data,expected", GOOD, ids=ids(GOOD))
def test_good_reply_fed_byte_by_byte_is_whole_only_at_its_last_byte(name, data, expected):
    parser = Parser()
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        reply = parser.get()
        if i < len(data) - 1:
            assert reply is NEED, f"a reply after {i + 1} of {len(data)} bytes"
    assert reply == expected
    assert parser.get() is NEED


@pytest.mark.parametrize("name,data,expected", GOOD, ids=ids(GOOD))
def test_good_reply_followed_by_another_leaves_the_next_intact(name, data, expected):
    replies, parser = parse_chunks([data + b"+NEXT\r\n:4"])
    assert replies == [expected, "NEXT"]
    assert parser.buffered() == 2
    parser.feed(b"2\r\n")
    assert parser.get() == 42


def test_every_good_reply_in_one_feed_then_in_chunks_of_seven():
    stream = b"".join(row[1] for row in GOOD)
    expected = [row[2] for row in GOOD]
    assert parse_chunks([stream])[0] == expected
    assert parse_chunks([stream[i:i + 7] for i in range(0, len(stream), 7)])[0] == expected


def test_encoding_of_the_tables_round_trips():
    """The test encoder (used by the fuzzer) agrees with the byte table."""
    for name, data, expected in GOOD:
        if name not in ("nil array", "array with nils"):     # nil arrays encode as nil bulks
            assert encode(expected) == data, name


def test_get_before_any_feed_needs_more():
    assert Parser().get() is NEED
    assert repr(NEED) == "NEED" and not NEED


def test_replies_are_plain_types():
    (reply,), _ = parse_chunks([GOOD[-2][1]])       # the XREAD reply
    assert type(reply) is list and type(reply[0][0]) is bytes
    (n,), _ = parse_chunks([b":5\r\n"])
    assert type(n) is int


# -- errors as values ----------------------------------------------------------------------

def test_error_is_a_value_with_its_text_and_code():
    err = parse_chunks([b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"]
                       )[0][0]
    assert isinstance(err, Error) and not isinstance(err, Exception)
    assert err.code == "WRONGTYPE"
    assert err.text == "WRONGTYPE Operation against a key holding the wrong kind of value"
    assert str(err) == err.text
    assert repr(err) == f"Error({err.text!r})"
    assert err == Error(err.text) and hash(err) == hash(Error(err.text))
    assert err != err.text and err != Error("WRONGTYPE")


@pytest.mark.parametrize("text,code", [("READONLY You can't write against a read only replica.",
                                        "READONLY"), ("ERR", "ERR"), ("", "")])
def test_error_code_is_the_first_word(text, code):
    assert Error(text).code == code


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,data", BAD, ids=ids(BAD))
def test_bad_input_fed_whole_is_a_protocol_error(name, data):
    parser = Parser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        drain(parser)


@pytest.mark.parametrize("name,data", BAD, ids=ids(BAD))
def test_bad_input_fed_byte_by_byte_is_a_protocol_error_and_no_reply(name, data):
    parser = Parser()
    with pytest.raises(ProtocolError):
        for i in range(len(data)):
            parser.feed(data[i:i + 1])
            assert drain(parser) == [] or name == "bad element inside an array"
    with pytest.raises(ProtocolError):          # the parser stays broken: drop the connection
        parser.get()


def test_bad_input_after_good_replies_keeps_the_good_ones():
    parser = Parser()
    parser.feed(b"+OK\r\n:1\r\n$x\r\n")
    assert parser.get() == "OK" and parser.get() == 1
    with pytest.raises(ProtocolError, match="bulk length"):
        parser.get()


def test_an_unknown_type_is_refused_at_its_first_byte():
    parser = Parser()
    parser.feed(b"|")
    with pytest.raises(ProtocolError, match="unknown reply type"):
        parser.get()


def test_a_length_line_that_never_ends_is_refused_early():
    parser = Parser()
    parser.feed(b"*" + b"1" * 30)
    with pytest.raises(ProtocolError, match="array length"):
        parser.get()


# -- the cap -------------------------------------------------------------------------------

def test_default_cap_is_64_mib_and_settable():
    parser = Parser()
    assert parser.max_reply == 64 * 1024 * 1024
    parser.max_reply = 10
    parser.feed(b"$11\r\n")
    with pytest.raises(ProtocolError, match="over 10 bytes"):
        parser.get()


def test_reply_of_exactly_the_cap_passes_and_one_byte_more_fails():
    at_cap = encode([b"x" * 50, b"y" * 20])
    replies, _ = parse_chunks([at_cap], max_reply=len(at_cap))
    assert replies == [[b"x" * 50, b"y" * 20]]
    parser = Parser(len(at_cap) - 1)
    parser.feed(at_cap)
    with pytest.raises(ProtocolError):
        parser.get()


def test_a_declared_bulk_over_the_cap_fails_before_its_bytes_arrive():
    parser = Parser(1024)
    parser.feed(b"*2\r\n$3\r\nabc\r\n$2000\r\nab")
    with pytest.raises(ProtocolError, match="a bulk of 2000"):
        parser.get()


def test_a_declared_array_over_the_cap_fails_at_its_header():
    parser = Parser(1024)
    parser.feed(b"*1000000000\r\n")
    with pytest.raises(ProtocolError, match="an array of 1000000000"):
        parser.get()


def test_many_small_elements_over_the_cap_fail():
    parser = Parser(1000)
    parser.feed(b"*300\r\n")
    assert parser.get() is NEED                 # 300 elements could fit in 1000 bytes
    with pytest.raises(ProtocolError):
        for _ in range(300):
            parser.feed(b":1234567\r\n")
            parser.get()


def test_a_line_without_end_over_the_cap_fails_without_waiting_for_it():
    parser = Parser(64)
    parser.feed(b"+" + b"a" * 40)
    assert parser.get() is NEED
    parser.feed(b"a" * 40)
    with pytest.raises(ProtocolError, match="without an end"):
        parser.get()


def test_the_cap_is_per_reply_not_per_connection():
    one = encode([b"z" * 40])
    replies, _ = parse_chunks([one * 10], max_reply=len(one))
    assert replies == [[b"z" * 40]] * 10


# -- commands ------------------------------------------------------------------------------

COMMANDS = [
    (("PING",), b"*1\r\n$4\r\nPING\r\n"),
    (("AUTH", "pässword"), b"*2\r\n$4\r\nAUTH\r\n$9\r\np\xc3\xa4ssword\r\n"),
    (("XREAD", "BLOCK", 0, "COUNT", -1), b"*5\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n"
     b"$5\r\nCOUNT\r\n$2\r\n-1\r\n"),
    (("SET", b"k\r\n", bytearray(b"\x00"), ""),
     b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n\x00\r\n$0\r\n\r\n"),
]


@pytest.mark.parametrize("args,data", COMMANDS)
def test_command_bytes(args, data):
    assert command(*args) == data


def test_command_parses_back_to_its_arguments():
    for args, data in COMMANDS:
        assert parse_chunks([data])[0] == [[resp._arg(a) for a in args]]


@pytest.mark.parametrize("bad", [1.5, None, True, ["x"]])
def test_command_refuses_other_argument_types(bad):
    with pytest.raises(TypeError):
        command("SET", "k", bad)


def test_command_needs_a_name():
    with pytest.raises(ValueError):
        command()


def test_pipeline_is_the_commands_in_order():
    assert pipeline([("MULTI",), ("INCR", "n"), ("EXEC",)]) == (
        command("MULTI") + command("INCR", "n") + command("EXEC"))


# -- big replies, and the fuzzer -----------------------------------------------------------

def xread_reply(entries):
    return [[b"{ssed}:events", [[b"1700000000000-%d" % i, [b"p", b"/chat", b"d", b"x" * 100]]
                                for i in range(entries)]]]


def test_a_big_xread_reply_in_many_small_reads_is_parsed_once():
    """20,000 entries in 1,400-byte reads (~2,700 feeds): parsing again from the start on each
    feed would take minutes; the parser keeps its place, so chunked costs about what whole does."""
    expected = xread_reply(20000)
    data = encode(expected)
    start = time.perf_counter()
    assert parse_chunks([data])[0] == [expected]
    whole = time.perf_counter() - start
    start = time.perf_counter()
    chunks = [data[i:i + 1400] for i in range(0, len(data), 1400)]
    assert parse_chunks(chunks)[0] == [expected]
    chunked = time.perf_counter() - start
    assert chunked < 3 * whole + 0.5, (whole, chunked)


def test_a_long_lived_connection_keeps_only_what_it_has_not_parsed():
    """The bytes of returned replies are dropped at the next feed (else a node's XREAD
    connection would hold every event it ever read)."""
    parser = Parser()
    for i in range(10000):
        parser.feed(encode([b"%d" % i, b"x" * 100]))
        assert parser.get() == [b"%d" % i, b"x" * 100]
    parser.feed(b"")
    assert len(parser._buf) == 0


def random_reply(rng, depth=0):
    kind = rng.randrange(7 if depth < 4 else 5)
    if kind == 0:
        return "".join(rng.choice("ab OK\t\x7fé") for _ in range(rng.randrange(8)))
    if kind == 1:
        return Error(rng.choice(["ERR", "NOAUTH", "LOADING"]) + " x" * rng.randrange(3))
    if kind == 2:
        return rng.randrange(-2 ** 63, 2 ** 63)
    if kind == 3:
        return rng.choice([None, bytes(rng.randrange(256) for _ in range(rng.randrange(12)))])
    if kind == 4:
        return b"\r\n" * rng.randrange(3)
    return [random_reply(rng, depth + 1) for _ in range(rng.randrange(6))]


def random_split(rng, data):
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def test_fuzz_random_replies_split_at_random_points():
    rng = random.Random(1215)
    deadline = time.monotonic() + 1.0
    rounds = 0
    while rounds < 2000 and time.monotonic() < deadline:
        replies = [random_reply(rng) for _ in range(rng.randrange(1, 5))]
        data = b"".join(encode(r) for r in replies)
        got, parser = parse_chunks(random_split(rng, data))
        assert got == replies, data
        assert parser.buffered() == 0
        rounds += 1
    assert rounds >= 200


GARBAGE_TOKENS = [b"*", b"$", b"+", b"-", b":", b"\r\n", b"\r", b"\n", b"-1", b"0", b"3", b"12",
                  b"ab", b"\x00", b"%", b"99999999999"]


def test_fuzz_garbage_gives_replies_or_a_protocol_error_never_another_exception():
    rng = random.Random(1516)
    deadline = time.monotonic() + 0.8
    outcomes = {"reply": 0, "error": 0}
    rounds = 0
    while rounds < 5000 and time.monotonic() < deadline:
        if rng.random() < 0.5:
            data = b"".join(rng.choice(GARBAGE_TOKENS) for _ in range(rng.randrange(1, 30)))
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
        try:
            got, _ = parse_chunks(random_split(rng, data) if len(data) > 1 else [data],
                                  max_reply=rng.choice([16, 1024]))
            outcomes["reply"] += bool(got)
        except ProtocolError:
            outcomes["error"] += 1
        rounds += 1
    assert rounds >= 500 and outcomes["reply"] and outcomes["error"], outcomes

