"""Channel templates end to end (SPEC 10): the daemon as a subprocess, streams over real
sockets, publishes over the control socket and HTTP POST, ssectl as a subprocess."""
import subprocess
import sys
import time

from conftest import TIMEOUT, env

PUB = "sixteen-bytes-ptok"

USER = f"""
[/chat]
[/user/*]
history = 10
idle = 300
max_channels = 3
session_event = true
publish_token = {PUB}
"""


def http(d, method, path, headers=(), body=b""):
    head = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close", *headers]
    if method == "POST":
        head.append(f"Content-Length: {len(body)}")
    raw = d.request(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    status = int(raw.split(b" ", 2)[1])
    return status, raw


def channels(d, template="/user/*"):
    answer = d.ctl({"cmd": "channels", "template": template})
    assert answer["ok"], answer
    return {c["path"]: c for c in answer["channels"]}


def ssectl(d, *args):
    return subprocess.run([sys.executable, "-m", "ssed.ctl", "-s", d.control, *args],
                          env=env(), capture_output=True, text=True, timeout=TIMEOUT)


def test_a_channel_is_made_on_subscribe_and_takes_control_and_http_publishes(daemon):
    d = daemon(USER)
    alice = d.stream("/user/alice?client=alice")
    assert alice.status == 200
    assert alice.wait_events(1)[0].type == "session"
    assert d.publish("/user/alice", "over control")["delivered"] == 1
    status, raw = http(d, "POST", "/user/alice", [f"Authorization: Bearer {PUB}"], b"over http")
    assert status == 200 and b'"delivered": 1' in raw
    assert d.publish("/user/alice", "just you", client="alice")["delivered"] == 1
    events = alice.wait_events(4)
    assert [e.data for e in events[1:]] == ["over control", "over http", "just you"]
    assert d.publish("/user/bob", "not alice's")["delivered"] == 0
    assert sorted(channels(d)) == ["/user/alice", "/user/bob"]
    # replay after the last id seen, on a new stream: only what came after
    again = d.stream("/user/alice", [f"Last-Event-ID: {events[1].id}"])
    assert [(e.type, e.data) for e in again.wait_events(2)][1:] == [("message", "over http")]
    alice.close(), again.close()


def test_clients_kick_list_channels_and_metrics_of_channels(daemon):
    d = daemon(USER)
    alice = d.stream("/user/alice?client=alice")
    alice.wait_events(1)
    d.publish("/user/bob", "x")
    assert [c["id"] for c in d.ctl({"cmd": "clients", "service": "/user/alice"})["clients"]] \
        == ["alice"]
    found = channels(d)
    assert found["/user/alice"]["clients"] == 1 and found["/user/alice"]["idle"] == 0
    assert found["/user/bob"]["clients"] == 0 and found["/user/bob"]["last_id"]
    assert d.ctl({"cmd": "list"})["services"] == [
        {"path": "/chat", "source": "none", "clients": 0, "last_id": None},
        {"path": "/user/*", "source": "none", "clients": 1, "last_id": None, "channels": 2}]
    status, raw = http(d, "GET", "/metrics")
    assert status == 200
    assert b'ssed_clients{service="/user/*"} 1' in raw
    assert b'ssed_events_published_total{service="/user/*"} 1' in raw
    assert b"/user/alice" not in raw and b"/user/bob" not in raw
    table = ssectl(d, "channels", "/user/*")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["PATH", "CLIENTS", "LAST_ID", "IDLE"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["/user/alice", "/user/bob"]
    listed = ssectl(d, "list").stdout.splitlines()
    assert listed[0].split() == ["PATH", "SOURCE", "CLIENTS", "LAST_ID", "CHANNELS"]
    assert listed[2].split() == ["/user/*", "none", "1", "-", "2"]
    assert d.ctl({"cmd": "kick", "service": "/user/alice", "client": "alice"})["closed"] == 1
    alice.wait_closed()
    assert d.ctl({"cmd": "stats"})["dropped"] == {"kicked": 1}


def test_bad_paths_are_404_and_make_no_channel(daemon):
    d = daemon(USER)
    for path in ("/user/", "/user//a", "/user/a/", "/user/..", "/user/./a", "/user/al%69ce",
                 "/user/a%2Fb", "/user/" + "a" * 251, "/users/a", "/user"):
        status, raw = http(d, "GET", path)
        assert status == 404, (path, raw)
    assert d.stream("/user/" + "a" * 250).status == 200      # 256 bytes: fine
    assert list(channels(d)) == ["/user/" + "a" * 250]
    status, _ = http(d, "GET", "/?service=/chat&service=/user/a%2520b")
    assert status == 404


def test_over_max_channels_subscribe_and_post_are_503_with_retry_after(daemon):
    d = daemon(USER)
    for name in ("a", "b", "c"):
        d.publish(f"/user/{name}", "x")
    status, raw = http(d, "GET", "/user/d")
    assert status == 503 and b"\r\nRetry-After: " in raw
    status, raw = http(d, "POST", "/user/d", [f"Authorization: Bearer {PUB}"], b"x")
    assert status == 503 and b"\r\nRetry-After: " in raw and b"max_channels (3)" in raw
    answer = d.ctl({"cmd": "publish", "service": "/user/d", "data": "x"})
    assert answer["ok"] is False and "max_channels (3)" in answer["error"]
    assert sorted(channels(d)) == ["/user/a", "/user/b", "/user/c"]
    assert d.ctl({"cmd": "stats"})["refused"].get("max_channels") == 2
    assert d.stream("/user/a").status == 200        # a channel that is there takes streams


def test_a_multiplexed_stream_of_channels_and_a_service(daemon):
    d = daemon(USER)
    s = d.stream("/?service=/user/a&service=/chat&service=/user/b")
    assert s.status == 200
    d.publish("/user/b", "b1")
    d.publish("/chat", "c1")
    d.publish("/user/a", "a1")
    assert [e.data for e in s.wait_events(4)[1:]] == ["b1", "c1", "a1"]
    last = s.events[2].id
    s.close()
    again = d.stream(f"/?service=/user/a&service=/chat&service=/user/b&lastEventId={last}")
    assert [(e.type, e.data) for e in again.wait_events(2)][1:] == [("message", "a1")]


def test_idle_channels_go_and_come_back_empty(daemon):
    d = daemon(USER.replace("idle = 300", "idle = 0.3"))
    d.publish("/user/a", "old")
    s = d.stream("/user/b")
    s.wait_events(1)
    deadline = time.monotonic() + TIMEOUT
    while "/user/a" in channels(d):
        assert time.monotonic() < deadline, "channel never went idle"
        time.sleep(0.05)
    assert list(channels(d)) == ["/user/b"]     # a subscriber keeps b
    fresh = d.stream("/user/a", ["Last-Event-ID: 0-0"])
    d.publish("/user/a", "new")
    events = fresh.wait_events(2)
    assert [e.data for e in events[1:]] == ["new"]      # "old" went with the channel


def test_reload_removing_a_template_closes_its_channels_streams(daemon):
    d = daemon(USER)
    a = d.stream("/user/a")
    c = d.stream("/chat")
    a.wait_events(1)
    d.ini.write_text(d.ini.read_text().split("[/user/*]")[0])
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] and "removed /user/*" in answer["changes"], answer
    a.wait_closed()
    assert d.publish("/chat", "still")["delivered"] == 1
    c.wait_events(1)
    assert http(d, "GET", "/user/a")[0] == 404


def test_bench_channels_runs_and_counts_right_at_a_small_size(tmp_path):
    """bench/channels.py's figures come from counts that are checked here (not its speed)."""
    import json
    import os
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "bench", "channels.py")
    out = subprocess.run([sys.executable, bench, "--channels", "300", "--subscribers", "40",
                          "--idle", "0.5"], env=env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["memory"]["channels_made"] == 300
    assert figures["memory"]["channels_after"] == 0
    fan = figures["fan"]
    assert fan["connected"] == fan["channels"] == fan["events_right"] == 40
    assert fan["streams_with_exactly_one"] == 40 and fan["events_wrong"] == 0
