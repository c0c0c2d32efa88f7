"""The PROXY protocol header (HAProxy's `send-proxy` / `send-proxy-v2`, SPEC 14): the
bytes a proxy sends first on each connection, naming the client it carries.

Sans-IO: `parse(data)` takes the bytes received so far and gives a `Header` (the client's
address, or None for a v2 LOCAL or v1 UNKNOWN health check, and the header's size), None for
"need more", or raises `ProxyError`. "Need more" promises that every byte given belongs to
the header, so a caller may consume them from the socket; on a `Header` it consumes exactly
`size` bytes and what follows (HTTP, or a TLS handshake) stays unread. Nothing here touches a
socket or a clock.

v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n` or `PROXY UNKNOWN ...\\r\\n`, 107 bytes at
most. v2: a 12-byte signature, version/command, family/protocol, a 2-byte length, then the
addresses and TLVs (skipped). Only TCP (STREAM) over IPv4/IPv6 names a client; AF_UNSPEC and
AF_UNIX streams are taken as UNKNOWN, datagrams and undefined values refused.
"""
import ipaddress

V1_PREFIX = b"PROXY "
V1_MAX = 107                # the spec's bound, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
# The spec allows 64 KiB of addresses and TLVs; HAProxy sends well under 1 KiB (addresses,
# ALPN, authority, SSL and unique-id TLVs). A bound keeps a stranger's header from buying
# 64 KiB of buffer per connection for header_timeout.
V2_MAX = V2_FIXED + 4096
MAX_HEADER = V2_MAX         # no header is longer: what a reader need ever hold

_V2_LOCAL, _V2_PROXY = 0x20, 0x21
_V2_ADDRESSES = {           # family/protocol byte -> (IP version, bytes of addresses+ports)
    0x11: (4, 12),          # TCP over IPv4
    0x21: (6, 36),          # TCP over IPv6
    0x00: (None, 0),        # UNSPEC: as v1 UNKNOWN
    0x31: (None, 216),      # a UNIX stream: no IP to name
}
_V2_REFUSED = {0x12: "UDP over IPv4", 0x22: "UDP over IPv6", 0x32: "a UNIX datagram socket"}
_V1_FAMILIES = {"TCP4": 4, "TCP6": 6}


class ProxyError(Exception):
    """Bytes that are no valid PROXY header; the connection is closed without a reply."""


class Header:
    """A whole PROXY header: the client's `address` as text (None: use the peer's own),
    its `size` in bytes, and its `version` (1 or 2)."""
    __slots__ = ("address", "size", "version")

    def __init__(self, address, size, version):
        self.address = address
        self.size = size
        self.version = version

    def __eq__(self, other):
        return isinstance(other, Header) and (self.address, self.size, self.version) == (
            other.address, other.size, other.version)

    def __repr__(self):
        return f"Header({self.address!r}, {self.size}, v{self.version})"


def parse(data):
    """`data` (bytes so far) to a Header, None (need more: all of it is header), or
    ProxyError."""
    if not data:
        return None
    if data[0] == V1_PREFIX[0]:
        return _v1(data)
    if data[0] == V2_SIGNATURE[0]:
        return _v2(data)
    raise ProxyError("not a PROXY header")


def _v1(data):
    if not data.startswith(V1_PREFIX[:len(data)]):
        raise ProxyError("not a PROXY header")
    end = data.find(b"\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyError(f"PROXY v1 line over {V1_MAX} bytes")
        return None
    if data[end - 1] != 0x0D:
        raise ProxyError("PROXY v1 line not ended by CRLF")
    line = data[:end - 1]
    if not line.isascii():
        raise ProxyError("PROXY v1 line is not ASCII")
    parts = line.decode("ascii").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return Header(None, end + 1, 1)     # whatever follows UNKNOWN is ignored
    if len(parts) != 6 or parts[1] not in _V1_FAMILIES:
        raise ProxyError("malformed PROXY v1 line")
    version = _V1_FAMILIES[parts[1]]
    source = _v1_address(parts[2], version)
    _v1_address(parts[3], version)
    for port in parts[4:]:
        if not (port.isdigit() and len(port) <= 5 and int(port) <= 65535
                and (port == "0" or port[0] != "0")):
            raise ProxyError(f"bad port {port!r} in PROXY v1 line")
    return Header(source, end + 1, 1)


def _v1_address(text, version):
    try:
        ip = (ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address)(text)
    except ValueError:
        raise ProxyError(f"{text!r} is not an IPv{version} address") from None
    if "%" in text:
        raise ProxyError(f"{text!r}: no scope id in a PROXY header")
    return _text(ip)


def _v2(data):
    if not data.startswith(V2_SIGNATURE[:len(data)]):
        raise ProxyError("not a PROXY header")
    if len(data) < V2_FIXED:
        if len(data) > 12 and data[12] not in (_V2_LOCAL, _V2_PROXY):
            raise ProxyError(_v2_command(data[12]))
        return None
    command, family = data[12], data[13]
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyError(_v2_command(command))
    size = V2_FIXED + int.from_bytes(data[14:16], "big")
    if size > V2_MAX:
        raise ProxyError(f"PROXY v2 header of {size} bytes (at most {V2_MAX})")
    if len(data) < size:
        return None
    if command == _V2_LOCAL:
        return Header(None, size, 2)    # a health check from the proxy itself
    if family in _V2_REFUSED:
        raise ProxyError(f"PROXY v2 header for {_V2_REFUSED[family]}")
    if family not in _V2_ADDRESSES:
        raise ProxyError(f"PROXY v2 header with undefined family/protocol 0x{family:02x}")
    version, length = _V2_ADDRESSES[family]
    if size - V2_FIXED < length:
        raise ProxyError(f"PROXY v2 addresses need {length} bytes, the header has "
                         f"{size - V2_FIXED}")
    if version is None:
        return Header(None, size, 2)
    raw = data[V2_FIXED:V2_FIXED + (4 if version == 4 else 16)]
    ip = ipaddress.IPv4Address(raw) if version == 4 else ipaddress.IPv6Address(raw)
    return Header(_text(ip), size, 2)


def _v2_command(byte):
    if byte >> 4 != 2:
        return f"PROXY version {byte >> 4} (only 1 and 2 exist)"
    return f"PROXY v2 command {byte & 0xF} (only LOCAL 0 and PROXY 1 exist)"


def _text(ip):
    """An address in addresses.peer_host's form: IPv4-mapped IPv6 as IPv4."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
