"""forwarded: whom a request behind trusted proxies is from (SPEC 14).

Header values as the request parser gives them (repeated lines joined by ", ", in order),
the peer's address and the trusted networks in; the client's address, or a 400, out. The
walk is from the right: the first untrusted address is the client; all trusted, the
left-most; `unknown` or an obfuscated node stops at the hop that reported it.
"""
import ipaddress

import pytest

from ssed import forwarded
from ssed.http1 import HttpError, RequestParser

TRUSTED = tuple(ipaddress.ip_network(n) for n in ("127.0.0.1/32", "10.0.0.0/8", "2001:db8:f::/48"))
PROXY = "127.0.0.1"


def client(headers, peer=PROXY, trusted=TRUSTED):
    return forwarded.client(headers, peer, trusted)


# (name, Forwarded value, the client)
FORWARDED_GOOD = [
    ("one IPv4", "for=192.0.2.60", "192.0.2.60"),
    ("quoted IPv4 with a port", 'for="192.0.2.60:4711"', "192.0.2.60"),
    ("quoted IPv6 with a port", 'for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
    ("quoted IPv6 without a port", 'For="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
    ("IPv6 written long comes out short", 'for="[2001:0db8:cafe:0:0:0:0:17]"',
     "2001:db8:cafe::17"),
    ("IPv4-mapped IPv6 is the IPv4 address", 'for="[::ffff:192.0.2.60]"', "192.0.2.60"),
    ("parameter names in any case", "FOR=192.0.2.60;PROTO=https;By=10.0.0.1", "192.0.2.60"),
    ("other parameters around it", "proto=http;for=192.0.2.60;by=203.0.113.43;host=x",
     "192.0.2.60"),
    ("several elements: the right-most untrusted", "for=192.0.2.43, for=198.51.100.17",
     "198.51.100.17"),
    ("trusted hops on the right are skipped", "for=192.0.2.43, for=10.1.1.1, for=10.2.2.2",
     "192.0.2.43"),
    ("every hop trusted: the left-most", "for=10.9.9.9, for=10.1.1.1", "10.9.9.9"),
    ("unknown: the peer that reported it", "for=192.0.2.43, for=unknown", PROXY),
    ("UNKNOWN in capitals", "for=UNKNOWN", PROXY),
    ("unknown behind a trusted hop: that hop", "for=unknown, for=10.1.1.1", "10.1.1.1"),
    ("obfuscated node: the peer that reported it", "for=_hidden", PROXY),
    ("obfuscated node with an obfuscated port", 'for="_x.y-z:_p1"', PROXY),
    ("obfuscated behind a trusted hop", 'for=192.0.2.1, for="_gazonk", for=10.1.1.1',
     "10.1.1.1"),
    ("an element without for= names no one", "for=192.0.2.1, proto=https", PROXY),
    ("no for= at all: as if absent", "proto=https;host=example.com", PROXY),
    ("whitespace around separators", "  for=192.0.2.60 ;  proto=https ,  for=10.1.1.1  ",
     "192.0.2.60"),
    ("empty elements and pairs", ", for=192.0.2.60;;proto=http, ,", "192.0.2.60"),
    ("quoted pair in a quoted value", r'for="192.0.2.6\0"', "192.0.2.60"),
    ("a quoted comma is no separator", 'host="a,b";for=192.0.2.60', "192.0.2.60"),
    ("empty header", "", PROXY),
    ("port 0 and 65535-ish", 'for="192.0.2.1:0", for="192.0.2.2:99999"', "192.0.2.2"),
]

# (name, Forwarded value)
FORWARDED_BAD = [
    ("IPv6 unquoted", "for=[2001:db8::1]"),
    ("IPv6 without brackets", 'for="2001:db8::1"'),
    ("IPv4 with a port unquoted", "for=192.0.2.1:80"),
    ("not an address", "for=example.com"),
    ("leading zeros", "for=192.000.2.1"),
    ("IPv4 in brackets", 'for="[192.0.2.1]"'),
    ("no closing bracket", 'for="[2001:db8::1"'),
    ("garbage after the bracket", 'for="[2001:db8::1]x"'),
    ("a port too long", 'for="192.0.2.1:123456"'),
    ("an empty port", 'for="192.0.2.1:"'),
    ("a bad obfuscated port", 'for="192.0.2.1:_"'),
    ("a parameter twice", "for=192.0.2.1;for=192.0.2.2"),
    ("a parameter twice in other case", "for=192.0.2.1;FOR=192.0.2.2"),
    ("no value", "for="),
    ("no =", "for"),
    ("an unterminated quote", 'for="192.0.2.1'),
    ("a space inside a token value", "for=192.0.2.1 x"),
    ("a bare word", "secret"),
    ("empty for", 'for=""'),
    ("non-ASCII digits", "for=\u0661.2.3.4"),
    ("a bad element even if others are good", "for=192.0.2.1, for=nope"),
    ("a bad for= even before a trusted hop", "for=nope, for=10.1.1.1"),
    ("a control character", "for=192.0.2.1\x01"),
]

# (name, X-Forwarded-For value, the client)
XFF_GOOD = [
    ("one IPv4", "203.0.113.7", "203.0.113.7"),
    ("the right-most untrusted", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
    ("trusted hops skipped", "203.0.113.7, 10.0.0.2, 10.0.0.3", "203.0.113.7"),
    ("all trusted: the left-most", "10.0.0.9,10.0.0.2", "10.0.0.9"),
    ("IPv6 bare", "2001:db8::7", "2001:db8::7"),
    ("IPv6 in brackets with a port", "[2001:db8::7]:443", "2001:db8::7"),
    ("IPv6 in brackets", "[2001:db8::7]", "2001:db8::7"),
    ("IPv4 with a port", "203.0.113.7:5555", "203.0.113.7"),
    ("IPv4-mapped", "::ffff:203.0.113.7", "203.0.113.7"),
    ("trusted IPv6 hop", "203.0.113.7, 2001:db8:f::1", "203.0.113.7"),
    ("unknown: the hop that reported it", "203.0.113.7, unknown, 10.0.0.3", "10.0.0.3"),
    ("empty items skipped", " , 203.0.113.7,,\t", "203.0.113.7"),
    ("nothing in it", "", PROXY),
]

XFF_BAD = [
    ("a name", "client.example"),
    ("obfuscated", "_hidden"),
    ("a bad port", "203.0.113.7:http"),
    ("a port too long", "203.0.113.7:123456"),
    ("an unclosed bracket", "[2001:db8::7"),
    ("IPv4 in brackets", "[203.0.113.7]"),
    ("a space inside an item", "203.0.113.7 198.51.100.1"),
    ("a bad item among good ones", "203.0.113.7, 300.1.1.1"),
    ("quoted", '"203.0.113.7"'),
]


@pytest.mark.parametrize("name, value, expected", FORWARDED_GOOD,
                         ids=[c[0] for c in FORWARDED_GOOD])
def test_forwarded_names_the_client(name, value, expected):
    assert client({"forwarded": value}) == expected


@pytest.mark.parametrize("name, value", FORWARDED_BAD, ids=[c[0] for c in FORWARDED_BAD])
def test_a_malformed_forwarded_header_is_a_400(name, value):
    with pytest.raises(HttpError) as caught:
        client({"forwarded": value})
    assert caught.value.status == 400
    assert caught.value.reply().startswith(b"HTTP/1.1 400 ")
    assert "Forwarded" in caught.value.text


@pytest.mark.parametrize("name, value, expected", XFF_GOOD, ids=[c[0] for c in XFF_GOOD])
def test_x_forwarded_for_names_the_client(name, value, expected):
    assert client({"x-forwarded-for": value}) == expected


@pytest.mark.parametrize("name, value", XFF_BAD, ids=[c[0] for c in XFF_BAD])
def test_a_malformed_x_forwarded_for_is_a_400(name, value):
    with pytest.raises(HttpError) as caught:
        client({"x-forwarded-for": value})
    assert caught.value.status == 400 and "X-Forwarded-For" in caught.value.text


@pytest.mark.parametrize("headers", [
    {"forwarded": "for=192.0.2.60"}, {"x-forwarded-for": "192.0.2.60"},
    {"forwarded": "for=nonsense"}, {"x-forwarded-for": "nonsense"}, {}])
@pytest.mark.parametrize("peer", ["192.0.2.99", "::1", "2001:db8::1", "unix:/x", ""])
def test_an_untrusted_peer_is_its_own_address_whatever_its_headers_say(headers, peer):
    assert client(headers, peer) == peer


def test_no_trusted_networks_believes_no_one():
    assert client({"forwarded": "for=192.0.2.60"}, trusted=()) == PROXY


def test_forwarded_comes_before_x_forwarded_for():
    both = {"forwarded": "for=192.0.2.60", "x-forwarded-for": "203.0.113.7"}
    assert client(both) == "192.0.2.60"
    # ... unless it names no hop at all
    assert client({"forwarded": "proto=https", "x-forwarded-for": "203.0.113.7"}) == "203.0.113.7"
    # ... and a malformed one is a 400 even with a good X-Forwarded-For
    with pytest.raises(HttpError):
        client({"forwarded": "for=x", "x-forwarded-for": "203.0.113.7"})


def test_an_ipv4_mapped_peer_is_trusted_as_its_ipv4_address():
    assert client({"x-forwarded-for": "203.0.113.7"}, peer="::ffff:127.0.0.1") == "203.0.113.7"


def test_a_spoofed_left_part_is_ignored_behind_an_untrusted_hop():
    # A client writes "X-Forwarded-For: 10.0.0.1" itself; the proxy appends the real one.
    assert client({"x-forwarded-for": "10.0.0.1, 198.51.100.9"}) == "198.51.100.9"
    assert client({"forwarded": "for=10.0.0.1, for=198.51.100.9"}) == "198.51.100.9"


@pytest.mark.parametrize("raw, expected", [
    # Several header lines: the parser joins them in order, and the walk sees one list.
    (b"X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.2\r\n",
     "203.0.113.7"),
    (b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 10.0.0.2\r\n", "203.0.113.7"),
    (b'Forwarded: for=192.0.2.1\r\nForwarded: for="[2001:db8::5]:1"\r\n', "2001:db8::5"),
    (b"Forwarded: for=192.0.2.1\r\nforwarded: for=unknown\r\n", PROXY),
])
def test_several_header_lines_are_one_list_in_order(raw, expected):
    request = RequestParser().feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + raw + b"\r\n")
    assert client(request.headers) == expected


def test_walk_directly():
    assert forwarded.walk(["192.0.2.1", None, "10.0.0.1"], PROXY, TRUSTED) == "10.0.0.1"
    assert forwarded.walk([None], "10.0.0.5", TRUSTED) == "10.0.0.5"
    assert forwarded.walk(["10.0.0.1"], PROXY, TRUSTED) == "10.0.0.1"


def test_addresses_left_of_the_client_are_not_read_but_the_form_of_all_is_checked():
    # Left of the client is what the client wrote: of the right form, it is not read ...
    assert client({"x-forwarded-for": "999.1.1.1, 203.0.113.7"}) == "203.0.113.7"
    assert client({"forwarded": "for=nope, for=203.0.113.7"}) == "203.0.113.7"
    # ... but a value that is not a list of addresses / elements at all is a 400 anywhere.
    for headers in ({"x-forwarded-for": "garbage, 203.0.113.7"},
                    {"forwarded": "for=[::1], for=203.0.113.7"}):
        with pytest.raises(HttpError):
            client(headers)


def test_a_long_list_costs_one_address_parse_per_hop_walked(monkeypatch):
    parsed = []
    real = forwarded._ip
    monkeypatch.setattr(forwarded, "_ip", lambda *a: parsed.append(a[0]) or real(*a))
    many = ", ".join(f"198.51.100.{n % 250}" for n in range(500))
    assert client({"x-forwarded-for": many + ", 203.0.113.7, 10.0.0.1"}) == "203.0.113.7"
    assert parsed == ["10.0.0.1", "203.0.113.7"]
    parsed.clear()
    many = ", ".join(f'for="[2001:db8::{n:x}]:1"' for n in range(300))
    assert client({"forwarded": many}) == "2001:db8::12b"
    assert parsed == ["2001:db8::12b"]
