"""Redis trouble in a cluster (SPEC 12) is normal, not fatal: a node cut off from Redis keeps
its streams open with their keepalives, refuses publishes at once with the SPEC's errors,
says 503 on /healthz, keeps its `cluster = false` services working, and when Redis is back
resumes where it stopped reading. A paused Redis leaves a publish in flight "outcome
unknown"; a Redis restarted empty is detected; one restarted from its AOF loses nothing.
Nodes are daemons; Redis is the test's own redis-server (tests/redisserver.py), and a
Proxy (clusterkit) cuts one node off while the others keep Redis.
"""
import re
import socket
import time

import pytest

from clusterkit import (PTOK, TIMEOUT_S, Proxy, cluster_info, healthz, http, id_key, metric,
                        node, nodes, pairs, post, publish_many, subscribe, survived, wait_for,
                        wait_up)


@pytest.fixture(autouse=True)
def no_node_died():
    yield from survived()


def refused_at_once(d, path="/chat"):
    """A publish refused at once because the cluster is unavailable: its error."""
    start = time.monotonic()
    answer = d.ctl({"cmd": "publish", "service": path, "data": "refused"})
    took = time.monotonic() - start
    assert answer["ok"] is False and answer["error"].startswith("cluster unavailable: "), answer
    assert took < 0.5, f"refused after {took:.2f} s"
    return answer["error"]


def keepalive_from_now(stream, timeout=3):
    """A `: keepalive` comment comes on `stream` after what it has read so far (keepalive
    is 1 s)."""
    mark = len(stream.body)
    deadline = time.monotonic() + timeout
    while b": keepalive\n\n" not in stream.body[mark:]:
        left = deadline - time.monotonic()
        assert left > 0 and stream.read_some(left), bytes(stream.body[mark:])


def test_a_node_cut_off_from_redis_keeps_serving_and_catches_up_when_it_is_back(daemon, redis):
    proxy = Proxy(redis.port)
    try:
        a = node(daemon, proxy.url, "a")
        b = node(daemon, redis.url, "b")
        assert metric(a, "ssed_cluster_up") == 1
        assert metric(a, "ssed_cluster_reconnects_total") == 0
        assert healthz(a) == (200, "ok\n")
        chat, local = subscribe(a, "/chat"), subscribe(a, "/local")
        before = b.publish("/chat", "before")
        chat.wait_events(1)
        proxy.cut()
        wait_up(a, up=False)
        # Publishes refused at once: control, and HTTP with 503 and Retry-After.
        refused_at_once(a)
        status, fields, body = post(a, "/chat", "refused")
        assert status == 503 and b"cluster unavailable: " in body, (status, body)
        assert int(fields["retry-after"]) > 0
        assert healthz(a) == (503, "cluster unavailable\n")
        assert metric(a, "ssed_cluster_up") == 0
        info = a.ctl({"cmd": "cluster"})
        assert (info["ok"], info["up"]) == (True, False)
        # cluster = false needs no Redis.
        mine = a.publish("/local", "still here")
        assert mine["delivered"] == 1
        assert pairs(local.wait_events(1)) == [(mine["id"], "still here")]
        # Open streams stay open with their keepalives; a new one is served what A holds.
        keepalive_from_now(chat)
        late = a.stream("/chat", ["Last-Event-ID: 0-0"])
        assert pairs(late.wait_events(1)) == [(before["id"], "before")]
        # Meanwhile B publishes; A's subscribers get it all, in order, once A is back.
        meanwhile = [b.publish("/chat", f"meanwhile {i}")["id"] for i in range(10)]
        assert len(chat.events) == 1
        proxy.heal()
        wait_up(a, timeout=3)       # backoff: at most about a second apart early on
        want = [before["id"]] + meanwhile
        for s in (chat, late):
            assert [e.id for e in s.wait_events(11)] == want
        assert healthz(a) == (200, "ok\n")
        assert metric(a, "ssed_cluster_up") == 1
        assert metric(a, "ssed_cluster_reconnects_total") >= 1
        after = a.publish("/chat", "after")
        assert chat.wait_events(12)[11].id == after["id"] and len(chat.events) == 12
    finally:
        proxy.close()


def test_a_paused_redis_answers_a_publish_in_flight_outcome_unknown(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    subs = [subscribe(a, "/chat"), subscribe(b, "/chat")]
    first = a.publish("/chat", "first")
    redis.pause()
    try:
        # Over HTTP on B (answered later, read below) and over control on A.
        body = b"in flight http"
        post_b = socket.create_connection(("127.0.0.1", b.port), timeout=TIMEOUT_S + 5)
        post_b.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Authorization: Bearer " + PTOK.encode() + b"\r\n"
                       b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
                       + body)
        start = time.monotonic()
        answer = a.ctl({"cmd": "publish", "service": "/chat", "data": "in flight"})
        took = time.monotonic() - start
        assert answer["ok"] is False, answer
        assert answer["error"].startswith("cluster unavailable: "), answer
        assert "outcome unknown" in answer["error"], answer
        assert TIMEOUT_S * 0.8 <= took <= TIMEOUT_S + 1.5, f"answered after {took:.2f} s"
        with post_b:
            raw = post_b.makefile("rb").read()
        assert raw.startswith(b"HTTP/1.1 503 ") and b"outcome unknown" in raw, raw
        assert re.search(rb"(?im)^retry-after: *[1-9]", raw), raw
        wait_up(b, up=False, timeout=TIMEOUT_S + 4)
        for d in (a, b):
            refused_at_once(d)
            assert healthz(d) == (503, "cluster unavailable\n")
        for s in subs:
            keepalive_from_now(s)
    finally:
        redis.resume()
    for d in (a, b):
        wait_up(d, timeout=5)
    last = b.publish("/chat", "last")
    got = []
    for s in subs:
        s.wait_bytes(f"id: {last['id']}\n".encode())
        got.append([(e.id, e.data) for e in s.events])
    assert got[0] == got[1]
    datas = [data for _, data in got[0]]
    # Redis may have applied them when it came back: then each is delivered once, in order.
    assert datas[0] == "first" and datas[-1] == "last", datas
    assert len(datas) == len(set(datas)) and set(datas[1:-1]) <= {"in flight",
                                                                   "in flight http"}, datas
    assert got[0][0] == (first["id"], "first") and got[0][-1] == (last["id"], "last")


def test_redis_restarted_empty_is_detected_and_every_node_replays_the_same(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    subs = [subscribe(a, "/chat"), subscribe(b, "/chat")]
    old = [a.publish("/chat", f"old {i}")["id"] for i in range(3)]
    for s in subs:
        s.wait_events(3)
    redis.restart(keep_data=False)
    for d in (a, b):
        d.wait_log(r"Redis lost data")
        wait_up(d, timeout=5)
    new = [b.publish("/chat", f"new {i}")["id"] for i in range(2)]
    for s in subs:      # the streams stayed open and go on
        assert [e.id for e in s.wait_events(5)] == old + new and len(s.events) == 5
    assert all(id_key(i) > id_key(old[-1]) for i in new)
    late = node(daemon, redis.url, "late")
    replays = [pairs(d.stream("/chat", ["Last-Event-ID: 0-0"]).wait_events(2))
               for d in (a, b, late)]
    assert replays[0] == replays[1] == replays[2] == list(zip(new, ["new 0", "new 1"]))
    # Nothing held from before: the last id's next event is all a replay of it holds.
    marker = late.publish("/chat", "marker")
    for d in (a, b, late):
        s = d.stream("/chat", ["Last-Event-ID: 0-0"])
        assert [e.id for e in s.wait_events(3)] == new + [marker["id"]]
    assert sum("Redis lost data" in line for line in late.log) == 0


def test_redis_restarted_from_its_aof_loses_no_acknowledged_event(daemon, make_redis):
    redis = make_redis(appendonly=True)
    a, b = nodes(daemon, redis, 2)
    subs = [subscribe(a, "/chat"), subscribe(b, "/chat")]
    conns = [a.control_conn(), b.control_conn()]
    lines = [[{"cmd": "publish", "service": "/chat", "data": f"{d.name} {i}"}
              for i in range(50)] for d in (a, b)]
    answers = publish_many(conns, lines)
    for c in conns:
        c.close()
    acked = sorted((a_["id"] for per in answers for a_ in per if a_["ok"]), key=id_key)
    assert len(acked) == 100
    for s in subs:
        s.wait_events(100)
    redis.kill()        # a crash: only what is in the AOF survives
    for d in (a, b):
        wait_up(d, up=False, timeout=TIMEOUT_S + 4)
        refused_at_once(d)
        assert healthz(d) == (503, "cluster unavailable\n")
    redis.start()
    for d in (a, b):
        wait_up(d, timeout=5)
        assert metric(d, "ssed_cluster_reconnects_total") >= 1
        assert not any("Redis lost data" in line for line in d.log), d.log
    after = a.publish("/chat", "after")
    assert id_key(after["id"]) > id_key(acked[-1])
    for s in subs:
        assert [e.id for e in s.wait_events(101)] == acked + [after["id"]]
        assert len(s.events) == 101
    late = node(daemon, redis.url, "late")
    for d in (a, b, late):
        s = d.stream("/chat", ["Last-Event-ID: 0-0"])
        assert [e.id for e in s.wait_events(101)] == acked + [after["id"]]


def test_a_password_in_the_url_and_a_wrong_one(daemon, make_redis):
    password = "s3cret pw:@/"
    redis = make_redis(password=password)
    a, b = nodes(daemon, redis, 2)
    s = subscribe(b, "/chat")
    sent = a.publish("/chat", "with a password")
    assert pairs(s.wait_events(1)) == [(sent["id"], "with a password")]
    wrong = node(daemon, redis.url.replace("s3cret", "wrong"), "wrong", up=False)
    none = node(daemon, f"redis://127.0.0.1:{redis.port}/0", "none", up=False)
    for d, error in ((wrong, "WRONGPASS"), (none, "NOAUTH")):
        d.wait_log(error)
        # It goes on trying, the error logged once for the whole episode; it stays up.
        wait_up_count(d, 3)
        assert sum(error in line for line in d.log) == 1, d.log
        assert d.proc.poll() is None
        assert d.ctl({"cmd": "cluster"})["up"] is False
        assert healthz(d) == (503, "cluster unavailable\n")
        assert refused_at_once(d)
    # An ACL user: redis://user:password@...
    assert redis.call("ACL", "SETUSER", "ssed", "on", ">user pw", "~*", "&*", "+@all") == "OK"
    user = node(daemon, f"redis://ssed:user%20pw@127.0.0.1:{redis.port}/0", "user")
    sent = user.publish("/chat", "as a user")
    assert pairs(s.wait_events(2))[1] == (sent["id"], "as a user")
    for d in (a, b, wrong, none, user):
        assert not any("s3cret" in line or "user pw" in line for line in d.log)


def wait_up_count(d, at_least, timeout=5):
    """Until the node has tried Redis again `at_least` times (bounded)."""
    wait_for(f"{d.name} reconnected {at_least} times",
             lambda: metric(d, "ssed_cluster_reconnects_total") >= at_least, timeout, 0.05)


def test_two_prefixes_on_one_redis_are_two_clusters(daemon, redis):
    a1 = node(daemon, redis.url, "a1", prefix="one")
    a2 = node(daemon, redis.url, "a2", prefix="one")
    b1 = node(daemon, redis.url, "b1", prefix="two")
    on_a2, on_b1 = subscribe(a2, "/chat"), subscribe(b1, "/chat")
    for_a = a1.publish("/chat", "for one")
    for_b = b1.publish("/chat", "for two")
    assert for_b["delivered"] == 1
    again_a = a1.publish("/chat", "for one again")
    assert pairs(on_a2.wait_events(2)) == [(for_a["id"], "for one"),
                                           (again_a["id"], "for one again")]
    assert pairs(on_b1.wait_events(1)) == [(for_b["id"], "for two")]
    marker = b1.publish("/chat", "marker")
    assert pairs(on_b1.wait_events(2))[1] == (marker["id"], "marker")
    assert len(on_a2.events) == 2
    assert [e[0].decode() for e in redis.call("XRANGE", "{two}:events", "-", "+")] == [
        for_b["id"], marker["id"]]
    assert redis.call("XLEN", "{one}:events") == 2
    replay = b1.stream("/chat", ["Last-Event-ID: 0-0"])
    assert [e.data for e in replay.wait_events(2)] == ["for two", "marker"]
    wait_for("b1 seeing a heartbeat", lambda: cluster_info(b1)["nodes"])
    assert [n["node"] for n in cluster_info(b1)["nodes"]] == ["b1"]
    assert sorted(n["node"] for n in wait_for("a1 seeing both", lambda: len(
        cluster_info(a1)["nodes"]) == 2 and cluster_info(a1)["nodes"])) == ["a1", "a2"]


def test_a_key_of_the_wrong_type_is_logged_and_the_node_stays_up(daemon, redis):
    assert redis.call("SET", "{ssed}:events", "not a stream") == "OK"
    d = node(daemon, redis.url, "a", up=False)
    d.wait_log("WRONGTYPE")
    wait_up_count(d, 2)
    assert sum("WRONGTYPE" in line for line in d.log) == 1, d.log
    assert d.proc.poll() is None
    assert healthz(d) == (503, "cluster unavailable\n")
    refused_at_once(d)
    s = subscribe(d, "/local")
    assert d.publish("/local", "fine")["delivered"] == 1
    # The key fixed: the node comes up and serves the cluster.
    assert redis.call("DEL", "{ssed}:events") == 1
    wait_up(d, timeout=5)
    chat = subscribe(d, "/chat")
    sent = d.publish("/chat", "now")
    assert pairs(chat.wait_events(1)) == [(sent["id"], "now")]
    assert s.wait_events(1)[0].data == "fine"


def test_metrics_of_a_node_that_is_caught_up(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    s = subscribe(a, "/chat")
    answers = publish_many([b.control_conn()], [[
        {"cmd": "publish", "service": "/chat", "data": str(i)} for i in range(20)]])
    s.wait_events(20)
    status, _, body = http(a, "GET", "/metrics")
    text = body.decode()
    for name, kind in (("ssed_cluster_up", "gauge"), ("ssed_cluster_lag_seconds", "gauge"),
                       ("ssed_cluster_reconnects_total", "counter")):
        assert f"# TYPE {name} {kind}" in text
    # Caught up: once a heartbeat has seen the newest entry, the lag is 0.
    last = answers[0][-1]["id"]
    wait_for("the last event read", lambda: cluster_info(a)["last_id"] == last)
    assert metric(a, "ssed_cluster_lag_seconds") == 0
    assert a.ctl({"cmd": "cluster"})["lag_ms"] == 0


def test_redis_flushed_under_running_nodes_is_lost_data_too(daemon, redis):
    """No restart, no closed connection: the epoch key gone is what tells."""
    a, b = nodes(daemon, redis, 2)
    subs = [subscribe(a, "/chat"), subscribe(b, "/chat")]
    old = a.publish("/chat", "old")["id"]
    for s in subs:
        s.wait_events(1)
    assert redis.call("FLUSHALL") == "OK"
    for d in (a, b):
        d.wait_log(r"Redis lost data", timeout=5)
        wait_up(d, timeout=5)
    new = b.publish("/chat", "new")["id"]
    for s in subs:
        assert [e.id for e in s.wait_events(2)] == [old, new]
    replays = [d.stream("/chat", ["Last-Event-ID: 0-0"]) for d in (a, b)]
    for replay in replays:
        assert pairs(replay.wait_events(1)) == [(new, "new")]
    marker = a.publish("/chat", "marker")["id"]
    for replay in replays:
        assert [e.id for e in replay.wait_events(2)] == [new, marker]


def test_a_node_started_before_redis_serves_and_joins_when_redis_comes(daemon, make_redis):
    redis = make_redis().stop()
    d = node(daemon, redis.url.replace("127.0.0.1", "localhost"), "early", up=False)
    local = subscribe(d, "/local")
    chat = subscribe(d, "/chat")
    assert healthz(d) == (503, "cluster unavailable\n")
    refused_at_once(d)
    assert d.publish("/local", "no redis needed")["delivered"] == 1
    assert local.wait_events(1)[0].data == "no redis needed"
    redis.start()
    wait_up(d, timeout=5)
    sent = d.publish("/chat", "joined")
    assert pairs(chat.wait_events(1)) == [(sent["id"], "joined")]
    assert healthz(d) == (200, "ok\n")


def test_with_redis_paused_a_replay_is_served_and_a_shutdown_is_clean(daemon, redis):
    """A paused Redis never answers: a stream asking for the replay of a channel this node
    has not read is still served (what the node holds, within `timeout`), and SIGTERM still
    ends the node cleanly within its shutdown_timeout."""
    a = node(daemon, redis.url, "a")
    a.publish("/user/ann", "held in Redis")
    late = node(daemon, redis.url, "late", top="keepalive = 1\nshutdown_timeout = 1\n")
    redis.pause()
    try:
        start = time.monotonic()
        s = late.stream("/user/ann", ["Last-Event-ID: 0-0"])
        assert s.status == 200
        s.wait_bytes(b"\n\n", timeout=TIMEOUT_S + 3)
        assert time.monotonic() - start < TIMEOUT_S + 3
        keepalive_from_now(s)
        start = time.monotonic()
        assert late.stop() == 0
        assert time.monotonic() - start < 1 + 2
    finally:
        redis.resume()


def test_a_node_reconnecting_to_a_silent_redis_shuts_down_at_once(daemon, redis):
    a = node(daemon, redis.url, "a", top="shutdown_timeout = 2\n")
    redis.pause()
    try:
        wait_up(a, up=False, timeout=TIMEOUT_S + 4)
        wait_up_count(a, 1)         # trying again: connected, its PING unanswered
        start = time.monotonic()
        assert a.stop() == 0
        took = time.monotonic() - start
        assert took < 1.5, f"stopped after {took:.2f} s"
    finally:
        redis.resume()


def test_a_unix_socket_url_and_a_db_number(daemon, make_redis):
    """unix:///path?db=N and redis://host:port/N: the same db is one cluster whichever way
    a node reaches it; another db is another cluster."""
    redis = make_redis(unixsocket=True)
    over_unix = node(daemon, redis.unix_url.replace("db=0", "db=3"), "unix")
    over_tcp = node(daemon, redis.url.replace("/0", "/3"), "tcp")
    other_db = node(daemon, redis.url, "db0")
    s, other = subscribe(over_tcp, "/chat"), subscribe(other_db, "/chat")
    sent = over_unix.publish("/chat", "db 3")
    assert pairs(s.wait_events(1)) == [(sent["id"], "db 3")]
    marker = other_db.publish("/chat", "db 0")
    assert pairs(other.wait_events(1)) == [(marker["id"], "db 0")]
    with redis.client() as c:
        assert c.call("XLEN", "{ssed}:events") == 1
        assert c.call("SELECT", 3) == "OK" and c.call("XLEN", "{ssed}:events") == 1
        assert c.call("XRANGE", "{ssed}:events", "-", "+")[0][0].decode() == sent["id"]


def client_ids(redis, command):
    """The CLIENT LIST ids of the connections whose last command was `command`."""
    listing = redis.call("CLIENT", "LIST").decode()
    return [int(f.split("=")[1]) for line in listing.splitlines()
            for f in line.split() if f.startswith("id=") and f" cmd={command} " in line + " "]


def test_a_blocked_read_unblocked_with_an_error_or_a_killed_link_loses_nothing(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    s = subscribe(a, "/chat")
    sent = [b.publish("/chat", "before")["id"]]
    s.wait_events(1)
    # -UNBLOCKED on A's XREAD (B's too: both read): they count Redis as down and come back.
    readers = wait_for("the blocked readers", lambda: len(client_ids(redis, "xread")) == 2
                       and client_ids(redis, "xread"))
    for reader in readers:      # (between two XREADs it is not blocked: again)
        wait_for(f"client {reader} unblocked",
                 lambda r=reader: redis.call("CLIENT", "UNBLOCK", r, "ERROR") == 1)
    for d in (a, b):
        wait_up_count(d, 1)
        wait_up(d, timeout=5)
    sent += [b.publish("/chat", f"after unblock {i}")["id"] for i in range(3)]
    # Links closed under the nodes (EOF): the same.
    assert redis.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") == 4
    for d in (a, b):
        wait_up_count(d, 2)
        wait_up(d, timeout=5)
    sent += [b.publish("/chat", f"after kill {i}")["id"] for i in range(3)]
    assert [e.id for e in s.wait_events(7)] == sent and len(s.events) == 7
    replay = a.stream("/chat", ["Last-Event-ID: 0-0"])
    assert [e.id for e in replay.wait_events(7)] == sent


def test_a_redis_turned_read_only_replica_is_down_and_its_promotion_is_lost_data(daemon,
                                                                                 make_redis):
    """REPLICAOF: Redis answers READONLY to writes (and takes its master's, empty, data);
    promoted again (REPLICAOF NO ONE), the node finds its epoch gone and starts over."""
    redis, master = make_redis(), make_redis()
    a = node(daemon, redis.url, "a")
    s = subscribe(a, "/chat")
    before = a.publish("/chat", "before")["id"]
    s.wait_events(1)
    assert master.call("CONFIG", "SET", "repl-diskless-sync-delay", "0") == "OK"
    assert redis.call("REPLICAOF", "127.0.0.1", str(master.port)) == "OK"
    wait_for("the replica in sync", lambda: b"master_link_status:up" in redis.call(
        "INFO", "replication"), every=0.05)
    wait_up(a, up=False, timeout=5)
    # The log names the first error of the episode (here -UNBLOCKED: the role changed); a
    # refused publish names the last one.
    refusal = wait_for("READONLY named", lambda: refused_at_once(a).find("READONLY") > 0,
                       every=0.05)
    assert refusal
    assert healthz(a) == (503, "cluster unavailable\n") and a.proc.poll() is None
    assert redis.call("REPLICAOF", "NO", "ONE") == "OK"
    a.wait_log("Redis lost data")
    wait_up(a, timeout=5)
    after = a.publish("/chat", "after")["id"]
    assert [e.id for e in s.wait_events(2)] == [before, after]
    replay = a.stream("/chat", ["Last-Event-ID: 0-0"])
    assert [e.id for e in replay.wait_events(1)] == [after]
