"""addresses: the peer's text, matching it against networks, and ban arguments, as tables.

One rule is under test everywhere: an IPv4 client seen through an IPv6 socket
(`::ffff:a.b.c.d`) is its IPv4 address; a scope id names a link, not an address.
"""
import ipaddress
import time

import pytest

from ssed import config as configmod
from ssed.addresses import in_networks, ip_of, network_of, peer_host
from ssed.control import handle_line
from ssed.hub import Hub

ip = ipaddress.ip_address


def nets(*texts):
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


@pytest.mark.parametrize("addr, host", [
    (("1.2.3.4", 5000), "1.2.3.4"),
    (("::ffff:1.2.3.4", 5000, 0, 0), "1.2.3.4"),             # IPv4 through a dual-stack socket
    (("::1", 5000, 0, 0), "::1"),
    (("2001:db8::1", 5000, 0, 0), "2001:db8::1"),
    (("fe80::1%eth0", 5000, 0, 2), "fe80::1%eth0"),           # the scope id stays in the text
    (("2001:db8::ffff:1.2.3.4", 5000, 0, 0), "2001:db8::ffff:1.2.3.4"),   # not the mapped prefix
    (("::ffff:7f00:1", 5000, 0, 0), "::ffff:7f00:1"),         # (kernels write mapped dotted)
    ("/run/ssed.sock", "/run/ssed.sock"),                     # AF_UNIX: the path as it is
    ("", ""),
])
def test_peer_host_gives_the_ip_as_text_and_mapped_ipv6_as_ipv4(addr, host):
    assert peer_host(addr) == host


@pytest.mark.parametrize("text, expected", [
    ("1.2.3.4", ip("1.2.3.4")),
    ("::1", ip("::1")),
    ("::ffff:1.2.3.4", ip("1.2.3.4")),
    ("::ffff:7f00:1", ip("127.0.0.1")),                       # mapped, in either spelling
    ("::ffff:0:1.2.3.4", ip("::ffff:0:102:304")),             # translated, not mapped: IPv6
    ("fe80::1%eth0", ip("fe80::1")),                          # scope id dropped
    ("fe80::1%2", ip("fe80::1")),
    ("", None), ("unix:/x", None), ("not an address", None), ("1.2.3.4.5", None),
    ("01.2.3.4", None), (" 1.2.3.4", None), ("1.2.3.4/32", None), ("%eth0", None),
])
def test_ip_of_parses_drops_the_scope_and_maps_to_ipv4_or_gives_none(text, expected):
    assert ip_of(text) == expected
    assert ip_of(text) is None or ip_of(text).version == expected.version


@pytest.mark.parametrize("networks, inside, outside", [
    (nets("1.2.3.4"), ["1.2.3.4", "::ffff:1.2.3.4"], ["1.2.3.5", "::1", "2001:db8::1"]),
    (nets("10.0.0.0/8"), ["10.0.0.1", "10.255.255.255", "::ffff:10.1.1.1"],
     ["11.0.0.0", "9.255.255.255", "::ffff:11.0.0.1"]),
    (nets("2001:db8::/32"), ["2001:db8::1", "2001:db8:ffff::1"], ["2001:db9::1", "1.2.3.4"]),
    (nets("fe80::/10"), ["fe80::1%eth0", "fe80::abcd"], ["fec0::1"]),
    (nets("::1"), ["::1"], ["127.0.0.1", "::2"]),
    # status_allow's default: either loopback, IPv4 also through an IPv6 socket
    (nets("127.0.0.0/8", "::1"), ["127.0.0.1", "127.9.9.9", "::ffff:127.0.0.1", "::1"],
     ["128.0.0.1", "::2", "::ffff:128.0.0.1"]),
    # an IPv4 client is matched as IPv4 only, never by an IPv6 range around ::ffff:0:0/96
    (nets("::/0"), ["::1", "2001:db8::1"], ["::ffff:1.2.3.4", "1.2.3.4"]),
    (nets("0.0.0.0/0"), ["1.2.3.4", "::ffff:1.2.3.4"], ["::1"]),
    ((), [], ["1.2.3.4", "::1"]),
])
def test_in_networks(networks, inside, outside):
    for address in inside:
        assert in_networks(address, networks), address
    for address in outside + ["", "not an address", "unix:/x", "1.2.3.4.5"]:
        assert not in_networks(address, networks), address


@pytest.mark.parametrize("addr", [("::ffff:10.1.2.3", 1, 0, 0), ("10.1.2.3", 1),
                                  ("fe80::1%eth0", 1, 0, 2), ("::1", 1, 0, 0)])
def test_a_peer_matches_the_same_networks_before_and_after_peer_host(addr):
    networks = nets("10.0.0.0/8", "fe80::/10", "::1")
    assert in_networks(peer_host(addr), networks) == in_networks(addr[0], networks) is True


@pytest.mark.parametrize("text, network", [
    ("1.2.3.4", "1.2.3.4/32"),
    ("10.1.2.3/8", "10.0.0.0/8"),                   # host bits allowed
    ("2001:db8::1/32", "2001:db8::/32"),
    ("::1", "::1/128"),
    ("::ffff:1.2.3.4", "1.2.3.4/32"),               # mapped: the IPv4 it maps
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
    ("::ffff:1.2.3.4/120", "1.2.3.0/24"),
    ("::ffff:0:0/96", "0.0.0.0/0"),
    ("::ffff:0:0/95", "::fffe:0:0/95"),             # wider than the mapped range: IPv6
    ("::/0", "::/0"),
    ("fe80::1%eth0", "fe80::1%eth0/128"),
])
def test_network_of_a_ban_argument(text, network):
    assert str(network_of(text)) == network


@pytest.mark.parametrize("text", ["not-an-ip", "", " 1.2.3.4", "1.2.3.4/33", "10.0.0.0/8/8",
                                  "1.2.3.4.5", "fe80::/10%eth0", "::ffff:1.2.3.4/129"])
def test_network_of_bad_text_raises_valueerror_naming_it(text):
    with pytest.raises(ValueError) as caught:
        network_of(text)
    assert str(caught.value) == f"not an IP address or CIDR range: {text!r}"


def hub():
    config = configmod.parse("[ssed]\nlisten = 127.0.0.1:0\n[/s]\nsource = none\n", "t.ini")
    log = lambda level, text: None     # noqa: E731
    log.debug = False
    return Hub(config, log, now=time.time())


@pytest.mark.parametrize("line, answer", [
    ("ban nonsense", b"error: not an IP address or CIDR range: 'nonsense'\n"),
    ('{"cmd": "unban", "ip": "10.0.0.0/8/8"}',
     b'{"ok":false,"error":"not an IP address or CIDR range: \'10.0.0.0/8/8\'"}\n'),
])
def test_control_answers_a_bad_ban_argument_in_these_words(line, answer):
    assert handle_line(line, hub(), None)[0] == answer


def test_control_bans_a_mapped_range_as_ipv4_and_the_hub_then_refuses_it():
    h = hub()
    assert handle_line("ban ::ffff:10.0.0.0/104 60", h, None)[0] == b"ok closed=0\n"
    assert [str(n) for n in h.bans] == ["10.0.0.0/8"]
    assert h.banned("10.1.2.3") and h.banned("::ffff:10.1.2.3") and not h.banned("11.0.0.1")
