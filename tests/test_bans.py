"""Bans against the daemon subprocess (SPEC section 5): `ban ADDR SECONDS` closes the
address's streams at once and refuses it with 403 until the ban ends; CIDR ranges, IPv6 and
IPv4-mapped IPv6 addresses; `unban`, `bans`; a bad address is a clear error.
"""
import time

import pytest

from conftest import Daemon
from hostile import SourcedStream, connect, parse_response, read_all, stats, status_of

SERVICES = "[/a]\n[/b]\n"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("bans"), SERVICES)
    yield d
    d.stop()


def status_from(d, source, host="127.0.0.1", port=None):
    return status_of(port or d.port, "/a", source, host)


def test_ban_closes_that_addresses_streams_at_once_refuses_it_and_leaves_others_alone(daemon):
    d = daemon(SERVICES)
    theirs = [SourcedStream(d.port, "/a", source="127.0.0.2"),
              SourcedStream(d.port, "/?service=/a&service=/b", source="127.0.0.2")]
    mine = SourcedStream(d.port, "/a", source="127.0.0.1")
    half = connect(d.port, "127.0.0.2")
    half.sendall(b"GET /a HTTP/1.1\r\n")        # a request still arriving when the ban comes
    with d.control_conn() as c:
        start = time.monotonic()
        assert c.request("ban 127.0.0.2 60") == "ok closed=2"
        for s in theirs:
            s.wait_closed(timeout=2)
        closed_in = time.monotonic() - start
    half.sendall(b"Host: x\r\n\r\n")
    status, _, body = parse_response(read_all(half))
    assert status == 403 and b"address banned" in body, body
    assert status_from(d, "127.0.0.2") == 403
    ans = d.publish("/a", "for the others")
    assert [e.data for e in mine.wait_events(1)] == ["for the others"], ans
    assert status_from(d, "127.0.0.1") == 200
    s = stats(d)
    assert s["dropped"] == {"banned": 2}
    assert s["refused"] == {"banned": 2}
    assert closed_in < 1.0, closed_in


def test_a_banned_cidr_range_refuses_every_address_in_it_and_unban_lets_it_back(daemon):
    d = daemon(SERVICES)
    inside = SourcedStream(d.port, "/a", source="127.0.0.9")
    outside = SourcedStream(d.port, "/a", source="127.0.1.1")
    with d.control_conn() as c:
        assert c.request({"cmd": "ban", "ip": "127.0.0.0/24", "seconds": 120}) == {
            "ok": True, "closed": 1}
        inside.wait_closed(timeout=2)
        assert [status_from(d, f"127.0.0.{n}") for n in (1, 2, 254)] == [403, 403, 403]
        assert status_from(d, "127.0.1.2") == 200
        [ban] = c.request({"cmd": "bans"})["bans"]
        assert ban["ip"] == "127.0.0.0/24"
        assert time.time() + 110 < ban["until"] <= time.time() + 120
        assert c.request({"cmd": "unban", "ip": "127.0.0.0/24"}) == {
            "ok": True, "closed": 0, "removed": 1}
        assert c.request({"cmd": "bans"})["bans"] == []
        assert status_from(d, "127.0.0.1") == 200
        assert c.request("unban 127.0.0.0/24") == "ok closed=0 removed=0"
    ans = d.publish("/a", "still here")
    assert [e.data for e in outside.wait_events(1)] == ["still here"], ans


def test_bans_lists_every_ban_with_when_it_ends(daemon):
    d = daemon(SERVICES)
    with d.control_conn() as c:
        now = time.time()
        for ip, seconds in (("10.1.2.3", 30), ("192.168.0.0/16", 3600), ("2001:db8::/32", 0.5)):
            assert c.request({"cmd": "ban", "ip": ip, "seconds": seconds})["ok"]
        bans = {b["ip"]: b["until"] for b in c.request({"cmd": "bans"})["bans"]}
    assert set(bans) == {"10.1.2.3/32", "192.168.0.0/16", "2001:db8::/32"}
    for ip, seconds in (("10.1.2.3/32", 30), ("192.168.0.0/16", 3600), ("2001:db8::/32", 0.5)):
        assert now + seconds - 1 < bans[ip] < now + seconds + 1, (ip, bans[ip])


def test_ban_of_an_ipv6_address_closes_and_refuses_it_and_leaves_ipv4_alone(daemon):
    d = daemon(SERVICES, listen="127.0.0.1:0 [::1]:0")
    v6 = d.ports()["::1"]
    six = SourcedStream(v6, "/a", source=None, host="::1")
    four = SourcedStream(d.port, "/a")
    assert (six.status, four.status) == (200, 200)
    assert d.ctl({"cmd": "clients", "service": "/a"})["clients"][0]["address"] in ("::1",
                                                                                    "127.0.0.1")
    assert d.ctl("ban ::1 60") == "ok closed=1"
    six.wait_closed(timeout=2)
    assert status_from(d, None, host="::1", port=v6) == 403
    assert status_from(d, "127.0.0.1", port=d.port) == 200
    ans = d.publish("/a", "v4 still served")
    assert [e.data for e in four.wait_events(1)] == ["v4 still served"], ans
    assert d.ctl("unban ::1/128") == "ok closed=0 removed=1"
    assert status_from(d, None, host="::1", port=v6) == 200


@pytest.mark.parametrize("mapped, unban", [
    ("::ffff:127.0.0.2", "127.0.0.2"),
    ("::ffff:127.0.0.0/120", "127.0.0.0/24"),
], ids=["address", "range"])
def test_ban_of_an_ipv4_mapped_ipv6_address_bans_the_ipv4_address(daemon, mapped, unban):
    d = daemon(SERVICES)
    theirs = SourcedStream(d.port, "/a", source="127.0.0.2")
    mine = SourcedStream(d.port, "/a", source="127.0.1.1")
    assert d.ctl({"cmd": "ban", "ip": mapped, "seconds": 60}) == {"ok": True, "closed": 1}
    theirs.wait_closed(timeout=2)
    assert status_from(d, "127.0.0.2") == 403
    assert status_from(d, "127.0.1.1") == 200
    [ban] = d.ctl({"cmd": "bans"})["bans"]
    assert ban["ip"] == (unban if "/" in unban else unban + "/32")  # as the IPv4 it is
    assert d.ctl({"cmd": "unban", "ip": unban})["removed"] == 1
    assert status_from(d, "127.0.0.2") == 200
    ans = d.publish("/a", "untouched")
    assert [e.data for e in mine.wait_events(1)] == ["untouched"], ans


@pytest.mark.parametrize("request_, error", [
    ("ban nonsense 60", "error: not an IP address or CIDR range: 'nonsense'"),
    ("ban 300.1.2.3", "error: not an IP address or CIDR range: '300.1.2.3'"),
    ("ban 127.0.0.1/33", "error: not an IP address or CIDR range: '127.0.0.1/33'"),
    ("ban 127.0.0.1 soon", "error: not a number: 'soon'"),
    ("ban 127.0.0.1 -5", "error: seconds must be a finite number > 0"),
    ("ban", "error: ban: missing ip"),
    ("unban ::g", "error: not an IP address or CIDR range: '::g'"),
    ({"cmd": "ban", "ip": 2130706433}, "ban: ip must be a string"),
    ({"cmd": "ban", "ip": "127.0.0.1", "seconds": "60"}, "ban: seconds must be a number"),
    ({"cmd": "ban", "ip": "127.0.0.1", "seconds": float("nan")},
     "seconds must be a finite number > 0"),
])
def test_a_bad_address_or_duration_is_a_clear_error_and_bans_nothing(shared, request_, error):
    d = shared
    ans = d.ctl(request_)
    if isinstance(ans, dict):
        assert ans == {"ok": False, "error": error}
    else:
        assert ans == error
    assert d.ctl({"cmd": "bans"})["bans"] == []
    assert status_from(d, "127.0.0.1") == 200
