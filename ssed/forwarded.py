"""Whom a request behind trusted proxies is from (SPEC 14): the `Forwarded` (RFC 7239) and
`X-Forwarded-For` header values, the peer's address and the `trusted_proxies` networks in,
the client's address out, or HttpError(400) for a trusted peer's header that does not parse.

Only a trusted peer's headers are read: anyone else could write any address in them. The
hops a header lists are walked from the right (the one nearest us): the first address that
is not a trusted proxy is the client; if every one is trusted, the left-most. A node that
names no address (`unknown`, an obfuscated `_name`, an element without `for=`) ends the walk
at the hop that reported it, the last address we can vouch for.

A whole value's form is checked in one regex match (a 400 if bad), but its addresses are
read from the right only as far as the client: what lies further left is whatever the
client wrote, and reading it all would let a client make each request cost hundreds of
address parses.

Pure: text in, text out. Addresses come out in the form `addresses.peer_host` gives a
socket's (IPv4-mapped IPv6 as IPv4), so that bans and limits see one client as one address.
"""
import ipaddress
import re

from .addresses import in_networks
from .http1 import HttpError

_OWS = r"[ \t]*+"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]++"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*+"'
_PAIR = rf"{_TOKEN}=(?:{_TOKEN}|{_QUOTED})"
_ELEMENT = rf"{_OWS}(?:{_PAIR})?{_OWS}(?:;{_OWS}(?:{_PAIR})?{_OWS})*+"
# The whole value's form, checked in one match (possessive: linear, whatever its length):
# elements of `;`-separated pairs, separated by `,`, any of them empty (RFC 7239 section 4).
_FORWARDED = re.compile(rf"{_ELEMENT}(?:,{_ELEMENT})*+")
# Once the form is known good: each pair, and each `,` between elements, in order.
_PAIRS = re.compile(rf"({_TOKEN})=({_TOKEN}|{_QUOTED})|(,)")
_QUOTED_PAIR = re.compile(r"\\(.)")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+\Z")
_PORT = re.compile(r"(?:[0-9]{1,5}|_[A-Za-z0-9._-]+)\Z")     # a port, or an obfuscated one
_XFF_PORT = re.compile(r"[0-9]{1,5}\Z")
_XFF_ITEM = (r"(?:(?i:unknown)|\[[0-9A-Fa-f:.]++(?:%[\w.-]++)?\](?::[0-9]{1,5})?"
             r"|[0-9A-Fa-f:.]++(?:%[\w.-]++)?)")
# The form of a whole X-Forwarded-For value: items of address characters, empty ones allowed.
_XFF = re.compile(rf"{_OWS}(?:{_XFF_ITEM})?{_OWS}(?:,{_OWS}(?:{_XFF_ITEM})?{_OWS})*+")


SKIP = object()      # an empty list item: no hop at all


def client(headers, peer, trusted):
    """The address of the client a request from `peer` was made for. `headers`: the
    request's (lowercase names, repeated lines joined by ", ", in order); `trusted`: the
    networks of `trusted_proxies`. `Forwarded` if it has any `for=`, else `X-Forwarded-For`;
    neither: `peer` itself."""
    if not in_networks(peer, trusted):
        return peer
    value = headers.get("forwarded")
    if value is not None:
        hops = forwarded_for(value)
        if hops:
            return walk(hops, peer, trusted, _forwarded_node)
    value = headers.get("x-forwarded-for")
    if value is not None:
        hops = x_forwarded_for(value)
        if hops:
            return walk(hops, peer, trusted, _xff_item)
    return peer


def walk(hops, peer, trusted, read=None):
    """The client among `hops` (left to right), `peer` being the trusted hop that sent
    them. `read(hop)` turns a hop into an address, None for a node that names none, or SKIP
    for an empty list item (it may raise HttpError); without `read`, the hops are addresses
    or None already."""
    reporter = peer
    for hop in reversed(hops):
        node = hop if read is None or hop is None else read(hop)
        if node is SKIP:
            continue
        if node is None:
            return reporter
        if not in_networks(node, trusted):
            return node
        reporter = node
    return reporter


def forwarded_for(value):
    """The `for=` value of each element of a `Forwarded` value as written, left to right
    (None where an element has none); [] if no element has one. HttpError(400) if the
    value's form is bad (RFC 7239 section 4; parameter names in any case, each at most once
    an element)."""
    if not _FORWARDED.fullmatch(value):
        raise _bad("Forwarded", "not a list of name=value elements")
    hops, names, node, named = [], set(), None, False
    for name, text, comma in _PAIRS.findall(value):
        if comma:
            if names:
                hops.append(node)
            names, node = set(), None
            continue
        name = name.lower()
        if name in names:
            raise _bad("Forwarded", f"{name}= twice in one element")
        names.add(name)
        if name == "for":
            node, named = text, True
    if names:
        hops.append(node)
    return hops if named else []


def _forwarded_node(text):
    return _node(_unquote(text))


def _unquote(text):
    if text.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", text[1:-1])
    return text


def _node(text):
    """A `for=` value (unquoted): the address, or None for `unknown` or an obfuscated name;
    the port, if any, is checked and dropped."""
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket:
            raise _bad("Forwarded", f"no ] in {text!r}")
        address = _ip(host, 6, "Forwarded")
    else:
        host, colon, port = text.partition(":")
        port = colon + port
        address = (None if host.lower() == "unknown" or _OBFUSCATED.match(host)
                   else _ip(host, 4, "Forwarded"))
    if port and not (port[0] == ":" and _PORT.match(port, 1)):
        raise _bad("Forwarded", f"bad port in {text!r}")
    return address


def x_forwarded_for(value):
    """The items of an `X-Forwarded-For` value (all its lines, joined), left to right, as
    written (empty ones too: `walk` skips them). HttpError(400) if one is not of an
    address's characters."""
    if not _XFF.fullmatch(value):
        raise _bad("X-Forwarded-For", "not a list of addresses")
    return value.split(",")


def _xff_item(item):
    """An X-Forwarded-For item: an address, an IPv4 address with a port, an IPv6 address
    in brackets with or without a port, or `unknown` (None). HttpError(400) otherwise."""
    item = item.strip(" \t")
    if not item:
        return SKIP
    if item.lower() == "unknown":
        return None
    if item.startswith("["):
        host, bracket, port = item[1:].partition("]")
        if not bracket or port and not (port[0] == ":" and _XFF_PORT.match(port, 1)):
            raise _bad("X-Forwarded-For", f"bad item {item!r}")
        return _ip(host, 6, "X-Forwarded-For")
    if item.count(":") == 1:
        host, _, port = item.partition(":")
        if not _XFF_PORT.match(port):
            raise _bad("X-Forwarded-For", f"bad port in {item!r}")
        return _ip(host, 4, "X-Forwarded-For")
    return _ip(item, 6 if ":" in item else 4, "X-Forwarded-For")


def _ip(text, version, header):
    """`text` as an address of `version`, in peer_host's form."""
    try:
        if not text.isascii():
            raise ValueError
        ip = (ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address)(text)
    except ValueError:
        raise _bad(header, f"{text!r} is not an IPv{version} address") from None
    if version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _bad(header, why):
    return HttpError(400, f"malformed {header} header: {why}")
