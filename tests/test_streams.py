"""Streams against the daemon subprocess (SPEC section 4): the head, what a stream gets on
open, the framing on the wire, ids, history and replay (also while events are being
published), multiplexed streams, keepalives, client ids and events for one client.

Every wait is a bounded read; nothing sleeps to synchronise.
"""
import random
import re
import socket
import threading
import time

from conftest import TIMEOUT, Daemon

ID = re.compile(r"(\d+)-(\d+)\Z")
PRIME = re.compile(rb"id: (\d+-\d+)\n\n\Z")


def key(event_id):
    """An id as the pair of numbers it is compared as."""
    m = ID.match(event_id)
    assert m, f"not an id of the form <ms>-<seq>: {event_id!r}"
    return int(m.group(1)), int(m.group(2))


def primed(stream):
    """The priming id of a stream that has been sent nothing else (exact bytes checked)."""
    stream.wait_bytes(b"\n\n")
    m = PRIME.match(bytes(stream.body))
    assert m, f"expected exactly a bare id line and a blank line, got {bytes(stream.body)!r}"
    return m.group(1).decode()


def read_until(stream, predicate, timeout=TIMEOUT):
    """Read (bounded) until `predicate(body bytes so far)` holds."""
    deadline = time.monotonic() + timeout
    while not predicate(bytes(stream.body)):
        left = deadline - time.monotonic()
        if left <= 0 or not stream.read_some(left):
            raise AssertionError(f"condition not met; body {bytes(stream.body)[-500:]!r}")


def clients(d, service):
    ans = d.ctl({"cmd": "clients", "service": service})
    assert ans["ok"], ans
    return ans["clients"]


def wait_clients(d, service, predicate, tries=200):
    """Ask `clients` until `predicate(list of ids)` holds (bounded by answers, not sleeps)."""
    with d.control_conn() as c:
        for _ in range(tries):
            ans = c.request({"cmd": "clients", "service": service})
            ids = [x["id"] for x in ans["clients"]]
            if predicate(ids):
                return ids
    raise AssertionError(f"clients of {service} never satisfied the condition: {ids}")


def head_of(raw):
    """(status line, {lower name: value}, the bytes after the head) of a raw response."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete head in {raw!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def publish_many(d, service, datas, event=None):
    """Publish over one control connection; the ids in order."""
    ids = []
    with d.control_conn() as c:
        for data in datas:
            ans = c.request({"cmd": "publish", "service": service, "data": data,
                             "event": event})
            assert ans["ok"], ans
            ids.append(ans["id"])
    return ids


SVC = "[/svc]\n"


# -- the head -------------------------------------------------------------------------

def test_stream_head_is_200_with_event_stream_headers_on_http_1_1_and_1_0(daemon):
    d = daemon(SVC, top="retry = 0\n")
    for version in ("1.1", "1.0"):
        s = d.stream("/svc", version=version)
        assert s.status == 200
        assert s.headers["content-type"] == "text/event-stream"
        assert s.headers["cache-control"] == "no-cache"
        assert s.headers["x-accel-buffering"] == "no"
        assert "content-length" not in s.headers
        primed(s)
        s.close()


def test_http_1_0_stream_without_host_header_is_served(daemon):
    d = daemon(SVC, top="retry = 0\n")
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /svc HTTP/1.0\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.endswith(b"\n\n"):
            data = sock.recv(65536)
            assert data, f"closed early: {buf!r}"
            buf += data
        status, headers, rest = head_of(buf)
        assert status.split()[1] == "200"
        assert headers["content-type"] == "text/event-stream"
        assert PRIME.match(rest)


def test_head_request_gets_the_stream_head_without_body_and_is_closed(daemon):
    d = daemon(SVC, top="retry = 0\n")
    s = d.stream("/svc")
    for version in (b"1.1", b"1.0"):
        raw = d.request(b"HEAD /svc HTTP/" + version + b"\r\nHost: x\r\n\r\n")
        status, headers, rest = head_of(raw)   # d.request returns only once closed
        assert status.split()[1] == "200"
        assert rest == b""
        for name in ("content-type", "cache-control", "x-accel-buffering"):
            assert headers[name] == s.headers[name]
    assert len(clients(d, "/svc")) == 1     # a HEAD is not a subscriber


# -- what a stream gets on open -------------------------------------------------------

def test_stream_opens_with_retry_then_session_event_then_priming_id(daemon):
    d = daemon("[/chat]\nsession_event = true\n", top="retry = 2500\n")
    s = d.stream("/chat?client=abc")
    read_until(s, lambda body: re.search(rb"\nid: [^\n]*\n\n\Z", body))
    m = re.fullmatch(rb"retry: 2500\n\nevent: session\ndata: abc\n\nid: (\d+-\d+)\n\n",
                     bytes(s.body))
    assert m, bytes(s.body)
    assert s.parser.retry == 2500
    assert [(e.type, e.data, e.id) for e in s.events] == [("session", "abc", "")]


def test_retry_zero_sends_no_retry_line_and_no_session_event_by_default(daemon):
    d = daemon(SVC, top="retry = 0\n")
    s = d.stream("/svc")
    primed(s)       # the body is exactly the bare id line
    assert s.parser.retry is None and s.events == []


def test_session_event_comes_before_the_replay(daemon):
    d = daemon("[/chat]\nsession_event = true\n", top="retry = 0\n")
    ids = publish_many(d, "/chat", ["one", "two"])
    s = d.stream("/chat?client=me", [f"Last-Event-ID: {ids[0]}"])
    events = s.wait_events(2)
    assert [(e.type, e.data) for e in events] == [("session", "me"), ("message", "two")]
    assert bytes(s.body) == (b"event: session\ndata: me\n\n"
                             + f"id: {ids[1]}\ndata: two\n\n".encode())


def test_priming_id_is_the_current_id_and_the_next_event_compares_greater(daemon):
    d = daemon("[/a]\n[/b]\n", top="retry = 0\n")
    before = d.publish("/b", "elsewhere")["id"]
    s = d.stream("/a")
    prime = primed(s)
    assert key(prime) >= key(before)
    assert abs(key(prime)[0] - time.time() * 1000) < 60_000    # unix ms
    ans = d.publish("/a", "next")
    assert key(ans["id"]) > key(prime)
    ev = s.wait_events(1)[0]
    assert (ev.id, ev.data) == (ans["id"], "next")


def test_fresh_stream_without_last_event_id_gets_no_history(daemon):
    # SPEC: history is kept "for Last-Event-ID replay"; a stream that has nothing to
    # replay gets the priming id. A first connection (no id) starts at "now", as in Mercure.
    d = daemon(SVC, top="retry = 0\n")
    publish_many(d, "/svc", ["old1", "old2"])
    s = d.stream("/svc")
    prime = primed(s)
    ans = d.publish("/svc", "new")
    assert key(ans["id"]) > key(prime)
    assert [(e.id, e.data) for e in s.wait_events(1)] == [(ans["id"], "new")]


def test_reconnect_with_priming_id_gets_exactly_the_events_published_since(daemon):
    d = daemon(SVC, top="retry = 0\n")
    s = d.stream("/svc")
    prime = primed(s)
    s.close()
    ids = publish_many(d, "/svc", ["e1", "e2", "e3"])
    s2 = d.stream("/svc", [f"Last-Event-ID: {prime}"])
    live = d.publish("/svc", "e4")["id"]
    events = s2.wait_events(4)
    assert [(e.id, e.data) for e in events] == list(zip(ids + [live], ["e1", "e2", "e3", "e4"]))
    assert not bytes(s2.body).startswith(b"id: " + prime.encode())


# -- framing on the wire --------------------------------------------------------------

FRAMES = [
    # (data, event, the bytes after "id: X\n")
    ("l1\nl2", "T", b"event: T\ndata: l1\ndata: l2\n\n"),
    ("a\r\nb\rc\nd", None, b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
    ("", None, b"data: \n\n"),
    ("x\n", None, b"data: x\ndata: \n\n"),
    ("\r\n\r\n", None, b"data: \ndata: \ndata: \n\n"),
    ("h\u00e9llo \u2713", "caf\u00e9", "event: caf\u00e9\ndata: h\u00e9llo \u2713\n\n".encode()),
    ("data: fake\n\nid: 1-1", None, b"data: data: fake\ndata: \ndata: id: 1-1\n\n"),
]


def test_events_are_framed_exactly_on_the_wire(daemon):
    d = daemon(SVC, top="retry = 0\n")
    s = d.stream("/svc")
    primed(s)
    expected = bytearray(s.body)
    for data, event, tail in FRAMES:
        ans = d.publish("/svc", data, event)
        expected += f"id: {ans['id']}\n".encode() + tail
    s.wait_events(len(FRAMES))
    s.wait_bytes(bytes(expected[-30:]))
    assert bytes(s.body) == bytes(expected)
    got = [(e.data, e.type) for e in s.events]
    want = [(data.replace("\r\n", "\n").replace("\r", "\n"), event or "message")
            for data, event, _ in FRAMES]
    assert got == want


def test_config_event_key_types_published_events_that_name_none(daemon):
    d = daemon("[/news]\nevent = headline\n", top="retry = 0\n")
    s = d.stream("/news")
    primed(s)
    plain = d.publish("/news", "untyped")["id"]
    named = d.publish("/news", "typed", event="special")["id"]
    s.wait_events(2)
    assert bytes(s.body).endswith(
        f"id: {plain}\nevent: headline\ndata: untyped\n\n"
        f"id: {named}\nevent: special\ndata: typed\n\n".encode())


def test_time_source_events_carry_the_configured_event_type(daemon):
    d = daemon("[/clock]\nsource = time\ninterval = 0.2\nformat = unix\nevent = tick\n",
               top="retry = 0\n")
    s = d.stream("/clock")
    ev = s.wait_events(1)[0]
    assert ev.type == "tick" and ev.data.isdigit()
    assert b"event: tick\ndata: " + ev.data.encode() + b"\n\n" in s.body


# -- ids ------------------------------------------------------------------------------

def test_ids_strictly_increase_across_services_in_publish_order(daemon):
    d = daemon("[/a]\n[/b]\n[/c]\n", top="retry = 0\n")
    streams = {p: d.stream(p) for p in ("/a", "/b", "/c")}
    ids = []
    with d.control_conn() as c:
        for i in range(60):
            path = "/" + "abc"[i % 3]
            ans = c.request({"cmd": "publish", "service": path, "data": str(i)})
            ids.append((path, ans["id"]))
    keys = [key(i) for _, i in ids]
    assert all(a < b for a, b in zip(keys, keys[1:])), ids
    for path, s in streams.items():
        got = [e.id for e in s.wait_events(20)]
        assert got == [i for p, i in ids if p == path]


def test_ids_keep_increasing_across_a_daemon_restart(tmp_path):
    body = "[/svc]\n"
    path = tmp_path / "same"
    path.mkdir()
    d = Daemon(path, body)
    try:
        old = publish_many(d, "/svc", [str(i) for i in range(50)])[-1]
        assert d.stop() == 0
        d = Daemon(path, body)
        new = d.publish("/svc", "after restart")["id"]
        assert key(new) > key(old)
        s = d.stream("/svc", [f"Last-Event-ID: {old}"])
        assert [(e.id, e.data) for e in s.wait_events(1)] == [(new, "after restart")]
    finally:
        d.stop()


# -- history and replay ---------------------------------------------------------------

def test_history_keeps_the_configured_number_of_events(daemon):
    d = daemon("[/h]\nhistory = 3\n", top="retry = 0\n")
    ids = publish_many(d, "/h", [f"e{i}" for i in range(6)])
    s = d.stream("/h", ["Last-Event-ID: 0-0"])
    live = d.publish("/h", "live")["id"]
    events = s.wait_events(4)
    assert [(e.id, e.data) for e in events] == list(zip(ids[3:] + [live],
                                                        ["e3", "e4", "e5", "live"]))


def _replay_case(d, headers, target):
    ids = publish_many(d, "/h", [f"e{i}" for i in range(5)])
    s = d.stream(target.format(id=ids[1]), [h.format(id=ids[1]) for h in headers])
    live = d.publish("/h", "live")["id"]
    events = s.wait_events(4)
    assert [(e.id, e.data) for e in events] == list(zip(ids[2:] + [live],
                                                        ["e2", "e3", "e4", "live"]))
    assert bytes(s.body).startswith(f"id: {ids[2]}\ndata: e2\n\n".encode())


def test_replay_after_last_event_id_header_sends_only_newer_events_then_live(daemon):
    d = daemon("[/h]\nhistory = 10\n", top="retry = 0\n")
    _replay_case(d, ["Last-Event-ID: {id}"], "/h")


def test_replay_after_lasteventid_query_parameter(daemon):
    d = daemon("[/h]\nhistory = 10\n", top="retry = 0\n")
    _replay_case(d, [], "/h?lastEventId={id}")


def test_replay_after_last_event_id_query_parameter(daemon):
    d = daemon("[/h]\nhistory = 10\n", top="retry = 0\n")
    _replay_case(d, [], "/h?last_event_id={id}")


def test_replay_with_an_id_not_of_our_form_sends_everything_held(daemon):
    d = daemon("[/h]\nhistory = 3\n", top="retry = 0\n")
    ids = publish_many(d, "/h", [f"e{i}" for i in range(5)])
    for bad in ("garbage", "12", "1-2-3", "-1-0", "abc-def"):
        s = d.stream("/h", [f"Last-Event-ID: {bad}"])
        assert [e.id for e in s.wait_events(3)] == ids[2:], bad
        s.close()


def test_replay_with_an_id_older_than_the_held_window_sends_all_held(daemon):
    d = daemon("[/h]\nhistory = 3\n", top="retry = 0\n")
    ids = publish_many(d, "/h", [f"e{i}" for i in range(6)])
    for old in (ids[0], ids[1], "0-0", "1-0"):
        s = d.stream("/h", [f"Last-Event-ID: {old}"])
        assert [e.id for e in s.wait_events(3)] == ids[3:], old
        s.close()


def test_empty_last_event_id_in_any_form_means_no_id_and_replays_nothing(daemon):
    # WHATWG: an empty last event ID string is no id at all (EventSource sends no header).
    d = daemon("[/h]\nhistory = 3\n", top="retry = 0\n")
    ids = publish_many(d, "/h", ["a", "b"])
    for headers, target in ((["Last-Event-ID: "], "/h"), ([], "/h?lastEventId="),
                            ([], "/h?last_event_id="), ([], "/h?lastEventId=&last_event_id=")):
        s = d.stream(target, headers)
        assert key(primed(s)) > key(ids[-1]), (headers, target)
        s.close()


def test_replay_with_the_newest_id_sends_only_the_priming_id(daemon):
    d = daemon("[/h]\nhistory = 3\n", top="retry = 0\n")
    ids = publish_many(d, "/h", ["a", "b"])
    s = d.stream("/h", [f"Last-Event-ID: {ids[-1]}"])
    assert key(primed(s)) > key(ids[-1])


def test_dropped_client_reconnecting_with_its_last_id_gets_exactly_what_it_missed(daemon):
    d = daemon("[/h]\nhistory = 50\n", top="retry = 0\n")
    s = d.stream("/h")
    primed(s)
    seen = publish_many(d, "/h", ["a", "b", "c"])
    assert [e.id for e in s.wait_events(3)] == seen
    last = s.parser.last_event_id
    s.close()
    missed = publish_many(d, "/h", ["d", "e", "f"])
    s2 = d.stream("/h", [f"Last-Event-ID: {last}"])
    live = d.publish("/h", "g")["id"]
    assert [(e.id, e.data) for e in s2.wait_events(4)] == \
        list(zip(missed + [live], ["d", "e", "f", "g"]))


def test_replay_under_concurrent_publishing_has_no_gap_and_no_duplicate(daemon):
    total, n_clients = 2000, 24
    d = daemon("[/burst]\nhistory = 5000\n", top="retry = 0\n")
    ids = []
    cond = threading.Condition()
    failure = []

    def publisher():
        try:
            with d.control_conn() as c:
                for i in range(total):
                    ans = c.request({"cmd": "publish", "service": "/burst", "data": str(i)})
                    with cond:
                        ids.append(ans["id"])
                        cond.notify_all()
        except Exception as exc:    # reported by the main thread
            failure.append(exc)
            with cond:
                cond.notify_all()

    rng = random.Random(7)
    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    subscribers = []
    mid_burst = 0
    try:
        for n in range(n_clients):
            target = 20 + n * (total - 200) // n_clients
            with cond:
                assert cond.wait_for(lambda: len(ids) >= target or failure, TIMEOUT)
                since = rng.randrange(len(ids)) if n % 3 else len(ids) - 1
                last = ids[since]
            subscribers.append((since, d.stream("/burst", [f"Last-Event-ID: {last}"])))
            with cond:
                mid_burst += len(ids) < total    # still publishing once it was subscribed
        thread.join(TIMEOUT * 3)
        assert mid_burst >= 20, f"only {mid_burst} clients joined while events were published"
        assert not thread.is_alive() and not failure, failure
        assert len(ids) == total
        assert len(clients(d, "/burst")) == n_clients
        for since, s in subscribers:
            want = ids[since + 1:]
            got = s.wait_events(len(want))
            assert [e.id for e in got] == want
            assert [e.data for e in got] == [str(i) for i in range(since + 1, total)]
            assert len(s.events) == len(want)
    finally:
        for _, s in subscribers:
            s.close()


# -- multiplexed streams --------------------------------------------------------------

def test_multiplexed_stream_carries_both_services_in_id_order(daemon):
    d = daemon("[/a]\n[/b]\n[/c]\n", top="retry = 0\n")
    s = d.stream("/?service=/a&service=/b")
    assert s.status == 200 and s.headers["content-type"] == "text/event-stream"
    primed(s)
    sent = []
    with d.control_conn() as c:
        for i, path in enumerate(["/a", "/b", "/c", "/b", "/a", "/c", "/a"]):
            ans = c.request({"cmd": "publish", "service": path, "data": f"{path}{i}"})
            sent.append((path, ans["id"], f"{path}{i}"))
    want = [(i, data) for path, i, data in sent if path != "/c"]
    assert [(e.id, e.data) for e in s.wait_events(len(want))] == want


def test_multiplexed_replay_merges_both_services_in_id_order(daemon):
    d = daemon("[/a]\n[/b]\n", top="retry = 0\n")
    sent = []
    with d.control_conn() as c:
        for i, path in enumerate(["/a", "/a", "/b", "/a", "/b", "/b", "/a"]):
            ans = c.request({"cmd": "publish", "service": path, "data": f"{path}{i}"})
            sent.append((ans["id"], f"{path}{i}"))
    s = d.stream("/?service=/b&service=/a", [f"Last-Event-ID: {sent[1][0]}"])
    twice = d.stream("/?service=/a&service=/a", [f"Last-Event-ID: {sent[1][0]}"])
    live = d.publish("/b", "live")["id"]
    also = d.publish("/a", "also")["id"]
    want = sent[2:] + [(live, "live"), (also, "also")]
    assert [(e.id, e.data) for e in s.wait_events(len(want))] == want
    want_a = [(i, data) for i, data in want if data.startswith(("/a", "also"))]
    assert [(e.id, e.data) for e in twice.wait_events(len(want_a))] == want_a


def test_multiplexed_stream_with_an_unknown_service_is_404(daemon):
    d = daemon("[/a]\n[/b]\n")
    raw = d.request(b"GET /?service=/a&service=/nope HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = head_of(raw)
    assert status.split()[1] == "404"
    assert headers["content-type"].startswith("text/plain")
    assert clients(d, "/a") == []


# -- keepalive ------------------------------------------------------------------------

def test_silent_stream_gets_a_keepalive_comment_after_the_keepalive_interval(daemon):
    d = daemon(SVC, top="retry = 0\nkeepalive = 1\n")
    start = time.monotonic()
    s = d.stream("/svc")
    prime = primed(s)
    s.wait_bytes(b": keepalive\n\n", timeout=5)
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed <= 3.0, elapsed
    assert bytes(s.body) == f"id: {prime}\n\n: keepalive\n\n".encode()
    assert s.events == []


def test_stream_with_events_flowing_gets_no_keepalive(daemon):
    d = daemon("[/tick]\nsource = time\ninterval = 0.3\nformat = unix\n[/quiet]\n",
               top="retry = 0\nkeepalive = 1\n")
    s = d.stream("/tick")
    mux = d.stream("/?service=/quiet&service=/tick")    # one of its services is busy
    start = time.monotonic()
    s.wait_events(7)        # about 2 s: two keepalive intervals
    assert time.monotonic() - start >= 1.5
    mux.wait_events(6)
    assert b"keepalive" not in s.body and b"keepalive" not in mux.body


# -- client ids -----------------------------------------------------------------------

def test_client_query_parameter_names_the_client(daemon):
    d = daemon("[/chat]\nsession_event = true\n", top="retry = 0\n")
    s = d.stream("/chat?client=Ab.9_:-z")
    assert s.wait_events(1)[0].data == "Ab.9_:-z"
    assert [c["id"] for c in clients(d, "/chat")] == ["Ab.9_:-z"]
    assert clients(d, "/chat")[0]["address"] == "127.0.0.1"
    long_ok = "x" * 64
    s2 = d.stream(f"/chat?client={long_ok}")
    assert s2.status == 200 and s2.wait_events(1)[0].data == long_ok


def test_invalid_client_ids_are_refused_with_400(daemon):
    d = daemon(SVC, top="retry = 0\n")
    for bad in ("", "x" * 65, "a%20b", "a+b", "a/b", "a%2Fb", "%C3%A9", "a%0Ab"):
        raw = d.request(f"GET /svc?client={bad} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = head_of(raw)
        assert status.split()[1] == "400", (bad, raw)
        assert headers["content-type"].startswith("text/plain")
    assert clients(d, "/svc") == []


def test_generated_client_ids_are_unique(daemon):
    d = daemon("[/chat]\nsession_event = true\n", top="retry = 0\n")
    streams = [d.stream("/chat") for _ in range(50)]
    ids = [s.wait_events(1)[0].data for s in streams]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", i) for i in ids)
    assert sorted(c["id"] for c in clients(d, "/chat")) == sorted(ids)


def test_publish_to_a_client_reaches_only_its_streams_and_is_never_replayed(daemon):
    d = daemon("[/a]\nhistory = 10\n[/b]\n", top="retry = 0\n")
    bob1, bob2 = d.stream("/a?client=bob"), d.stream("/a?client=bob")
    alice, bob_b = d.stream("/a?client=alice"), d.stream("/b?client=bob")
    for s in (bob1, bob2, alice, bob_b):
        primed(s)
    ans = d.publish("/a", "for bob", event="private", client="bob")
    assert ans["delivered"] == 2
    key(ans["id"])
    for s in (bob1, bob2):
        ev = s.wait_events(1)[0]
        assert (ev.id, ev.type, ev.data) == (ans["id"], "private", "for bob")
    after_a = d.publish("/a", "everyone")["id"]
    after_b = d.publish("/b", "everyone on b")["id"]
    assert [e.id for e in alice.wait_events(1)] == [after_a]
    assert [e.id for e in bob_b.wait_events(1)] == [after_b]
    assert [e.id for e in bob1.wait_events(2)] == [ans["id"], after_a]
    later = d.stream("/a?client=bob", ["Last-Event-ID: 0-0"])
    marker = d.publish("/a", "marker")["id"]
    assert [e.id for e in later.wait_events(2)] == [after_a, marker]   # not the private one
    assert d.publish("/a", "x", client="carol")["delivered"] == 0


def test_closed_stream_is_gone_from_clients(daemon):
    d = daemon(SVC, top="retry = 0\n")
    stay, leave = d.stream("/svc?client=stay"), d.stream("/svc?client=leave")
    wait_clients(d, "/svc", lambda ids: sorted(ids) == ["leave", "stay"])
    leave.close()
    assert wait_clients(d, "/svc", lambda ids: ids == ["stay"]) == ["stay"]
    assert d.publish("/svc", "still here")["delivered"] == 1
