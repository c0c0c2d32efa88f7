"""Peer addresses as text, and matching them against networks (bans, `status_allow`).

One rule everywhere: an IPv4 client reached through an IPv6 socket (`::ffff:a.b.c.d`) is the
IPv4 address it maps, as nginx treats it, so that limits, bans and `status_allow` see one
client as one address whichever listener it came through. Pure: text in, values out.
"""
import ipaddress

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def peer_host(addr):
    """The peer's IP as text from a socket's peer address (a tuple, or text for AF_UNIX);
    IPv4-mapped IPv6 as plain IPv4. A scope id stays (`fe80::1%eth0`): it names a link."""
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def ip_of(text):
    """An address's text as an ip_address, None when it is none (empty, `unix:...`); the scope
    id is dropped (networks have none) and IPv4-mapped IPv6 is its IPv4 address."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(text, networks):
    """Whether the address `text` is in any of `networks` (ip_networks); text that is no
    address is in none."""
    ip = ip_of(text)
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def network_of(text):
    """An address or CIDR range to ban (host bits allowed); an IPv4-mapped range is the IPv4
    range it maps, since clients are matched by their IPv4 address. ValueError otherwise."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or CIDR range: {text!r}") from None
    if network.version == 6 and network.subnet_of(_MAPPED):
        network = ipaddress.ip_network(
            (network.network_address.ipv4_mapped, network.prefixlen - 96))
    return network
