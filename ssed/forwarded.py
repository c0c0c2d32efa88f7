"""Whom a request behind trusted proxies is from (SPEC 14): the `Forwarded` (RFC 7239) and
`X-Forwarded-For` header values, the peer's address and the `trusted_proxies` networks in,
the client's address out, or HttpError(400) for a trusted peer's header that does not parse.

Only a trusted peer's headers are read: anyone else could write any address in them. The
hops a header lists are walked from the right (the one nearest us): the first address that
is not a trusted proxy is the client; if every one is trusted, the left-most. A node that
names no address (`unknown`, an obfuscated `_name`, an element without `for=`) ends the walk
at the hop that reported it, the last address we can vouch for.

Pure: text in, text out. Addresses come out in the form `addresses.peer_host` gives a
socket's (IPv4-mapped IPv6 as IPv4), so that bans and limits see one client as one address.
"""
import ipaddress
import re

from .addresses import in_networks
from .http1 import HttpError

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
# One `name=value` of an element, with the whitespace senders put around `;` and `,`.
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_SPACE = re.compile(r"[ \t]*")
_QUOTED_PAIR = re.compile(r"\\(.)")
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+\Z")
_PORT = re.compile(r"(?:[0-9]{1,5}|_[A-Za-z0-9._-]+)\Z")     # a port, or an obfuscated one
_XFF_PORT = re.compile(r"[0-9]{1,5}\Z")


def client(headers, peer, trusted):
    """The address of the client a request from `peer` was made for. `headers`: the
    request's (lowercase names, repeated lines joined by ", ", in order); `trusted`: the
    networks of `trusted_proxies`. `Forwarded` if it names any hop, else `X-Forwarded-For`;
    neither: `peer` itself."""
    if not in_networks(peer, trusted):
        return peer
    hops = None
    value = headers.get("forwarded")
    if value is not None:
        hops = forwarded_for(value)
    if not hops:
        value = headers.get("x-forwarded-for")
        if value is not None:
            hops = x_forwarded_for(value)
    return walk(hops, peer, trusted) if hops else peer


def walk(hops, peer, trusted):
    """The client among `hops` (addresses, None for a node that names none, left to right),
    `peer` being the trusted hop that sent them."""
    reporter = peer
    for node in reversed(hops):
        if node is None:
            return reporter
        if not in_networks(node, trusted):
            return node
        reporter = node
    return reporter


def forwarded_for(value):
    """The `for=` node of each element of a `Forwarded` value, left to right (None: unknown,
    obfuscated or absent); [] if no element has a `for=`. HttpError(400) if it does not
    parse: RFC 7239 section 4, parameter names in any case, each at most once an element."""
    hops, element, pos, end = [], {}, 0, len(value)
    while True:
        m = _PAIR.match(value, pos)
        if m is not None:
            name = m[1].lower()
            if name in element:
                raise _bad("Forwarded", f"{name}= twice in one element")
            element[name] = m[2]
            pos = m.end()
        else:
            pos = _SPACE.match(value, pos).end()    # an empty pair or element
        if pos == end or value[pos] == ",":
            if element:
                hops.append(element.get("for"))
            element = {}
            if pos == end:
                break
        elif value[pos] != ";":
            raise _bad("Forwarded", f"unexpected {value[pos]!r} at {pos}")
        pos += 1
    if all(node is None for node in hops):
        return []       # no for= at all: X-Forwarded-For may say it
    return [None if node is None else _node(_unquote(node)) for node in hops]


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
    """The addresses of an `X-Forwarded-For` value (all its lines, joined), left to right;
    None for `unknown`; empty items skipped. Each is an address, an IPv4 address with a
    port, or an IPv6 address in brackets with or without a port. HttpError(400) otherwise."""
    hops = []
    for item in value.split(","):
        item = item.strip(" \t")
        if not item:
            continue
        if item.lower() == "unknown":
            hops.append(None)
        elif item.startswith("["):
            host, bracket, port = item[1:].partition("]")
            if not bracket or port and not (port[0] == ":" and _XFF_PORT.match(port, 1)):
                raise _bad("X-Forwarded-For", f"bad item {item!r}")
            hops.append(_ip(host, 6, "X-Forwarded-For"))
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
            if not _XFF_PORT.match(port):
                raise _bad("X-Forwarded-For", f"bad port in {item!r}")
            hops.append(_ip(host, 4, "X-Forwarded-For"))
        else:
            hops.append(_ip(item, 6 if ":" in item else 4, "X-Forwarded-For"))
    return hops


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
