"""Behind a proxy (SPEC 14), against the daemon subprocess: `trusted_proxies` with
`Forwarded` / `X-Forwarded-For`, and `proxy_protocol` (PROXY v1 and v2).

The tests connect from 127.0.0.x: 127.0.0.1 plays the trusted proxy, 127.0.0.2 a stranger.
What must hold: a stranger's forwarding headers change nothing (bans and per-IP limits still
apply to it); a trusted proxy's name the client, and that address is the one `clients`,
bans, `max_clients_per_ip` and `status_allow` see, request by request on one connection; a
trusted proxy's header that does not parse is a 400. On a `proxy_protocol` listener the
PROXY header names the client; LOCAL/UNKNOWN is the peer itself; anything else, or nothing
in time, is closed without a reply.
"""
import ipaddress
import socket
import struct
import time

import pytest

from ssed import config as configmod
from ssed.proxyconn import ProxyHeaderConn

from hostile import (SourcedStream, connect, get, parse_response, read_all, read_head,
                     read_response, request_from, stats)
from test_loop import T0, rig  # noqa: F401 (rig: the fixture)

SERVICES = "[/a]\npublish_token = t0k\n[/b]\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def clients(d, path="/a"):
    return sorted(c["address"] for c in d.ctl({"cmd": "clients", "service": path})["clients"])


def xff(address):
    return (f"X-Forwarded-For: {address}",)


def status_via(d, address, path="/a", source="127.0.0.1", header="X-Forwarded-For"):
    """The status of GET `path` sent from `source` saying it is for `address`."""
    value = address if header == "X-Forwarded-For" else f'for="{address}"'
    with connect(d.port, source) as sock:
        sock.sendall(get(path, (f"{header}: {value}",)))
        return parse_response(read_head(sock))[0]


def post(path, data, headers=()):
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Authorization: Bearer t0k",
             f"Content-Length: {len(data)}", *headers, "", ""]
    return "\r\n".join(lines).encode() + data


# -- trusted_proxies -------------------------------------------------------------------------

def test_an_untrusted_peer_cannot_change_its_address_with_forwarding_headers(daemon):
    d = daemon(SERVICES, top="trusted_proxies = 127.0.0.1\nmax_clients_per_ip = 2\n")
    spoofs = [("X-Forwarded-For: 10.9.9.9",), ('Forwarded: for="10.9.9.8"',)]
    streams = [SourcedStream(d.port, "/a", source="127.0.0.2", headers=h) for h in spoofs]
    assert [s.status for s in streams] == [200, 200]
    assert clients(d) == ["127.0.0.2", "127.0.0.2"]
    # The per-IP limit counts it as itself, whatever address it claims next.
    assert status_via(d, "10.7.7.7", source="127.0.0.2") == 429
    # A malformed header from a stranger is not even read.
    assert status_via(d, "not an address", path="/b", source="127.0.0.3") == 200
    with d.control_conn() as c:
        assert c.request("ban 127.0.0.2 60") == "ok closed=2"
    for s in streams:
        s.wait_closed(timeout=2)
    for header in ("X-Forwarded-For", "Forwarded"):
        assert status_via(d, "10.1.2.3", source="127.0.0.2", header=header) == 403
    assert status_via(d, "10.1.2.3", source="127.0.0.3") == 200     # the ban is its alone


def test_without_trusted_proxies_no_header_is_believed(daemon):
    d = daemon(SERVICES)
    s = SourcedStream(d.port, "/a", source="127.0.0.1", headers=xff("10.1.2.3"))
    assert s.status == 200 and clients(d) == ["127.0.0.1"]
    assert status_via(d, "garbage") == 200


def test_a_trusted_proxy_names_the_client_for_clients_bans_and_per_ip_limits(daemon):
    d = daemon(SERVICES, top="trusted_proxies = 127.0.0.1/32\nmax_clients_per_ip = 2\n")
    first = [SourcedStream(d.port, "/a", headers=xff("10.1.2.3")) for _ in range(2)]
    other = SourcedStream(d.port, "/a", headers=('Forwarded: for="[2001:db8::7]:4711"',))
    assert [s.status for s in first + [other]] == [200, 200, 200]
    assert clients(d) == ["10.1.2.3", "10.1.2.3", "2001:db8::7"]
    # max_clients_per_ip counts each forwarded client, not the proxy (3 streams from it now)
    assert status_via(d, "10.1.2.3") == 429
    assert status_via(d, "10.1.2.3", header="Forwarded") == 429
    more = SourcedStream(d.port, "/a", headers=xff("10.4.5.6, 10.1.2.3"))  # 10.1.2.3 is not trusted
    assert more.status == 429
    fine = SourcedStream(d.port, "/a", headers=xff("10.1.2.3, 10.4.5.6"))
    assert fine.status == 200
    with d.control_conn() as c:
        assert c.request("ban 10.1.2.3 60") == "ok closed=2"
    for s in first:
        s.wait_closed(timeout=2)
    assert status_via(d, "10.1.2.3", path="/b") == 403
    assert status_via(d, "10.1.2.3", path="/b", header="Forwarded") == 403
    # ... and not the others, nor the proxy's own requests
    assert status_via(d, "10.4.5.7", path="/b") == 200
    with connect(d.port) as sock:
        sock.sendall(get("/b"))
        assert parse_response(sock.recv(65536))[0] == 200
    ans = d.publish("/a", "still here")
    assert [e.data for e in other.wait_events(1)] == ["still here"], ans
    assert [e.data for e in fine.wait_events(1)] == ["still here"], ans
    assert clients(d) == ["10.4.5.6", "2001:db8::7"]
    assert stats(d)["refused"] == {"banned": 2, "max_clients_per_ip": 3}


def test_a_trusted_proxys_idle_connections_are_not_counted_as_one_client(daemon):
    # nginx keeps idle upstream connections open: to the connect-time per-IP limit (requests
    # still to come from one address) they would be one client with many connections.
    d = daemon(SERVICES, top="trusted_proxies = 127.0.0.1\nmax_clients_per_ip = 2\n")
    idle = [connect(d.port) for _ in range(3)]
    strangers = [connect(d.port, "127.0.0.2") for _ in range(2)]
    try:
        for sock in idle + strangers:
            sock.sendall(b"GET /a HTTP/1.1\r\n")        # a head still to come
        assert status_via(d, "10.1.2.3") == 200
        assert status_via(d, "10.1.2.3", source="127.0.0.2") == 429    # a stranger's are
    finally:
        for sock in idle + strangers:
            sock.close()


def test_each_request_on_a_proxys_kept_alive_connection_is_its_own_clients(daemon):
    d = daemon(SERVICES, top="trusted_proxies = 127.0.0.0/8\nstatus_allow = 10.0.0.5\n")
    assert d.ctl({"cmd": "ban", "ip": "10.9.9.9", "seconds": 60})["ok"]
    with connect(d.port) as sock:
        sock.sendall(post("/a", b"one", xff("10.1.2.3")))
        assert read_response(sock)[0] == 200
        sock.sendall(post("/a", b"two", ('Forwarded: for=10.1.2.4',)))
        assert read_response(sock)[0] == 200
        sock.sendall(post("/a", b"three", xff("10.9.9.9")))     # the banned one
        status, _, body = parse_response(read_all(sock))
        assert status == 403 and b"address banned" in body
    # status_allow is checked against the forwarded client, not the proxy in it
    assert status_via(d, "10.0.0.5", path="/healthz") == 200
    assert status_via(d, "10.0.0.6", path="/healthz") == 403
    with connect(d.port) as sock:       # the proxy itself is 127.0.0.1: not allowed
        sock.sendall(get("/healthz"))
        assert parse_response(read_all(sock))[0] == 403


def test_a_malformed_forwarding_header_from_a_trusted_proxy_is_a_400(daemon):
    d = daemon(SERVICES, top="trusted_proxies = 127.0.0.1\n")
    for header in ("X-Forwarded-For: nonsense", "Forwarded: for=[2001:db8::1]",
                   "Forwarded: for=192.0.2.1;for=192.0.2.2",
                   "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.300"):
        status, _, body = request_from(d.port, get("/a", (header,)))
        assert status == 400, (header, body)
        assert b"malformed " in body and header.split(":")[0].encode() in body, body
    assert stats(d)["refused"] == {"http_400": 4}
    assert clients(d) == []


# -- proxy_protocol --------------------------------------------------------------------------

def v1(src, dst="127.0.0.1", family="TCP4"):
    return f"PROXY {family} {src} {dst} 40000 443\r\n".encode()


def v2(src=None, dst="::1", command=0x21):
    """A v2 header: PROXY for `src` (IPv4 or IPv6), or LOCAL (command 0x20) with no address."""
    if src is None:
        return V2_SIGNATURE + bytes([command, 0x00]) + b"\x00\x00"
    ip = ipaddress.ip_address(src)
    dst = ipaddress.ip_address(dst if ip.version == 6 else "127.0.0.1")
    body = ip.packed + dst.packed + struct.pack("!HH", 40000, 443) + b"\x04\x00\x02ab"  # a TLV
    return (V2_SIGNATURE + bytes([command, 0x11 if ip.version == 4 else 0x21])
            + struct.pack("!H", len(body)) + body)


def proxied_stream(d, header, target="/a", split=False):
    """A stream on a proxy_protocol listener: the header, then the request."""
    s = SourcedStream.__new__(SourcedStream)
    s.sock = connect(d.port)
    if split:
        for i in range(len(header)):        # the header a byte at a time, then the request
            s.sock.sendall(header[i:i + 1])
            time.sleep(0.001)
        s.sock.sendall(get(target))
    else:
        s.sock.sendall(header + get(target))
    s._begin()
    return s


PROXIED = "proxy_protocol = true\nheader_timeout = 1\nmax_clients_per_ip = 1\n"


def test_proxy_protocol_v1_and_v2_name_the_client(daemon):
    d = daemon(SERVICES, top=PROXIED)
    streams = [proxied_stream(d, v1("10.1.2.3")),
               proxied_stream(d, v1("2001:db8::5", "2001:db8::1", "TCP6"), split=True),
               proxied_stream(d, v2("10.1.2.4")),
               proxied_stream(d, v2("2001:db8::6"), split=True),
               proxied_stream(d, v2("::ffff:10.1.2.5"))]
    assert [s.status for s in streams] == [200] * 5
    assert clients(d) == ["10.1.2.3", "10.1.2.4", "10.1.2.5", "2001:db8::5", "2001:db8::6"]
    # Per-IP limits and bans see those addresses (max_clients_per_ip = 1; all come from
    # 127.0.0.1 in fact).
    assert proxied_stream(d, v2("10.1.2.3")).status == 429
    assert d.ctl({"cmd": "ban", "ip": "2001:db8::/64", "seconds": 60})["closed"] == 2
    for s in streams[1], streams[3]:
        s.wait_closed(timeout=2)
    assert proxied_stream(d, v1("2001:db8::9", "2001:db8::1", "TCP6")).status == 403
    assert proxied_stream(d, v1("10.9.9.9"), target="/b").status == 200
    ans = d.publish("/a", "hi")
    assert [e.data for e in streams[0].wait_events(1)] == ["hi"], ans


def test_proxy_protocol_local_and_unknown_are_the_peers_own_address(daemon):
    d = daemon(SERVICES, top=PROXIED)
    # Health checks: status_allow (127.0.0.0/8 ::1) lets the proxy itself in.
    for header in (v2(command=0x20), b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ::1 ::2 1 2\r\n"):
        with connect(d.port) as sock:
            sock.sendall(header + get("/healthz"))
            status, _, body = parse_response(read_all(sock))
            assert (status, body) == (200, b"ok\n"), header
    # ... while a PROXY header naming a client makes it that client's request
    with connect(d.port) as sock:
        sock.sendall(v1("192.0.2.1") + get("/healthz"))
        assert parse_response(read_all(sock))[0] == 403
    s = proxied_stream(d, v2(command=0x20))
    assert s.status == 200 and clients(d) == ["127.0.0.1"]


def test_proxy_protocol_closes_anything_else_without_a_reply(daemon):
    d = daemon(SERVICES, top=PROXIED)
    udp = V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12)
    for junk in (get("/a"), b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
                 b"PROXY TCP4 10.1.2.3 127.0.0.1 1 2\n" + get("/a"),
                 b"PROXY TCP4 nonsense\r\n" + get("/a"), udp):
        with connect(d.port) as sock:
            sock.sendall(junk)
            assert read_all(sock, timeout=2) == b"", junk
    d.wait_log("proxy_protocol is on")
    assert stats(d)["refused"] == {"proxy_header": 5}
    assert clients(d) == []


def test_proxy_protocol_header_not_done_in_header_timeout_is_closed(daemon):
    d = daemon(SERVICES, top=PROXIED)
    started = time.monotonic()
    with connect(d.port) as silent, connect(d.port) as partial:
        partial.sendall(b"PROXY TCP4 10.1.")
        assert read_all(silent, timeout=3) == b""
        assert read_all(partial, timeout=3) == b""
    took = time.monotonic() - started
    assert 0.9 <= took < 2.5, took      # header_timeout = 1
    assert stats(d)["refused"] == {"header_timeout": 2}
    # The request head after a PROXY header shares the deadline set at accept: 408.
    with connect(d.port) as sock:
        sock.sendall(v1("10.1.2.3"))
        time.sleep(0.3)
        sock.sendall(b"GET /a HTTP/1.1\r\n")
        status, _, _ = parse_response(read_all(sock, timeout=3))
        assert status == 408
    assert time.monotonic() - started - took < 2.0


# -- the config --------------------------------------------------------------------------------

def test_the_keys_default_to_believing_no_one_and_a_bad_network_names_its_line():
    c = configmod.parse("[ssed]\n", "x.ini")
    assert c.trusted_proxies == () and c.proxy_protocol is False
    c = configmod.parse("[ssed]\ntrusted_proxies = 127.0.0.1 10.0.0.0/8 ::1\n"
                        "proxy_protocol = true\n", "x.ini")
    assert c.trusted_proxies == tuple(ipaddress.ip_network(n)
                                      for n in ("127.0.0.1/32", "10.0.0.0/8", "::1/128"))
    assert c.proxy_protocol is True
    for text in ("trusted_proxies = 10.0.0.1 nginx\n", "proxy_protocol = v2\n"):
        with pytest.raises(configmod.ConfigError) as caught:
            configmod.parse("[ssed]\n\n" + text, "x.ini")
        [error] = caught.value.errors
        assert error.startswith("x.ini:3: ") and text.split()[0] in error, error


# -- the PROXY header read in the loop: exactly the header, the rest left in the socket ------

def header_conn(r):
    """A ProxyHeaderConn on a real socketpair; (the peer's end, what `then` was given)."""
    server, peer = socket.socketpair()
    r.peers.append(peer)
    server.setblocking(False)
    peer.settimeout(5)
    handed = []
    ProxyHeaderConn(r.loop, server, "127.0.0.1", lambda *args: handed.append(args))
    return server, peer, handed


def test_the_header_is_taken_from_the_socket_exactly_and_what_follows_left_in_it(rig):
    # What the TLS handshake (or the HTTP request) is read from afterwards: not a byte lost.
    r = rig(top="header_timeout = 7")
    for header, address in ((v1("10.1.2.3"), "10.1.2.3"), (v2("2001:db8::6"), "2001:db8::6"),
                            (v2(command=0x20), "127.0.0.1")):
        for bytewise in (False, True):
            server, peer, handed = header_conn(r)
            rest = b"\x16\x03\x01 a ClientHello, or GET / HTTP/1.1\r\n"
            if bytewise:
                for i in range(len(header)):
                    assert handed == [], i
                    peer.sendall(header[i:i + 1])
                    r.turn(0.01)
                peer.sendall(rest)
            else:
                peer.sendall(header + rest)
                r.turn(0.01)
            assert handed == [(server, address, T0 + 7)]
            assert server.recv(4096) == rest
            assert server.fileno() not in {k.fd for k in r.loop.selector.get_map().values()}
            server.close()


def test_bytes_that_are_no_proxy_header_close_the_socket_unanswered_and_are_counted(rig):
    r = rig()
    server, peer, handed = header_conn(r)
    peer.sendall(b"GET / HTTP/1.1\r\n\r\n")
    r.turn(0.01)
    try:
        got = r.read_to_eof(peer)
    except ConnectionResetError:    # closed with the bytes unread: a reset, and no reply
        got = b""
    assert handed == [] and got == b""
    assert r.hub.refused["proxy_header"] == 1
    assert [level for level, text in r.logged if "not a PROXY header" in text] == ["warning"]
