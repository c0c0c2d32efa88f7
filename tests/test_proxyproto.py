"""proxyproto: the PROXY protocol header, v1 and v2 (SPEC 14), sans-IO.

Every good header is parsed whole, byte by byte (None until its last byte: "need more"
promises every byte so far is header), and followed by trailing bytes (an HTTP request, a
TLS ClientHello), which it must leave alone: `size` is the header's alone. Every bad one
raises ProxyError whole and byte by byte, never anything else, and never after a "need
more" that would have let the reader consume bytes past the header.
"""
import ipaddress
import struct

import pytest

from ssed.proxyproto import MAX_HEADER, V1_MAX, V2_MAX, V2_SIGNATURE, Header, ProxyError, parse

TRAILING = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01", b"\r\n", b"P",
            V2_SIGNATURE]


def v2(command=0x21, family=0x11, body=None, length=None):
    """A v2 header: signature, version/command, family/protocol, length, body."""
    if body is None:
        body = b""
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", size) + body


def ipv4(src, dst, sport, dport, tlvs=b""):
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport) + tlvs)


def ipv6(src, dst, sport, dport, tlvs=b""):
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport) + tlvs)


TLVS = (b"\x01\x00\x08http/1.1"             # PP2_TYPE_ALPN
        + b"\x02\x00\x0bexample.com"       # PP2_TYPE_AUTHORITY
        + b"\x04\x00\x00")                 # PP2_TYPE_NOOP, empty

# (name, header bytes, client address or None, version)
GOOD = [
    ("v1 TCP4", b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", "192.0.2.1", 1),
    ("v1 TCP6", b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 80\r\n", "2001:db8::1", 1),
    ("v1 TCP6 IPv4-mapped is IPv4", b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", "192.0.2.1", 1),
    ("v1 ports 0 and 65535", b"PROXY TCP4 192.0.2.1 192.0.2.2 0 65535\r\n", "192.0.2.1", 1),
    ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n", None, 1),
    ("v1 UNKNOWN with addresses ignored", b"PROXY UNKNOWN ffff:f::1 x y z\r\n", None, 1),
    ("v1 at the 107-byte bound",
     b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
     b" 65535 65535\r\n", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1),
    ("v2 TCP4", v2(body=ipv4("192.0.2.1", "198.51.100.2", 56324, 443)), "192.0.2.1", 2),
    ("v2 TCP6", v2(family=0x21, body=ipv6("2001:db8::1", "2001:db8::2", 4711, 443)),
     "2001:db8::1", 2),
    ("v2 TCP6 IPv4-mapped", v2(family=0x21, body=ipv6("::ffff:192.0.2.9", "::1", 1, 2)),
     "192.0.2.9", 2),
    ("v2 TCP4 with TLVs skipped", v2(body=ipv4("192.0.2.1", "192.0.2.2", 1, 2, TLVS)),
     "192.0.2.1", 2),
    ("v2 LOCAL", v2(command=0x20, family=0x00), None, 2),
    ("v2 LOCAL ignores its family and body", v2(command=0x20, family=0x12, body=b"\xff" * 9),
     None, 2),
    ("v2 PROXY UNSPEC", v2(family=0x00), None, 2),
    ("v2 PROXY over a UNIX stream", v2(family=0x31, body=b"\0" * 216), None, 2),
    ("v2 at its bound", v2(body=ipv4("192.0.2.1", "192.0.2.2", 1, 2, b"\x04" + struct.pack(
        "!H", V2_MAX - 16 - 12 - 3) + b"\0" * (V2_MAX - 16 - 12 - 3))), "192.0.2.1", 2),
]

# (name, bytes): each raises ProxyError, whole and fed byte by byte
BAD = [
    ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ("lower-case proxy", b"proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n"),
    ("HTTP after a leading CRLF", b"\r\nGET / HTTP/1.1\r\n\r\n"),
    ("v1 with LF alone", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n"),
    ("v1 no line end in 107 bytes", b"PROXY TCP4 " + b"1" * 200),
    ("v1 line of 108 bytes",
     b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
     b" 65535 655350\r\n"),
    ("v1 TCP5", b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n"),
    ("v1 TCP4 with IPv6", b"PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"),
    ("v1 TCP6 with IPv4", b"PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n"),
    ("v1 a name", b"PROXY TCP4 localhost 192.0.2.2 1 2\r\n"),
    ("v1 a bad destination", b"PROXY TCP4 192.0.2.1 192.0.2.256 1 2\r\n"),
    ("v1 port over 65535", b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n"),
    ("v1 port with a leading zero", b"PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n"),
    ("v1 port negative", b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n"),
    ("v1 missing a port", b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n"),
    ("v1 one field too many", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n"),
    ("v1 two spaces", b"PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n"),
    ("v1 trailing space", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n"),
    ("v1 a scope id", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
    ("v1 not ASCII", b"PROXY TCP4 192.0.2.\xd9\xa3 192.0.2.2 1 2\r\n"),
    ("v1 nothing after PROXY", b"PROXY \r\n"),
    ("v1 non-ASCII digits", "PROXY TCP4 192.0.2.1 192.0.2.2 \u0661 2\r\n".encode()),
    ("v2 bad signature", V2_SIGNATURE[:-1] + b"X" + b"\x21\x11\x00\x0c" + b"\0" * 12),
    ("v2 version 1", v2(command=0x11, body=ipv4("192.0.2.1", "192.0.2.2", 1, 2))),
    ("v2 version 3", v2(command=0x31)),
    ("v2 command 2", v2(command=0x22)),
    ("v2 UDP over IPv4", v2(family=0x12, body=ipv4("192.0.2.1", "192.0.2.2", 1, 2))),
    ("v2 UDP over IPv6", v2(family=0x22, body=ipv6("::1", "::2", 1, 2))),
    ("v2 UNIX datagram", v2(family=0x32, body=b"\0" * 216)),
    ("v2 undefined family", v2(family=0x41, body=b"\0" * 36)),
    ("v2 undefined protocol", v2(family=0x13, body=b"\0" * 12)),
    ("v2 TCP4 too short for its addresses", v2(body=b"\0" * 11)),
    ("v2 TCP6 too short for its addresses", v2(family=0x21, body=b"\0" * 35)),
    ("v2 over its bound", v2(length=V2_MAX - 16 + 1)),
    ("v2 the largest length", v2(length=65535)),
]


def bytewise(data):
    """Feed `data` a byte more at a time, as a reader holding what it got would: the first
    result that is not "need more", and how many bytes it had then."""
    for i in range(1, len(data) + 1):
        result = parse(data[:i])
        if result is not None:
            return result, i
    return None, len(data)


@pytest.mark.parametrize("name, data, address, version", GOOD, ids=[c[0] for c in GOOD])
def test_good_headers_whole_bytewise_and_with_trailing_bytes(name, data, address, version):
    expected = Header(address, len(data), version)
    assert parse(data) == expected
    assert bytewise(data) == (expected, len(data))      # None until the very last byte
    for trailing in TRAILING:
        assert parse(data + trailing) == expected, trailing


@pytest.mark.parametrize("name, data", BAD, ids=[c[0] for c in BAD])
def test_bad_headers_raise_proxy_error_whole_and_bytewise(name, data):
    with pytest.raises(ProxyError):
        parse(data)
    with pytest.raises(ProxyError):
        bytewise(data)


@pytest.mark.parametrize("data, at", [
    (b"G", 1), (b"\x16", 1), (b"PROXX", 5), (b"\r\n\r\n\x00\r\nQUIX", 11),
    (b"\r\nGET", 3), (V2_SIGNATURE + b"\x31", 13),
])
def test_not_proxy_is_seen_as_soon_as_a_byte_says_so(data, at):
    # Plain HTTP or TLS on a proxy_protocol listener is closed at its first bytes, not after
    # header_timeout: the reader never waits for bytes that cannot make a header.
    assert bytewise(data[:at - 1])[0] is None
    with pytest.raises(ProxyError):
        parse(data[:at])


def test_need_more_never_covers_bytes_past_a_header():
    # The reader consumes everything on "need more": so "need more" must mean every byte
    # is header, checked for every prefix of every good header followed by trailing bytes.
    for _, data, _, _ in GOOD:
        for trailing in TRAILING:
            stream = data + trailing
            for i in range(len(stream) + 1):
                result = parse(stream[:i])
                assert (result is None) == (i < len(data)), (data, i)


def test_nothing_yet_is_need_more():
    assert parse(b"") is None


def test_max_header_bounds_every_header():
    assert V1_MAX <= MAX_HEADER and V2_MAX <= MAX_HEADER
    assert parse(v2(body=ipv4("192.0.2.1", "192.0.2.2", 1, 2, b"\0" * (MAX_HEADER - 28)))).size \
        == MAX_HEADER
