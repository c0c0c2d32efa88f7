"""Through real proxies (SPEC 14): nginx, HAProxy and Caddy, with the README's configs
(tests/realproxies.py), in front of the daemon.

nginx and Caddy pass the client's address in `X-Forwarded-For` to an ssed with
`trusted_proxies = 127.0.0.1/32` (they connect from 127.0.0.1); HAProxy sends a PROXY v2 header
to an ssed with `proxy_protocol = true`. The clients connect to the proxy from 127.0.0.2 and
127.0.0.3 (Linux routes all of 127/8 to lo), so the address ssed sees for them can only come
from what the proxy passed on. Through each proxy: streams, with every event passed on within
100 ms of its publish (a buffering proxy would hold it); replay with `Last-Event-ID`;
publishing with `POST`; per-IP limits and bans applied to the real client's address; and a
client's own forwarding headers changing nothing.
"""
import time

import pytest

from hostile import connect, get, parse_response, read_all, read_response, stats, wait_until
from realproxies import PROXIES, ProxiedStream, readme_config

TOKEN = "s3cret-t0ken-for-the-proxy-tests"
SERVICES = f"[/a]\npublish_token = {TOKEN}\nhistory = 50\n[/b]\n"
# keepalive: HAProxy and Caddy notice a client gone only when a write to it fails, so a
# stream's comments are what ends its upstream side (nginx ends it at once).
COMMON = "max_clients_per_ip = 2\nkeepalive = 0.5\n"
SSED_SIDE = {"nginx": "trusted_proxies = 127.0.0.1/32\n",
             "caddy": "trusted_proxies = 127.0.0.1/32\n",
             "haproxy": "proxy_protocol = true\n"}
DELAY = 0.100       # the most a proxy may add between ssed's write and the client's read


class Site:
    """The daemon and the proxy in front of it."""

    def __init__(self, daemon, proxy):
        self.d, self.proxy, self.port = daemon, proxy, proxy.port

    def stream(self, target="/a", source="127.0.0.2", headers=()):
        return ProxiedStream(self.port, target, source, headers)

    def clients(self, path="/a"):
        answer = self.d.ctl({"cmd": "clients", "service": path})
        return sorted(c["address"] for c in answer["clients"])

    def status(self, target="/b", source="127.0.0.2", headers=()):
        """The status of GET `target` through the proxy (read from the head alone)."""
        s = self.stream(target, source, headers)
        s.close()
        return s.status


@pytest.fixture(params=sorted(PROXIES))
def site(request, daemon):
    name = request.param
    proxy_class = PROXIES[name]
    d = daemon(SERVICES, top=SSED_SIDE[name] + COMMON)
    proxy = proxy_class(d.port)
    try:
        proxy.start()
        yield Site(d, proxy)
    finally:
        proxy.stop()


def post(path, data, token=TOKEN):
    head = [f"POST {path} HTTP/1.1", "Host: example.com", f"Authorization: Bearer {token}",
            "Content-Type: text/plain", f"Content-Length: {len(data)}", "", ""]
    return "\r\n".join(head).encode() + data


def timed_publish(site, stream, data):
    """Publish `data` and wait for it on `stream`: the seconds from just before the publish
    to the read that brought it (an upper bound: a read late for any reason only adds)."""
    n = len(stream.events) + 1
    started = time.monotonic()
    site.d.publish("/a", data)
    try:
        event = stream.wait_events(n, timeout=2)[-1]
    except AssertionError as exc:
        raise AssertionError(f"not passed on in 2 s: the proxy holds it ({exc})") from None
    assert event.data == data, stream.events
    return stream.arrived[n - 1] - started


def test_events_stream_through_the_proxy_without_buffering_delay(site):
    s = site.stream()
    assert s.status == 200, s.headers
    assert s.headers["content-type"] == "text/event-stream"
    assert site.clients() == ["127.0.0.2"]        # the client, not the proxy
    delays = [timed_publish(site, s, f"event {i}") for i in range(3)]
    # The first one most of all: a buffering proxy passes the head, then holds what follows.
    assert max(delays) < DELAY, delays
    big = "x" * 20000           # and one over a typical proxy buffer (4-16 KiB), whole
    assert timed_publish(site, s, big) < DELAY


def test_replay_with_last_event_id_through_the_proxy(site):
    s = site.stream()
    for i in range(3):
        site.d.publish("/a", f"e{i}")
    first, *_ = events = s.wait_events(3)
    assert [e.data for e in events] == ["e0", "e1", "e2"] and first.id
    s.close()
    site.d.publish("/a", "e3")          # while no one listens
    again = site.stream(headers=(f"Last-Event-ID: {first.id}",))
    assert [e.data for e in again.wait_events(3)] == ["e1", "e2", "e3"]
    site.d.publish("/a", "e4")          # then live, on the same stream
    assert again.wait_events(4)[-1].data == "e4"


def test_post_publishing_through_the_proxy(site):
    s = site.stream()
    with connect(site.port, "127.0.0.3") as sock:
        for word in (b"one", b"two"):       # two on one kept-alive client connection
            sock.sendall(post("/a", word))
            status, body = read_response(sock)
            assert status == 200, body
        sock.sendall(post("/a", b"three", token="wrong-token-of-the-same-size-xxxxx"))
        status, body = read_response(sock)
        assert status == 401, body
    assert [e.data for e in s.wait_events(2)] == ["one", "two"]


def test_per_ip_limits_and_bans_apply_to_the_real_client(site):
    # max_clients_per_ip = 2: per client behind the proxy, not for the proxy as a whole
    mine = [site.stream(source="127.0.0.2") for _ in range(2)]
    theirs = [site.stream(source="127.0.0.3") for _ in range(2)]
    assert [s.status for s in mine + theirs] == [200] * 4
    assert site.clients() == ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"]
    assert site.status("/a", "127.0.0.2") == 429
    assert site.status("/a", "127.0.0.4") == 200
    with site.d.control_conn() as c:
        assert c.request("ban 127.0.0.2 60") == "ok closed=2"
    for s in mine:              # their streams end, through the proxy
        s.wait_ended()
    assert site.status("/b", "127.0.0.2") == 403
    assert site.status("/b", "127.0.0.4") == 200       # the ban is 127.0.0.2's alone
    site.d.publish("/a", "still here")
    for s in theirs:
        assert s.wait_events(1)[0].data == "still here"
    # A client that leaves is gone from ssed too (the proxy closes its upstream connection),
    # or per-IP limits would fill with ghosts: nginx at once, HAProxy and Caddy after a few
    # keepalive comments failed to reach it (measured: 2 and 4).
    wait_until(lambda: site.clients() == ["127.0.0.3", "127.0.0.3"], timeout=8,
               what=f"only 127.0.0.3's streams left (not {site.clients()})")
    refused = stats(site.d)["refused"]
    assert refused == {"max_clients_per_ip": 1, "banned": 1}, refused


SPOOFS = [("X-Forwarded-For: 10.9.9.9",), ('Forwarded: for="10.9.9.8"',),
          ("X-Forwarded-For: 127.0.0.1", "Forwarded: for=127.0.0.1")]


def test_a_clients_own_forwarding_headers_change_nothing(site):
    streams = [site.stream(source="127.0.0.2", headers=h) for h in SPOOFS[:2]]
    assert [s.status for s in streams] == [200, 200]
    assert site.clients() == ["127.0.0.2", "127.0.0.2"]
    # ... so the per-IP limit still counts it as itself, whatever it claims
    assert site.status("/a", "127.0.0.2", SPOOFS[2]) == 429
    with site.d.control_conn() as c:
        assert c.request("ban 127.0.0.2 60") == "ok closed=2"
    for h in SPOOFS:
        assert site.status("/b", "127.0.0.2", h) == 403


def test_clients_going_direct_to_ssed_are_not_believed(site):
    """The proxy is trusted by its address (127.0.0.1) or by the listener (proxy_protocol):
    a client from 127.0.0.2 reaching ssed itself names no one but itself."""
    d = site.d
    with connect(d.port, "127.0.0.2") as sock:
        sock.sendall(get("/b", SPOOFS[0]))
        got = read_all(sock, timeout=3) if site.proxy.binary == "haproxy" else sock.recv(65536)
    if site.proxy.binary == "haproxy":      # no PROXY header: closed, unanswered
        assert got == b""
        return
    assert parse_response(got)[0] == 200
    direct = ProxiedStream(d.port, "/a", "127.0.0.2", SPOOFS[0])
    assert direct.status == 200 and site.clients() == ["127.0.0.2"]


def test_the_readme_configs_say_what_the_tests_rely_on():
    """The settings each README config needs for streams (the tests above run these very
    blocks; this names what each line is there for)."""
    nginx = readme_config("nginx")
    for line in ("proxy_buffering off;", "proxy_http_version 1.1;",
                 'proxy_set_header Connection "";', 'proxy_set_header Forwarded "";',
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                 "proxy_read_timeout 24h;"):
        assert line in nginx, line
    caddy = readme_config("caddy")
    assert "flush_interval -1" in caddy and "header_up -Forwarded" in caddy
    haproxy = readme_config("haproxy")
    assert "send-proxy-v2" in haproxy and "timeout tunnel 1h" in haproxy
