"""Native TLS (SPEC 14): `tls_cert` / `tls_key`, `http://` listeners, the handshake in the
loop, ssl's same-bytes retry on partial writes, reload of the pair, and the hostile set.

A test CA and two server certificates (for localhost and 127.0.0.1) are made with the
openssl CLI at test time. Clients: Python's ssl, curl (--cacert) and headless Chromium, which
trusts the CA through an NSS database of its own (certutil, Debian's libnss3-tools). Without
openssl, curl, certutil or Chromium the tests that need them skip, except under CI=true where
they fail (.ci/run installs them).
"""
import errno
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, TIMEOUT, StreamClient, env
from hostile import connect, get, read_all, stats, wait_until
from ssed import config, outbox, reasons, tls, tlsconns, values

EVENT = "x" * 8192


def _tool(name):
    path = shutil.which(name)
    if path is None:
        why = f"the {name} CLI is not installed (.ci/run installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def _run(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA (ca.pem) and two server pairs signed by it, one.pem/one.key and
    two.pem/two.key (CN "ssed one" / "ssed two"), for localhost and 127.0.0.1."""
    openssl = _tool("openssl")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _run(openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=ssed test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "leaf.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                                "keyUsage=critical,digitalSignature\n")
    for name in ("one", "two"):
        _run(openssl, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN=ssed {name}", cwd=d)
        _run(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", f"{name}.pem",
             cwd=d)
    return d


def top(pki, name="one", extra=""):
    return f"tls_cert = {pki / name}.pem\ntls_key = {pki / name}.key\nretry = 0\n{extra}"


def client_context(pki, **kw):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class TlsStream(StreamClient):
    """A StreamClient over TLS (verified against the test CA)."""

    def __init__(self, pki, port, target, rcvbuf=None, headers=(), **ctx):
        raw = connect(port, rcvbuf=rcvbuf)
        self.sock = client_context(pki, **ctx).wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall(get(target, headers))
        self._begin()


def tls_request(pki, port, raw):
    with connect(port) as sock, client_context(pki).wrap_socket(
            sock, server_hostname="localhost") as s:
        s.sendall(raw)
        return read_all(s)


def subject(pki, port):
    with connect(port) as sock, client_context(pki).wrap_socket(
            sock, server_hostname="localhost") as s:
        return dict(x[0] for x in s.getpeercert()["subject"])["commonName"]


# -- the config ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, pairs, schemes", [
    ("127.0.0.1:0", (("127.0.0.1", 0),), ("",)),
    ("http://127.0.0.1:8080 [::1]:8443", (("127.0.0.1", 8080), ("::1", 8443)), ("http", "")),
    ("HTTPS://[::1]:443 http://localhost:80/", (("::1", 443), ("localhost", 80)),
     ("https", "http")),
])
def test_listen_entries_keep_the_scheme_they_were_written_with(text, pairs, schemes):
    listen = values.listen(text)
    assert listen == values.Listen(pairs, schemes) and listen.schemes == schemes
    assert tuple(listen) == pairs       # (host, port) pairs, as ever
    if "http" not in schemes and "https" not in schemes:
        assert listen == pairs          # a bare entry compares equal to its pair
    assert listen != values.Listen(pairs, ("https",) * len(pairs))   # a reload sees it


@pytest.mark.parametrize("text", ["ftp://127.0.0.1:1", "http://127.0.0.1", "http:/x:1"])
def test_listen_refuses_other_schemes_and_half_entries(text):
    with pytest.raises(ValueError):
        values.listen(text)


def check(text, directory):
    path = directory / "ssed.ini"
    path.write_text(text)
    try:
        config.load(path, checks=(tls.check,))
    except config.ConfigError as exc:
        return exc.errors
    return []


def test_check_names_the_file_and_line_of_a_bad_pair(pki, tmp_path):
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    head = "[ssed]\nlisten = 127.0.0.1:0\n"
    cases = {
        # relative paths are relative to the config file
        f"tls_cert = {pki}/one.pem\ntls_key = {pki}/two.key\n":
            r":4: tls_key: .*two\.key: this private key does not belong to the certificate",
        "tls_cert = garbage.pem\ntls_key = nope.key\n":
            r":4: tls_key: .*nope\.key: cannot read: No such file",
        f"tls_cert = garbage.pem\ntls_key = {pki}/one.key\n":
            r":3: tls_cert: .*garbage\.pem: not a usable PEM certificate chain",
        f"tls_cert = {pki}/one.pem\ntls_key = garbage.pem\n":
            r":4: tls_key: .*garbage\.pem: not a usable PEM private key",
        f"tls_cert = {pki}/one.pem\n": r":3: tls_cert is set without tls_key",
        "listen = https://127.0.0.1:0\n": r":2: listen: an https:// listener needs tls_cert",
    }
    for text, expected in cases.items():
        errors = check("[ssed]\n" + ("" if "listen" in text else head[7:]) + text + "[/a]\n",
                       tmp_path)
        assert len(errors) == 1 and re.search(expected, errors[0]), (text, errors)
        assert errors[0].startswith(str(tmp_path / "ssed.ini") + ":")
    assert check(head + f"tls_cert = {pki}/one.pem\ntls_key = {pki}/one.key\n[/a]\n",
                 tmp_path) == []


def test_dash_dash_check_catches_a_bad_pair(pki, tmp_path):
    ini = tmp_path / "ssed.ini"
    ini.write_text(f"[ssed]\ntls_cert = {pki}/two.pem\ntls_key = {pki}/one.key\n[/a]\n")
    out = subprocess.run([sys.executable, "-m", "ssed", "-c", str(ini), "--check"], env=env(),
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert out.returncode == 1
    assert re.match(rf"{re.escape(str(ini))}:3: tls_key: .*one\.key: this private key does "
                    "not belong to the certificate", out.stdout), out.stdout


# -- TlsSocket over a real socket pair -------------------------------------------------------

def _pair(pki):
    a, b = socket.socketpair()
    server = tls.context(str(pki / "one.pem"), str(pki / "one.key")).wrap_socket(
        a, server_side=True, do_handshake_on_connect=False)
    client = client_context(pki).wrap_socket(b, server_hostname="localhost",
                                             do_handshake_on_connect=False)
    server.setblocking(False)
    client.setblocking(False)
    for _ in range(100):
        done = 0
        for s in (server, client):
            try:
                s.do_handshake()
                done += 1
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        if done == 2:
            return tlsconns.TlsSocket(server), client
    raise AssertionError("no handshake")


def test_a_write_that_would_block_is_retried_with_the_same_bytes_then_the_rest(pki):
    """What the outbox does with a TlsSocket: offer, keep what was not taken, offer it
    again with more behind it. The peer must read every byte once, in order."""
    server, client = _pair(pki)
    server.ssl.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunks = [bytes([65 + i % 26]) * (5000 + i) for i in range(400)]
    pending, blocked, sent = b"", 0, bytearray()
    received = bytearray()
    for chunk in chunks:
        pending += chunk
        inflight = server.inflight
        try:
            n = server.send(pending)
            # a retry writes the bytes in flight, exactly, and reports those taken
            assert n == (min(len(pending), tlsconns.MAX_WRITE) if inflight is None
                         else len(inflight))
            sent += pending[:n]
            pending = pending[n:]
        except BlockingIOError:
            blocked += 1
            assert server.inflight is not None
        if blocked and len(received) < len(sent) + len(pending) // 2:
            try:
                received += client.recv(65536)
            except ssl.SSLWantReadError:
                pass
    while pending:
        try:
            n = server.send(pending)
            sent += pending[:n]
            pending = pending[n:]
        except BlockingIOError:
            pass
        try:
            received += client.recv(65536)
        except ssl.SSLWantReadError:
            pass
    deadline = time.monotonic() + TIMEOUT
    while len(received) < len(sent) and time.monotonic() < deadline:
        select.select([client], [], [], 0.1)
        try:
            received += client.recv(65536)
        except ssl.SSLWantReadError:
            pass
    assert blocked > 0, "the socket never pushed back: the test proves nothing"
    assert bytes(received) == bytes(sent) == b"".join(chunks)


def test_recv_takes_what_openssl_holds_beyond_the_size_asked(pki):
    server, client = _pair(pki)
    client.sendall(b"a" * 10000)            # one record
    select.select([server.ssl], [], [], TIMEOUT)
    data = server.recv(100)                 # the rest is in OpenSSL, not in the socket
    assert data == b"a" * 10000 and server.ssl.pending() == 0
    with pytest.raises(BlockingIOError):
        server.recv(100)
    client.close()      # with the server's session tickets unread: the peer sees a reset
    select.select([server.ssl], [], [], TIMEOUT)
    with pytest.raises(ConnectionResetError):   # as a plain socket says it (not SSLEOFError)
        server.recv(100)


def _tcp_pair(pki, rcvbuf=None, user_timeout_ms=None):
    """A TLS connection over TCP (the kernel's errors are TCP's): (the server's TlsSocket,
    non-blocking, the client's SSLSocket), the handshake done."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        raw = connect(listener.getsockname()[1], rcvbuf=rcvbuf)
        accepted, _ = listener.accept()
    if user_timeout_ms is not None:
        accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    server = tls.context(str(pki / "one.pem"), str(pki / "one.key")).wrap_socket(
        accepted, server_side=True, do_handshake_on_connect=False)
    client = client_context(pki).wrap_socket(raw, server_hostname="localhost",
                                             do_handshake_on_connect=False)
    shaking = threading.Thread(target=client.do_handshake)
    shaking.start()
    server.do_handshake()
    shaking.join(TIMEOUT)
    server.setblocking(False)
    return tlsconns.TlsSocket(server), client


def test_a_write_the_kernel_gave_up_on_fails_with_etimedout_as_on_a_plain_socket(pki):
    """TCP_USER_TIMEOUT (ssed sets it to `send_timeout`) aborts a connection whose peer
    stopped reading; CPython's ssl reports that as SSLEOFError without the errno, and the
    stream would count as an "error" drop instead of "stalled"."""
    sock, client = _tcp_pair(pki, rcvbuf=4096, user_timeout_ms=500)
    server, data = sock.ssl, b"x" * 65536
    deadline = time.monotonic() + TIMEOUT
    with pytest.raises(TimeoutError):       # never read by the client: the kernel gives up
        while time.monotonic() < deadline:
            try:
                sock.send(data)
            except BlockingIOError:
                select.select([], [server], [server], 0.2)
    assert time.monotonic() < deadline
    sock.close()
    client.close()


def test_a_write_to_a_peer_that_reset_is_a_reset_not_an_ssl_error(pki):
    """CPython's ssl says SSLEOFError for a send() that failed with ECONNRESET or EPIPE;
    the stream would count as an "error" drop, where a plain socket's is the peer leaving."""
    sock, client = _tcp_pair(pki)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()      # a reset
    with pytest.raises(ConnectionResetError):
        for _ in range(100):
            sock.send(b"data: after the reset\n\n")
    assert outbox.failed(ConnectionResetError(errno.ECONNRESET, "x")) == reasons.RESET
    sock.close()


def test_a_clean_close_of_the_peer_reads_as_eof(pki):
    server, client = _pair(pki)
    with pytest.raises(ssl.SSLWantReadError):
        client.recv(100)                    # takes the session tickets: nothing left unread
    client.close()
    select.select([server.ssl], [], [], TIMEOUT)
    assert server.recv(100) == b""


# -- the daemon over TLS ---------------------------------------------------------------------

def test_python_ssl_client_streams_over_tls_1_3_and_1_2_with_alpn(daemon, pki):
    d = daemon("[/s]\n", top=top(pki))
    assert re.search(r"HTTPS on 127\.0\.0\.1:\d+ \(certificate .*one\.pem\)", "\n".join(d.log))
    s13 = TlsStream(pki, d.port, "/s")
    s12 = TlsStream(pki, d.port, "/s", maximum_version=ssl.TLSVersion.TLSv1_2)
    assert s13.status == s12.status == 200
    assert s13.headers["content-type"] == "text/event-stream"
    assert (s13.sock.version(), s12.sock.version()) == ("TLSv1.3", "TLSv1.2")
    assert s13.sock.selected_alpn_protocol() == s12.sock.selected_alpn_protocol() == "http/1.1"
    d.publish("/s", "over tls")
    assert [e.data for e in s13.wait_events(1)] == [e.data for e in s12.wait_events(1)] == [
        "over tls"]


def test_tls_1_1_is_refused(daemon, pki):
    d = daemon("[/s]\n", top=top(pki))
    ctx = client_context(pki)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with connect(d.port) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="localhost")
    assert TlsStream(pki, d.port, "/s").status == 200


def test_curl_gets_a_stream_and_publishes_with_post(daemon, pki):
    curl = _tool("curl")
    d = daemon("[/chat]\npublish_token = a-publish-token-of-some-length\n", top=top(pki))
    url = f"https://localhost:{d.port}/chat"
    stream = subprocess.Popen([curl, "-sS", "-N", "--cacert", str(pki / "ca.pem"), url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: d.ctl({"cmd": "clients", "service": "/chat"})["clients"],
                   what="curl's stream")
        post = subprocess.run([curl, "-sS", "--cacert", str(pki / "ca.pem"), "-H",
                               "Authorization: Bearer a-publish-token-of-some-length",
                               "-H", "Content-Type: text/plain",
                               "-d", "hello over https", "-w", " %{http_code} %{http_version}",
                               url], capture_output=True, text=True, timeout=TIMEOUT)
        assert post.stdout.endswith(" 200 1.1"), (post.stdout, post.stderr)
        got = b""
        deadline = time.monotonic() + TIMEOUT
        while b"data: hello over https\n\n" not in got:
            assert time.monotonic() < deadline, got
            ready, _, _ = select.select([stream.stdout], [], [], 0.5)
            if ready:
                got += os.read(stream.stdout.fileno(), 65536)
    finally:
        stream.kill()
        stream.wait()


def test_keep_alive_and_bodies_in_several_records_over_tls(daemon, pki):
    d = daemon("[/chat]\npublish_token = a-publish-token-of-some-length\n", top=top(pki))
    sub = TlsStream(pki, d.port, "/chat")
    body = b"y" * 40000         # more than one TLS record (16 KiB at most each)
    head = (b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Authorization: Bearer a-publish-token-of-some-length\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with connect(d.port) as raw, client_context(pki).wrap_socket(
            raw, server_hostname="localhost") as s:
        for _ in range(2):      # two requests on one connection, each in three writes
            s.sendall(head)
            s.sendall(body[:20000])
            s.sendall(body[20000:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = s.recv(65536)
                assert data, answer
                answer += data
            assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert [e.data for e in sub.wait_events(2)] == [body.decode()] * 2


def test_an_http_listener_stays_plain_while_the_other_speaks_https(daemon, pki):
    d = daemon("[/s]\n", top=top(pki), listen="127.0.0.1:0 http://127.0.0.2:0")
    ports = d.ports()
    raw = connect(ports["127.0.0.2"], source=None, host="127.0.0.2")
    raw.sendall(get("/healthz"))
    assert read_all(raw).startswith(b"HTTP/1.1 200")
    raw.close()
    assert tls_request(pki, ports["127.0.0.1"], get("/healthz")).startswith(b"HTTP/1.1 200")


# -- the hostile set ------------------------------------------------------------------------

def test_plain_http_sent_to_the_tls_port_gets_a_400_saying_so(daemon, pki):
    d = daemon("[/s]\n", top=top(pki))
    with connect(d.port) as sock:
        sock.sendall(get("/s"))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"use https://" in answer, answer
    assert stats(d)["refused"] == {"tls_handshake": 1}
    assert TlsStream(pki, d.port, "/s").status == 200


def test_handshakes_never_finished_are_closed_at_header_timeout_and_cost_others_nothing(
        daemon, pki):
    d = daemon("[/s]\n", top=top(pki, extra="header_timeout = 1\n"))
    good = TlsStream(pki, d.port, "/s")
    silent = [connect(d.port) for _ in range(40)]           # not a byte
    hello = _client_hello(pki)
    halves = [connect(d.port) for _ in range(10)]           # half a ClientHello
    for sock in halves:
        sock.sendall(hello[:len(hello) // 2])
    opened = time.monotonic()
    for i in range(5):              # meanwhile the good stream gets its events at once
        sent = time.monotonic()
        d.publish("/s", f"e{i}")
        assert good.wait_events(i + 1)[i].data == f"e{i}"
        assert time.monotonic() - sent < 0.5
    late = TlsStream(pki, d.port, "/s")      # and a new client is served
    assert late.status == 200
    for sock in silent + halves:
        assert read_all(sock, timeout=5) in (b"",)
    closed = time.monotonic() - opened
    assert 0.5 < closed < 4, closed
    assert stats(d)["refused"] == {"header_timeout": 50}


def test_handshake_and_request_head_share_one_header_timeout_from_accept(daemon, pki):
    d = daemon("[/s]\n", top=top(pki, extra="header_timeout = 1.5\n"))
    raw = connect(d.port)
    accepted = time.monotonic()
    select.select([], [], [], 0.9)            # (a bounded pause: the slow client's part)
    with client_context(pki).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /s HTTP/1.1\r\nHost: x\r\n")          # never finished
        answer = read_all(s, timeout=5)
    took = time.monotonic() - accepted
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 1.3 < took < 2.2, took     # 1.5 s from accept, not from the handshake's end


def _client_hello(pki):
    """The first flight of a real client, captured with memory BIOs."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("garbage", [
    b"\x00" * 64,
    os.urandom(4096),
    b"\x16\x03\x01\xff\xff" + b"\x01" * 200,          # a handshake record of 64 KiB promised
    b"\x17\x03\x03\x00\x10" + b"\x00" * 16,           # application data before any handshake
    b"SSH-2.0-OpenSSH_9.2\r\n",
])
def test_garbage_records_are_closed_and_the_daemon_goes_on(daemon, pki, garbage):
    d = daemon("[/s]\n", top=top(pki, extra="header_timeout = 2\n"))
    good = TlsStream(pki, d.port, "/s")
    with connect(d.port) as sock:
        try:
            sock.sendall(garbage)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock, timeout=5)
    assert answer == b"" or answer[:1] == b"\x15", answer[:50]     # nothing, or an alert
    d.publish("/s", "still here")
    assert good.wait_events(1)[0].data == "still here"
    assert sum(stats(d)["refused"].values()) == 1


def test_a_tls_client_that_stops_reading_is_dropped_as_slow_others_go_on(daemon, pki):
    d = daemon("[/s]\n", top=top(pki, extra="send_buffer = 65536\n"))
    good = TlsStream(pki, d.port, "/s")
    bad = TlsStream(pki, d.port, "/s?client=bad", rcvbuf=4096)     # and it never reads
    ctl = d.control_conn()
    queued = []
    for i in range(2000):
        assert ctl.request({"cmd": "publish", "service": "/s", "data": f"{i} {EVENT}"})["ok"]
        good.wait_events(i + 1)
        clients = ctl.request({"cmd": "clients", "service": "/s"})["clients"]
        mine = [c for c in clients if c["id"] == "bad"]
        if not mine:
            break
        queued.append(mine[0]["bytes_queued"])
    else:
        raise AssertionError("the client that does not read was never dropped")
    assert 0 < max(queued) <= 65536
    assert ctl.request({"cmd": "stats"})["dropped"] == {"slow": 1}
    bad.wait_closed()
    ctl.close()


def test_a_tls_reader_that_makes_no_progress_is_dropped_as_stalled(daemon, pki):
    d = daemon("[/s]\n", top=top(pki, extra=f"send_timeout = 1\nsend_buffer = {64 << 20}\n"))
    stuck = TlsStream(pki, d.port, "/s?client=stuck", rcvbuf=4096)
    ctl = d.control_conn()
    for _ in range(2000):
        assert ctl.request({"cmd": "publish", "service": "/s", "data": EVENT})["ok"]
        if ctl.request({"cmd": "clients", "service": "/s"})["clients"][0]["bytes_queued"]:
            break
    start = time.monotonic()
    assert wait_until(lambda: ctl.request({"cmd": "stats"})["dropped"], timeout=5,
                      what="a drop") == {"stalled": 1}
    assert time.monotonic() - start < 3.0
    stuck.wait_closed()
    ctl.close()


def test_a_slow_tls_reader_gets_every_byte_once_in_order(daemon, pki):
    """The partial-write path: the reader stops until bytes queue up (the server met
    SSLWantWriteError and keeps the same bytes in flight), then reads on: every event
    arrives whole, once, in order."""
    d = daemon("[/s]\n", top=top(pki, extra=f"send_buffer = {16 << 20}\n"))
    slow = TlsStream(pki, d.port, "/s?client=slow", rcvbuf=4096)
    ctl = d.control_conn()
    sent, queued_seen = [], 0
    for i in range(3000):
        data = f"{i:05d} " + chr(65 + i % 26) * (3000 + 37 * (i % 50))
        assert ctl.request({"cmd": "publish", "service": "/s", "data": data})["ok"]
        sent.append(data)
        queued = ctl.request({"cmd": "clients", "service": "/s"})["clients"][0]["bytes_queued"]
        queued_seen = max(queued_seen, queued)
        if queued_seen > 200_000:
            break
    assert queued_seen > 0, "nothing ever queued: the partial path was not taken"
    for i in range(100):            # more while it drains
        data = f"late {i} " + "z" * 5000
        assert ctl.request({"cmd": "publish", "service": "/s", "data": data})["ok"]
        sent.append(data)
        if i % 10 == 0:
            slow.read_some()
    got = [e.data for e in slow.wait_events(len(sent), timeout=30)]
    assert got == sent
    assert ctl.request({"cmd": "stats"})["dropped"] == {}
    ctl.close()


# -- reload ---------------------------------------------------------------------------------

def test_sighup_reloads_the_pair_for_new_connections_and_refuses_a_bad_one(daemon, pki):
    live = pki / "live"
    live.mkdir(exist_ok=True)
    for ext in ("pem", "key"):
        shutil.copy(pki / f"one.{ext}", live / f"cert.{ext}")
    d = daemon("[/s]\n", top=f"tls_cert = {live}/cert.pem\ntls_key = {live}/cert.key\n")
    old = TlsStream(pki, d.port, "/s")
    assert subject(pki, d.port) == "ssed one"
    for ext in ("pem", "key"):      # a renewal: new files under the same names
        shutil.copy(pki / f"two.{ext}", live / f"cert.{ext}")
    d.proc.send_signal(1)
    d.wait_log(r"reloaded: .*TLS certificate read from .*cert\.pem for new connections")
    assert subject(pki, d.port) == "ssed two"
    d.publish("/s", "after the reload")
    assert old.wait_events(1)[0].data == "after the reload"     # the old stream goes on
    shutil.copy(pki / "one.key", live / "cert.key")             # half a renewal: a bad pair
    ans = d.ctl({"cmd": "reload"})
    assert not ans["ok"] and "cert.key: this private key does not belong" in ans["error"], ans
    assert subject(pki, d.port) == "ssed two"                   # the old pair goes on
    d.publish("/s", "still")
    assert old.wait_events(2)[1].data == "still"


def test_a_reload_turns_a_plain_listener_to_https_without_rebinding_it(daemon, pki):
    d = daemon("[/s]\n", top=top(pki), listen="127.0.0.1:0 http://127.0.0.2:0")
    port = d.ports()["127.0.0.2"]
    raw = connect(port, source=None, host="127.0.0.2")
    raw.sendall(get("/healthz"))
    assert read_all(raw).startswith(b"HTTP/1.1 200")
    d.ini.write_text(d.ini.read_text().replace("http://127.0.0.2:0", "127.0.0.2:0"))
    ans = d.ctl({"cmd": "reload"})
    assert ans["ok"], ans
    assert "changed [ssed]: listen" in ans["changes"], ans
    assert not any("listening on" in c for c in ans["changes"]), ans    # the same socket
    with connect(port, source=None, host="127.0.0.2") as sock, client_context(pki).wrap_socket(
            sock, server_hostname="localhost") as s:
        s.sendall(get("/healthz"))
        assert read_all(s).startswith(b"HTTP/1.1 200")


# -- Chromium -------------------------------------------------------------------------------

def test_chromium_trusting_the_test_ca_opens_an_event_source_over_https(daemon, pki, tmp_path):
    from browser import Browser, BrowserError, require_chromium
    chromium = require_chromium()
    certutil = _tool("certutil")    # Debian's libnss3-tools
    d = daemon("[/s]\n", top=top(pki, extra="index = true\n"))
    # Chromium trusts the CAs of the user's NSS database ($HOME/.pki/nssdb): a HOME of our own.
    nssdb = tmp_path / "home" / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    _run(certutil, "-d", f"sql:{nssdb}", "-N", "--empty-password", cwd=tmp_path)
    browser = Browser(chromium, env={"HOME": str(tmp_path / "home")})
    try:                # not yet trusted: the certificate is checked
        with pytest.raises(BrowserError, match="ERR_CERT_AUTHORITY_INVALID"):
            browser.tab().goto(f"https://localhost:{d.port}/")
    finally:
        browser.close()
    _run(certutil, "-d", f"sql:{nssdb}", "-A", "-n", "ssed test CA", "-t", "C,,", "-i",
         str(pki / "ca.pem"), cwd=tmp_path)
    browser = Browser(chromium, env={"HOME": str(tmp_path / "home")})
    try:
        tab = browser.tab()
        tab.goto(f"https://localhost:{d.port}/")
        assert tab.evaluate("location.protocol") == "https:"
        tab.evaluate("""window.got = []; window.es = new EventSource("/s");
                        es.onmessage = (e) => got.push(e.data);""")
        tab.wait("window.es.readyState === 1", what="the EventSource open")
        d.publish("/s", "to the browser over https")
        tab.wait("window.got.length === 1", what="the event")
        assert tab.evaluate("window.got[0]") == "to the browser over https"
    finally:
        browser.close()


def test_a_proxy_protocol_https_listener_reads_the_proxy_header_then_the_handshake(daemon, pki):
    """HAProxy's send-proxy-v2 in front of an HTTPS listener: the PROXY header comes before
    the ClientHello (SPEC 14), and names the client the stream is listed under."""
    d = daemon("[/s]\n", top=top(pki, extra="proxy_protocol = true\n"))
    raw = connect(d.port)
    raw.sendall(b"PROXY TCP4 203.0.113.9 10.0.0.1 51000 443\r\n")
    s = StreamClient.__new__(StreamClient)
    s.sock = client_context(pki).wrap_socket(raw, server_hostname="localhost")
    s.sock.sendall(get("/s?client=behind", ()))
    s._begin()
    assert s.status == 200
    [listed] = d.ctl({"cmd": "clients", "service": "/s"})["clients"]
    assert (listed["id"], listed["address"]) == ("behind", "203.0.113.9")
    d.publish("/s", "through the header and the handshake")
    assert s.wait_events(1)[0].data == "through the header and the handshake"
    # Without the header, the ClientHello itself is refused as no PROXY header: closed.
    with connect(d.port) as bare, pytest.raises((ssl.SSLError, OSError)):
        client_context(pki).wrap_socket(bare, server_hostname="localhost")


def test_a_live_upgrade_sends_tls_streams_a_short_retry_and_keeps_plain_ones(daemon, pki):
    """OpenSSL's session state cannot cross a live upgrade (SPEC 13, 14): a TLS stream gets
    a short `retry:`, then EOF, and comes back with Last-Event-ID; a plain stream on the
    `http://` listener is handed over and sees no close."""
    d = daemon("[/s]\n", top=top(pki), listen="127.0.0.1:0 http://127.0.0.2:0")
    ports = d.ports()
    secure = TlsStream(pki, ports["127.0.0.1"], "/s")
    plain = StreamClient.__new__(StreamClient)
    plain.sock = connect(ports["127.0.0.2"], source=None, host="127.0.0.2")
    plain.sock.sendall(get("/s"))
    plain._begin()
    first = d.publish("/s", "before")["id"]
    assert secure.wait_events(1)[0].data == plain.wait_events(1)[0].data == "before"
    answer = d.ctl({"cmd": "upgrade"})
    try:
        assert answer["ok"] and answer["streams"] == 1, answer
        secure.wait_closed()
        delay = int(re.search(rb"retry: (\d+)\n\n\Z", bytes(secure.body)).group(1))
        assert 100 <= delay <= 1000
        d.publish("/s", "after")
        assert plain.wait_events(2)[-1].data == "after"
        again = TlsStream(pki, ports["127.0.0.1"], "/s", headers=[f"Last-Event-ID: {first}"])
        assert again.wait_events(1)[0].data == "after"
    finally:
        if answer.get("ok"):
            os.kill(answer["pid"], signal.SIGKILL)
