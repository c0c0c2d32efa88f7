"""A cluster of ssed nodes over one Redis (SPEC 12), end to end: each node a daemon subprocess
with its own port and control socket, one real redis-server of the test's own (tests/
redisserver.py). Publishes on any node reach the subscribers of every node, in one order, with
the id Redis gave; replay works on any node, a node started later included; `--client` events
reach that client id everywhere and are never stored. Every wait is bounded.
"""
import json
import re
import socket
import subprocess

import pytest

from clusterkit import (PTOK, SERVICES, cluster_info, cluster_section, id_key, node, nodes,
                        pairs, post, publish_many, subscribe, survived, wait_for,
                        wait_up)
from conftest import plugin_env, reap
from test_control import read_stdout_line, text_fields


@pytest.fixture(autouse=True)
def no_node_died():
    yield from survived()


def ids_in_redis(redis, key):
    return [entry[0].decode() for entry in redis.call("XRANGE", key, "-", "+")]


def test_a_publish_on_one_node_reaches_every_nodes_subscribers_with_the_redis_id(daemon, redis):
    a, b, c = nodes(daemon, redis, 3)
    subs = {d.name: [subscribe(d, "/chat"), subscribe(d, "/chat")] for d in (a, b, c)}
    subs["n1"].append(subscribe(b, "/chat"))
    answer = a.publish("/chat", "over control")
    assert answer["delivered"] == 2         # this node's subscribers
    status, _, body = post(a, "/chat", "over http")
    assert status == 200, body
    over_http = json.loads(body)
    assert over_http["delivered"] == 2
    on_b = b.publish("/chat", "from b")
    assert on_b["delivered"] == 3
    expected = [(answer["id"], "over control"), (over_http["id"], "over http"),
                (on_b["id"], "from b")]
    for s in sum(subs.values(), []):
        assert pairs(s.wait_events(3)) == expected
    # The ids are Redis's: the entries of {ssed}:events, and of /chat's history stream.
    ids = [answer["id"], over_http["id"], on_b["id"]]
    assert all(re.fullmatch(r"[0-9]+-[0-9]+", i) for i in ids), ids
    assert ids_in_redis(redis, "{ssed}:events") == ids
    assert ids_in_redis(redis, "{ssed}:h:/chat") == ids


def test_three_nodes_publishing_at_once_deliver_every_event_once_in_one_order(daemon, redis):
    ns = nodes(daemon, redis, 3)
    subs = [subscribe(d, "/chat") for d in ns for _ in range(2)]
    conns = [d.control_conn() for d in ns]
    count = 200
    lines = [[{"cmd": "publish", "service": "/chat", "data": f"{d.name} {i}"}
              for i in range(count)] for d in ns]
    answers = publish_many(conns, lines)
    for c in conns:
        c.close()
    assert all(a["ok"] for per_node in answers for a in per_node)
    answered = {a["id"]: line["data"] for per_node, reqs in zip(answers, lines)
                for a, line in zip(per_node, reqs)}
    assert len(answered) == 3 * count       # every id unique
    first = pairs(subs[0].wait_events(3 * count))
    for s in subs[1:]:
        assert pairs(s.wait_events(3 * count)) == first     # event by event, every node
    for s in subs:
        assert len(s.events) == 3 * count   # nothing more (no duplicate read back)
    assert dict(first) == answered          # the answered id of each event is its id
    keys = [id_key(i) for i, _ in first]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for d in ns:    # each publisher's events in the order it sent them
        mine = [data for _, data in first if data.startswith(d.name + " ")]
        assert mine == [f"{d.name} {i}" for i in range(count)]


def test_replay_on_another_node_and_on_a_node_started_later(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    s = subscribe(a, "/chat")
    sent = [a.publish("/chat", f"e{i}")["id"] for i in range(5)]
    got = s.wait_events(5)
    assert [e.id for e in got] == sent
    more = [b.publish("/chat", f"e{i}")["id"] for i in range(5, 8)]
    # B, with the id of an event that came through A: exactly the ones after it.
    again = b.stream("/chat", [f"Last-Event-ID: {got[1].id}"])
    assert pairs(again.wait_events(6)) == list(zip(sent[2:] + more,
                                                   [f"e{i}" for i in range(2, 8)]))
    # A node started after all this fills /chat's history from Redis.
    late = node(daemon, redis.url, "late")
    from_late = late.stream("/chat", [f"Last-Event-ID: {got[1].id}"])
    assert pairs(from_late.wait_events(6)) == pairs(again.events[:6])
    # ...and goes on live with the others.
    last = a.publish("/chat", "live")
    for stream in (again, from_late):
        assert pairs(stream.wait_events(7))[6] == (last["id"], "live")
        assert len(stream.events) == 7
    # Everything it holds, as the first nodes: Last-Event-ID 0-0 is before every event.
    everything = [pairs(d.stream("/chat", ["Last-Event-ID: 0-0"]).wait_events(9))
                  for d in (a, b, late)]
    assert everything[0] == everything[1] == everything[2]
    assert [i for i, _ in everything[0]] == sent + more + [last["id"]]


def test_replay_holds_the_last_history_events_on_every_node(daemon, redis):
    body = SERVICES + "\n[/short]\nhistory = 3\n"
    a = node(daemon, redis.url, "a", body=body)
    ids = [a.publish("/short", f"s{i}")["id"] for i in range(6)]
    assert redis.call("XLEN", "{ssed}:h:/short") == 3
    late = node(daemon, redis.url, "late", body=body)
    for d in (a, late):
        s = d.stream("/short", ["Last-Event-ID: 0-0"])
        assert pairs(s.wait_events(3)) == list(zip(ids[3:], ["s3", "s4", "s5"]))


def test_a_template_channel_published_on_one_node_exists_and_replays_on_the_others(
        daemon, redis):
    a, b = nodes(daemon, redis, 2)
    watcher = subscribe(b, "/chat")     # B is reading: the /chat event below proves it
    first = a.publish("/user/alice", "one")
    second = post(a, "/user/alice", "two")
    assert second[0] == 200
    second_id = json.loads(second[2])["id"]
    marker = a.publish("/chat", "after")
    assert pairs(watcher.wait_events(1)) == [(marker["id"], "after")]
    # B saw the publishes, so it has the channel and its history.
    chans = b.ctl({"cmd": "channels", "template": "/user/*"})
    assert [c["path"] for c in chans["channels"]] == ["/user/alice"]
    replay = b.stream("/user/alice", [f"Last-Event-ID: {first['id']}"])
    assert pairs(replay.wait_events(1)) == [(second_id, "two")]
    # A node started afterwards replays it too, from Redis.
    late = node(daemon, redis.url, "late")
    from_late = late.stream("/user/alice", ["Last-Event-ID: 0-0"])
    assert pairs(from_late.wait_events(2)) == [(first["id"], "one"), (second_id, "two")]
    third = late.publish("/user/alice", "three")
    for s in (replay, from_late):
        assert pairs(s.wait_events(len(s.events) + 1))[-1] == (third["id"], "three")


def test_events_for_one_client_reach_it_on_every_node_and_are_never_replayed(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    alice = [subscribe(d, "/chat?client=alice") for d in (a, b, b)]
    bob = subscribe(b, "/chat?client=bob")
    before = a.publish("/chat", "to all")
    private = a.publish("/chat", "just alice", client="alice")
    assert private["delivered"] == 1        # alice's streams on A
    on_b = b.publish("/chat", "alice again", client="alice")
    assert on_b["delivered"] == 2
    after = b.publish("/chat", "to all again")
    for s in alice:
        assert pairs(s.wait_events(4)) == [
            (before["id"], "to all"), (private["id"], "just alice"),
            (on_b["id"], "alice again"), (after["id"], "to all again")]
    assert pairs(bob.wait_events(2)) == [(before["id"], "to all"),
                                         (after["id"], "to all again")]
    assert len(bob.events) == 2
    # Never stored: not in /chat's history stream, not replayed by any node (not to alice).
    assert ids_in_redis(redis, "{ssed}:h:/chat") == [before["id"], after["id"]]
    late = node(daemon, redis.url, "late")
    replays = [d.stream("/chat?client=alice", ["Last-Event-ID: 0-0"]) for d in (a, b, late)]
    for s in replays:
        assert pairs(s.wait_events(2)) == [(before["id"], "to all"),
                                           (after["id"], "to all again")]
    marker = late.publish("/chat", "marker")
    for s in replays:     # the replay was all there was before the marker
        assert pairs(s.wait_events(3))[2] == (marker["id"], "marker")


def test_a_client_whose_node_dies_resumes_on_another_and_misses_nothing(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    watcher = subscribe(b, "/chat")
    victim = subscribe(a, "/chat")
    sent = [b.publish("/chat", f"m{i}")["id"] for i in range(5)]
    seen = victim.wait_events(5)
    a.proc.kill()
    a.proc.wait()
    reap(a.proc)
    sent += [b.publish("/chat", f"m{i}")["id"] for i in range(5, 10)]
    resumed = b.stream("/chat", [f"Last-Event-ID: {seen[-1].id}"])
    got = pairs(seen) + pairs(resumed.wait_events(5))
    assert got == pairs(watcher.wait_events(10)) and [i for i, _ in got] == sent


def test_the_event_stream_is_trimmed_to_about_maxlen(daemon, redis):
    a = node(daemon, redis.url, "a", maxlen=10)
    s = subscribe(a, "/chat")
    with a.control_conn() as c:
        [answers] = publish_many([c], [[{"cmd": "publish", "service": "/chat",
                                         "data": str(i)} for i in range(500)]])
    assert all(x["ok"] for x in answers)
    # Approximate trimming (MAXLEN ~) removes whole nodes of the stream: far below 500.
    assert redis.call("XLEN", "{ssed}:events") < 250
    assert redis.call("XLEN", "{ssed}:h:/chat") == 500     # /chat's history is 1000
    # A burst of 50 times maxlen outruns the reader, which then skips what was trimmed
    # before it read it (SPEC 12 says nothing of it): the last event comes, in order.
    s.wait_bytes(f"id: {answers[-1]['id']}\n".encode())
    keys = [id_key(e.id) for e in s.events]
    assert keys == sorted(set(keys)) and s.events[-1].data == "499"


def test_a_node_outrun_by_more_than_maxlen_replays_what_the_others_do(daemon, redis):
    """Events trimmed from {PREFIX}:events before this node read them: its history is read
    again from {PREFIX}:h:PATH, so its replay is the others'."""
    a = node(daemon, redis.url, "a", maxlen=10)
    s = subscribe(a, "/chat")
    with a.control_conn() as c:
        [answers] = publish_many([c], [[{"cmd": "publish", "service": "/chat",
                                         "data": str(i)} for i in range(500)]])
    s.wait_bytes(f"id: {answers[-1]['id']}\n".encode())
    late = node(daemon, redis.url, "late", maxlen=10)
    replays = [d.stream("/chat", ["Last-Event-ID: 0-0"]) for d in (late, a)]
    want = [(x["id"], str(i)) for i, x in enumerate(answers)]
    assert pairs(replays[0].wait_events(500)) == want
    assert pairs(replays[1].wait_events(500, timeout=1)) == want
    # What its live subscribers missed is said in its log.
    assert any("trimmed" in line for line in a.log), a.log


SKEWED = '''
import time

_real = time.time
time.time = lambda: _real() + 30     # this node's clock: 30 s ahead of Redis's
'''


def test_a_node_whose_clock_is_ahead_primes_with_an_id_that_misses_nothing(daemon, redis,
                                                                            tmp_path):
    """No clock sync between nodes: a node 30 s ahead gives a stream with nothing to replay
    an id that every later event of the cluster is greater than, before it has read any
    event and after."""
    a = node(daemon, redis.url, "a")
    a.publish("/chat", "before b")
    b = node(daemon, redis.url, "b", env=plugin_env(tmp_path, "sitecustomize", SKEWED))
    for _ in range(2):
        fresh = subscribe(b, "/chat")
        primed = fresh.parser.last_event_id
        fresh.close()
        sent = a.publish("/chat", "after the priming id")
        for d in (a, b):
            again = d.stream("/chat", [f"Last-Event-ID: {primed}"])
            got = pairs(again.wait_events(1, timeout=1))
            assert got == [(sent["id"], "after the priming id")], (primed, sent)
    # B's own publishes get Redis's ids too, in the cluster's order.
    on_b = b.publish("/chat", "from b")
    assert id_key(on_b["id"]) > id_key(sent["id"])
    assert id_key(on_b["id"])[0] < (id_key(sent["id"])[0] + 20000)


def test_data_and_event_types_cross_nodes_intact(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    s = subscribe(b, "/chat")
    big = "x" * 60000
    cases = [("two\nlines\r\nand\rthree", "msg"), ("h\u00e9llo \u2713", None), ("", "empty"),
             (big, None), ("  spaced  ", "msg")]
    ids = [a.publish("/chat", data, event=event)["id"] for data, event in cases]
    got = s.wait_events(len(cases))
    assert [(e.id, e.type, e.data) for e in got] == [
        (i, event or "message", data.replace("\r\n", "\n").replace("\r", "\n"))
        for i, (data, event) in zip(ids, cases)]
    late = node(daemon, redis.url, "late")
    replay = late.stream("/chat", ["Last-Event-ID: 0-0"])
    assert [(e.type, e.data) for e in replay.wait_events(len(cases))] == [
        (e.type, e.data) for e in got]


def test_a_multiplexed_stream_replays_on_a_node_that_has_not_seen_its_channels(daemon, redis):
    a = node(daemon, redis.url, "a")
    sent = [a.publish("/user/bob", "bob 1")["id"], a.publish("/chat", "chat 1")["id"],
            a.publish("/user/bob", "bob 2")["id"]]
    late = node(daemon, redis.url, "late")
    s = late.stream("/?service=/chat&service=/user/bob", ["Last-Event-ID: 0-0"])
    assert [e.id for e in s.wait_events(3)] == sent
    live = a.publish("/user/bob", "bob 3")["id"]
    assert s.wait_events(4)[3].id == live and len(s.events) == 4


def test_pipelined_control_requests_are_answered_in_order(daemon, redis):
    """Clustered publishes are answered once Redis has them, local ones at once: on one
    connection the answers still come in the order of the requests."""
    a = node(daemon, redis.url, "a")
    reqs = [{"cmd": "publish", "service": "/chat", "data": "c1"},
            {"cmd": "publish", "service": "/local", "data": "l1"},
            {"cmd": "publish", "service": "/nowhere", "data": "x"},
            {"cmd": "stats"},
            {"cmd": "publish", "service": "/chat", "data": "c2"},
            {"cmd": "cluster"},
            {"cmd": "publish", "service": "/user/zoe", "data": "z1"}]
    with a.control_conn() as c:
        [answers] = publish_many([c], [reqs])
        text = c.request("publish /chat c3")
    oks = [x["ok"] for x in answers]
    assert oks == [True, True, False, True, True, True, True], answers
    assert "uptime" in answers[3] and answers[5]["node"] == "a"
    assert id_key(answers[0]["id"]) < id_key(answers[4]["id"]) < id_key(answers[6]["id"])
    assert text.startswith("ok id=")
    assert redis.call("XLEN", "{ssed}:events") == 4


def test_the_console_answers_in_the_order_typed_behind_a_clustered_publish(daemon, redis):
    """A clustered publish is answered once Redis has it; `stats` typed after it waits
    for it, as on a control connection."""
    d = daemon(SERVICES + cluster_section(redis.url, "a"), top="keepalive = 1\n",
               args=["--console"], stdin=subprocess.PIPE)
    d.name = "a"
    wait_up(d)
    d.proc.stdin.write(b"publish /chat c1\nstats\npublish /local l1\npublish /chat c2\n")
    d.proc.stdin.flush()
    first, stats, local, second = (text_fields(read_stdout_line(d)) for _ in range(4))
    assert "uptime" in stats and "id" not in stats, stats
    assert id_key(first["id"]) < id_key(second["id"])
    assert [e[0].decode() for e in redis.call("XRANGE", "{ssed}:events", "-", "+")] == [
        first["id"], second["id"]]
    assert "id" in local    # (this node's own: it may equal one of Redis's, another service)
    d.proc.stdin.close()
    d.wait_log(r"console: end of input")


def test_a_service_a_reload_adds_is_clustered_and_replays_from_redis(daemon, redis):
    a = node(daemon, redis.url, "a", body=SERVICES + "\n[/news]\n")
    b = node(daemon, redis.url, "b")
    sent = [a.publish("/news", f"n{i}")["id"] for i in range(3)]
    b.ini.write_text(b.ini.read_text() + "\n[/news]\n")
    answer = b.ctl({"cmd": "reload"})
    assert answer["ok"], answer
    s = b.stream("/news", [f"Last-Event-ID: {sent[0]}"])
    assert [e.id for e in s.wait_events(2)] == sent[1:]
    live = b.publish("/news", "from b")["id"]
    assert s.wait_events(3)[2].id == live


def test_a_reload_that_flips_cluster_takes_the_service_off_redis_and_back(daemon, redis):
    """SPEC 8: a changed service takes its new settings, `cluster` included. Back in the
    cluster, a node's replay has what the others published while it was on its own."""
    a, b = nodes(daemon, redis, 2)
    on_a, on_b = subscribe(a, "/chat"), subscribe(b, "/chat")
    c1 = b.publish("/chat", "c1")["id"]
    assert pairs(on_a.wait_events(1)) == pairs(on_b.wait_events(1)) == [(c1, "c1")]
    clustered = a.ini.read_text()
    a.ini.write_text(clustered.replace("[/chat]\n", "[/chat]\ncluster = false\n", 1))
    answer = a.ctl({"cmd": "reload"})
    assert answer["ok"] and answer["changes"] == ["changed /chat: cluster"], answer
    c2 = b.publish("/chat", "c2")["id"]
    wait_for("c2 read on a", lambda: cluster_info(a)["last_id"] == c2)
    mine = a.publish("/chat", "a's own")
    assert mine["delivered"] == 1 and id_key(mine["id"]) > id_key(c2)   # after all a read
    assert pairs(on_a.wait_events(2))[1] == (mine["id"], "a's own")     # not c2
    assert pairs(on_b.wait_events(2))[1] == (c2, "c2")                  # not a's own
    assert redis.call("XLEN", "{ssed}:events") == 2
    a.ini.write_text(clustered)
    assert a.ctl({"cmd": "reload"})["changes"] == ["changed /chat: cluster"]
    replay = a.stream("/chat", [f"Last-Event-ID: {c1}"])
    # Its own events of meanwhile had its own ids, which Redis's may repeat: Redis's
    # history is the one every node replays.
    assert pairs(replay.wait_events(1)) == [(c2, "c2")]
    c3 = b.publish("/chat", "c3")["id"]
    assert pairs(replay.wait_events(2))[1] == pairs(on_a.wait_events(3))[2] == (c3, "c3")
    assert len(on_a.events) == 3 and len(replay.events) == 2


def test_cluster_false_services_stay_on_their_node(daemon, redis):
    a, b = nodes(daemon, redis, 2)
    on_a, on_b = subscribe(a, "/local"), subscribe(b, "/local")
    mine = a.publish("/local", "a's own")
    assert mine["delivered"] == 1
    theirs = b.publish("/local", "b's own")
    assert pairs(on_a.wait_events(1)) == [(mine["id"], "a's own")]
    assert pairs(on_b.wait_events(1)) == [(theirs["id"], "b's own")]
    marker = a.publish("/chat", "marker")       # read back by both: /local's came before
    for d in (a, b):
        # Not "after mine": a /local id is a's own and Redis may give /chat the same one.
        replay = subscribe(d, "/chat", ["Last-Event-ID: 0-0"])
        assert pairs(replay.wait_events(1)) == [(marker["id"], "marker")]
    assert len(on_a.events) == len(on_b.events) == 1
    assert redis.call("EXISTS", "{ssed}:h:/local") == 0
    assert [e[0].decode() for e in redis.call("XRANGE", "{ssed}:events", "-", "+")] == [
        marker["id"]]


def test_with_state_dir_only_cluster_false_services_keep_a_journal(daemon, redis, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    top = f"keepalive = 1\nstate_dir = {state}\n"
    a = node(daemon, redis.url, "a", top=top)
    chat = a.publish("/chat", "in redis")["id"]
    local = a.publish("/local", "in the journal")["id"]
    assert a.stop() == 0
    # state_dir/NAME.journal (README's keys table) for /local; nothing for the clustered.
    assert sorted(p.name for p in state.iterdir()) == ["local.journal"]
    again = node(daemon, redis.url, "a", top=top)
    for path, key, data in (("/chat", chat, "in redis"), ("/local", local, "in the journal")):
        s = again.stream(path, ["Last-Event-ID: 0-0"])
        assert pairs(s.wait_events(1)) == [(key, data)]


def responses(sock, n):
    """`n` HTTP responses read off one keep-alive connection: (status, body) each."""
    out = []
    f = sock.makefile("rb")
    for _ in range(n):
        status = int(f.readline().split()[1])
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        out.append((status, f.read(length)))
    return out


def test_pipelined_http_publishes_are_answered_in_order(daemon, redis):
    a = node(daemon, redis.url, "a")
    s = subscribe(a, "/chat")
    posts = [("/chat", "h1"), ("/local", "l1"), ("/chat", "h2"), ("/user/zoe", "z1"),
             ("/chat", "h3")]
    raw = b"".join(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PTOK}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(data)}\r\n\r\n{data}".encode()
        for path, data in posts)
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as c:
        c.sendall(raw)
        got = responses(c, len(posts))
    assert [status for status, _ in got] == [200] * 5, got
    ids = [json.loads(body)["id"] for _, body in got]
    chat = [ids[0], ids[2], ids[4]]
    assert id_key(ids[0]) < id_key(ids[2]) < id_key(ids[3]) < id_key(ids[4])
    assert [e.id for e in s.wait_events(3)] == chat
    assert [e.data for e in s.events] == ["h1", "h2", "h3"]
