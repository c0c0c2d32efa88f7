"""The control socket (SPEC section 5) against the daemon subprocess: every command in JSON and
in text, their effect on real streams, errors that leave the connection usable, oversized and
pipelined lines, reload, and the `--console` on standard input.
"""
import json
import os
import re
import select
import socket
import subprocess
import textwrap
import time

from conftest import TIMEOUT, EventParser, StreamClient

CHAT = textwrap.dedent("""
    [/chat]
    source = none

    [/other]
    source = none
""")


def text_fields(line):
    """`ok a=1 b=x` to {"a": "1", "b": "x"}; asserts the form (values that are JSON lists or
    objects may hold spaces)."""
    assert re.fullmatch(r"ok( [a-z_]+=\S.*?)*", line) and "\n" not in line, line
    keys = list(re.finditer(r" ([a-z_]+)=", line))
    ends = [m.start() for m in keys[1:]] + [len(line)]
    return {m[1]: line[m.end():end] for m, end in zip(keys, ends)}


def wait_until(stream, predicate, timeout=TIMEOUT):
    """Read `stream` until `predicate(events)` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate(stream.events):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up; events {stream.events!r}"
        stream.wait_events(len(stream.events) + 1, timeout=left)


def id_key(event_id):
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


# -- publish -------------------------------------------------------------------------------------

def test_publish_json_with_event_reaches_every_stream_of_the_service(daemon):
    d = daemon(CHAT)
    a, b = d.stream("/chat"), d.stream("/chat")
    other = d.stream("/other")
    answer = d.ctl({"cmd": "publish", "service": "/chat", "data": "hi\nall", "event": "msg",
                    "client": None})
    assert answer["ok"] is True and answer["delivered"] == 2
    assert re.fullmatch(r"\d+-\d+", answer["id"])
    for s in (a, b):
        [ev] = s.wait_events(1)
        assert (ev.id, ev.type, ev.data) == (answer["id"], "msg", "hi\nall")
    d.publish("/other", "for other only")
    assert other.wait_events(1)[0].data == "for other only"
    assert len(a.events) == 1


def test_publish_to_a_client_reaches_only_that_clients_streams_and_is_not_replayed(daemon):
    d = daemon(CHAT)
    a1, a2 = d.stream("/chat?client=alice"), d.stream("/chat?client=alice")
    b = d.stream("/chat?client=bob")
    first = d.publish("/chat", "to all")
    dm = d.ctl({"cmd": "publish", "service": "/chat", "data": "psst", "event": "dm",
                "client": "alice"})
    assert dm["ok"] and dm["delivered"] == 2
    for s in (a1, a2):
        assert [(e.type, e.data, e.id) for e in s.wait_events(2)][1] == ("dm", "psst", dm["id"])
    d.publish("/chat", "to all again")
    assert [e.data for e in b.wait_events(2)] == ["to all", "to all again"]
    late = d.stream("/chat", [f"Last-Event-ID: {first['id']}"])
    assert [e.data for e in late.wait_events(1)] == ["to all again"]
    nobody = d.ctl({"cmd": "publish", "service": "/chat", "data": "x", "client": "carol"})
    assert nobody["ok"] and nobody["delivered"] == 0 and nobody["no_such_client"] is True
    with d.control_conn() as c:
        said = c.request("publish /chat --client carol x")
        assert re.fullmatch(r"ok id=\d+-\d+ delivered=0 \(no such client now\)", said), said
        assert c.request("publish /chat --client bob x").endswith(" delivered=1")


def test_publish_text_form_with_event_and_client_answers_one_ok_line(daemon):
    d = daemon(CHAT)
    a = d.stream("/chat?client=a")
    b = d.stream("/chat?client=b")
    with d.control_conn() as c:
        fields = text_fields(c.request("publish /chat -e greet --client b hello  there all"))
        assert fields["delivered"] == "1" and re.fullmatch(r"\d+-\d+", fields["id"])
        assert text_fields(c.request("publish /chat hi all"))["delivered"] == "2"
    ev = b.wait_events(1)[0]
    assert (ev.type, ev.data, ev.id) == ("greet", "hello  there all", fields["id"])
    assert [(e.type, e.data) for e in a.wait_events(1)] == [("message", "hi all")]


def test_json_service_refuses_data_that_is_not_json(daemon):
    d = daemon("""
        [/j]
        json = true
    """)
    s = d.stream("/j")
    with d.control_conn() as c:
        answer = c.request({"cmd": "publish", "service": "/j", "data": "not json"})
        assert answer["ok"] is False and "JSON" in answer["error"]
        assert c.request("publish /j {oops").startswith("error: ")
        assert c.request({"cmd": "publish", "service": "/j", "data": '{"a": [1, 2]}'})["ok"]
        # DATA that starts with a quote is one shell-quoted word: a JSON string is quoted
        # once more to go as typed.
        assert c.request('publish /j "text in quotes"').startswith("error: /j takes JSON")
        assert text_fields(c.request("""publish /j '"text in quotes"'"""))["delivered"] == "1"
    assert [e.data for e in s.wait_events(2)] == ['{"a": [1, 2]}', '"text in quotes"']
    assert d.ctl({"cmd": "stats"})["events_published"] == 2


# -- list, clients, kick ------------------------------------------------------------------------

def test_list_names_every_service_with_source_clients_and_last_id(daemon):
    d = daemon(CHAT + textwrap.dedent("""
        [/t]
        source = time
        interval = 60
        format = unix
    """))
    s = d.stream("/chat")
    published = d.publish("/chat", "one")
    services = {svc["path"]: svc for svc in d.ctl({"cmd": "list"})["services"]}
    assert set(services) == {"/chat", "/other", "/t"}
    assert services["/chat"] == {"path": "/chat", "source": "none", "clients": 1,
                                 "last_id": published["id"]}
    assert services["/other"]["last_id"] is None and services["/other"]["clients"] == 0
    assert services["/t"]["source"] == "time" and services["/t"]["last_id"] is not None
    with d.control_conn() as c:
        fields = text_fields(c.request("list"))
    assert json.loads(fields["services"]) == list(d.ctl({"cmd": "list"})["services"])
    s.close()


def test_clients_lists_each_stream_with_address_since_and_bytes(daemon):
    d = daemon(CHAT)
    before = time.time()
    a = d.stream("/chat?client=alice")
    b = d.stream("/chat?client=bob")
    d.publish("/chat", "x" * 1000)
    a.wait_events(1)
    b.wait_events(1)
    answer = d.ctl({"cmd": "clients", "service": "/chat"})
    assert answer["ok"]
    clients = {c["id"]: c for c in answer["clients"]}
    assert set(clients) == {"alice", "bob"}
    for c in clients.values():
        assert set(c) >= {"id", "address", "since", "bytes_sent", "bytes_queued"}
        assert c["address"] == "127.0.0.1"
        assert before - 1 <= c["since"] <= time.time() + 1
        assert c["bytes_sent"] >= 1000 and c["bytes_queued"] == 0
    assert d.ctl({"cmd": "clients", "service": "/other"}) == {"ok": True, "clients": []}
    with d.control_conn() as c:
        listed = json.loads(text_fields(c.request("clients /chat"))["clients"])
    assert {c["id"] for c in listed} == {"alice", "bob"}


def test_kick_closes_the_clients_streams_and_counts_them(daemon):
    d = daemon(CHAT)
    k1, k2 = d.stream("/chat?client=k"), d.stream("/chat?client=k")
    stay = d.stream("/chat?client=stay")
    assert d.ctl({"cmd": "kick", "service": "/chat", "client": "k"}) == {"ok": True, "closed": 2}
    k1.wait_closed()
    k2.wait_closed()
    with d.control_conn() as c:
        assert c.request("kick /chat stay") == "ok closed=1"
        assert c.request("kick /chat nobody") == "ok closed=0 (no such client now)"
    stay.wait_closed()
    assert d.ctl({"cmd": "stats"})["clients"] == 0


# -- bans --------------------------------------------------------------------------------------

class StreamFrom(StreamClient):
    """A StreamClient whose connection comes from another loopback address."""

    def __init__(self, port, source, target):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT,
                                             source_address=(source, 0))
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.parser = EventParser()
        self.events = []
        self.status, self.headers, rest = self._head()
        self.body = bytearray(rest)
        self.events.extend(self.parser.feed(rest))


def status_of(d, target):
    s = d.stream(target)
    s.close()
    return s.status


def test_ban_closes_the_addresses_streams_and_refuses_it_with_403_until_it_ends(daemon):
    d = daemon(CHAT + textwrap.dedent("""
        [/clock]
        source = time
        interval = 0.1
        format = unix
    """))
    mine = [d.stream("/chat"), d.stream("/other")]
    # 127.0.0.2 is another address: untouched by the ban, it watches the daemon's clock.
    witness = StreamFrom(d.port, "127.0.0.2", "/clock")
    assert witness.status == 200
    with d.control_conn() as c:
        assert c.request("ban 127.0.0.1 1") == "ok closed=2"
        for s in mine:
            s.wait_closed()
        assert status_of(d, "/chat") == 403
        [ban] = c.request({"cmd": "bans"})["bans"]
    assert ban["ip"] in ("127.0.0.1", "127.0.0.1/32")
    assert time.time() < ban["until"] <= time.time() + 1.5
    # Wait (bounded) until the daemon's own clock has passed the ban's end.
    wait_until(witness, lambda evs: evs and id_key(evs[-1].id)[0] > ban["until"] * 1000 + 50)
    s = d.stream("/chat")
    assert s.status == 200
    assert d.ctl({"cmd": "bans"})["bans"] == []
    assert witness.read_some() and d.proc.poll() is None


def test_unban_lifts_a_ban_and_bans_lists_what_is_left(daemon):
    d = daemon(CHAT)
    with d.control_conn() as c:
        assert c.request({"cmd": "ban", "ip": "127.0.0.1", "seconds": 3600}) == {
            "ok": True, "closed": 0}
        assert c.request({"cmd": "ban", "ip": "10.0.0.0/8"})["ok"]
        assert status_of(d, "/chat") == 403
        bans = {b["ip"]: b["until"] for b in c.request({"cmd": "bans"})["bans"]}
        assert len(bans) == 2 and "10.0.0.0/8" in bans
        assert all(until > time.time() + 3000 for until in bans.values())
        fields = text_fields(c.request("unban 127.0.0.1"))
        assert fields["closed"] == "0" and fields.get("removed", "1") == "1"
        assert status_of(d, "/chat") == 200
        assert [b["ip"] for b in c.request({"cmd": "bans"})["bans"]] == ["10.0.0.0/8"]
        assert json.loads(text_fields(c.request("bans"))["bans"])[0]["ip"] == "10.0.0.0/8"


# -- stats ------------------------------------------------------------------------------------

def test_stats_has_every_counter_with_sane_values(daemon):
    d = daemon(CHAT)
    streams = [d.stream("/chat?client=s1"), d.stream("/chat?client=s2"), d.stream("/other")]
    for i in range(3):
        d.publish("/chat", f"event {i}")
    d.publish("/other", "one more")
    for s, n in zip(streams, (3, 3, 1)):
        s.wait_events(n)
    assert d.ctl({"cmd": "kick", "service": "/chat", "client": "s2"})["closed"] == 1
    streams[1].wait_closed()
    stats = d.ctl({"cmd": "stats"})
    assert stats["ok"] is True
    for key in ("uptime", "clients", "events_published", "events_delivered", "bytes_sent",
                "dropped", "rss_bytes"):
        assert key in stats, key
    assert 0 <= stats["uptime"] < 60
    assert stats["clients"] == 2
    assert stats["events_published"] == 4
    assert stats["events_delivered"] == 7
    assert stats["bytes_sent"] >= sum(len(s.body) for s in streams)
    dropped = stats["dropped"]
    assert (sum(dropped.values()) if isinstance(dropped, dict) else dropped) == 1
    assert isinstance(stats["rss_bytes"], int) and stats["rss_bytes"] > 1 << 20
    with d.control_conn() as c:
        fields = text_fields(c.request("stats"))
    assert fields["clients"] == "2" and fields["events_published"] == "4"
    assert float(fields["uptime"]) >= stats["uptime"]


# -- admin ------------------------------------------------------------------------------------

def test_admin_on_a_service_without_an_admin_hook_is_an_error(daemon):
    d = daemon(CHAT)
    with d.control_conn() as c:
        answer = c.request({"cmd": "admin", "service": "/chat", "args": ["x"]})
        assert answer["ok"] is False and "/chat" in answer["error"]
        assert c.request("/chat x").startswith("error: ")
        assert "no service" in c.request({"cmd": "admin", "service": "/nope", "args": []})[
            "error"]
        assert c.request("list").startswith("ok services=")


# -- errors, long lines, pipelining -----------------------------------------------------------

JSON_ERRORS = [
    (b"{bad json", "JSON"),
    (b'{"cmd": "frobnicate"}', "frobnicate"),
    (b"{}", "cmd"),
    (b'{"cmd": 5}', "cmd"),
    (b'{"cmd": "publish", "data": "x"}', "service"),
    (b'{"cmd": "publish", "service": "/chat"}', "data"),
    (b'{"cmd": "publish", "service": "/chat", "data": 5}', "data"),
    (b'{"cmd": "publish", "service": "/chat", "data": "x", "event": 7}', "event"),
    (b'{"cmd": "publish", "service": "/nope", "data": "x"}', "/nope"),
    (b'{"cmd": "publish", "service": "/chat", "data": "x", "event": "a\\nb"}', "LF"),
    (b'{"cmd": "publish", "service": "/chat", "data": "x", "event": "a\\rb"}', "CR"),
    (b'{"cmd": "publish", "service": "/chat", "data": "x", "event": "a\\u0000b"}', "NUL"),
    (b'{"cmd": "publish", "service": "/chat", "data": "x", "client": "bad id!"}', "client"),
    (b'{"cmd": "kick", "service": "/chat"}', "client"),
    (b'{"cmd": "clients", "service": "/nope"}', "/nope"),
    (b'{"cmd": "ban", "ip": "not-an-ip"}', "not-an-ip"),
    (b'{"cmd": "ban", "ip": "10.1.2.3", "seconds": "10"}', "seconds"),
    (b'{"cmd": "ban", "ip": "10.1.2.3", "seconds": -5}', "seconds"),
    (b'{"cmd": "admin", "service": "/chat", "args": "x"}', "args"),
]

TEXT_ERRORS = [
    (b"frobnicate now", "frobnicate"),
    (b"kick /chat", "client"),
    (b"clients /chat extra words", "too many"),
    (b"ban 10.1.2.3 soon", "soon"),
    (b"ban nonsense", "nonsense"),
    (b"publish /nope hi", "/nope"),
    (b"\xff\xfe", "UTF-8"),
    (b'["list"]', "unknown command"),       # only a line starting with { is JSON
]


def test_errors_name_the_problem_change_nothing_and_leave_the_connection_usable(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat")
    with d.control_conn() as c:
        for line, named in JSON_ERRORS:
            c.send_line(line + b"\n")
            answer = json.loads(c.read_line())
            assert answer["ok"] is False and named in answer["error"], (line, answer)
            assert c.request({"cmd": "list"})["ok"], line
        for line, named in TEXT_ERRORS:
            c.send_line(line + b"\n")
            answer = c.read_line().rstrip("\n")
            assert answer.startswith("error: ") and named in answer, (line, answer)
            assert "\n" not in answer
            assert c.request("list").startswith("ok services="), line
        assert c.request({"cmd": "bans"})["bans"] == []
    assert d.ctl({"cmd": "stats"})["events_published"] == 0
    d.publish("/chat", "after the errors")
    assert [e.data for e in s.wait_events(1)] == ["after the errors"]


def test_a_line_over_1_mib_gets_an_error_and_the_next_line_is_answered(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat")
    big = b'{"cmd": "publish", "service": "/chat", "data": "' + b"x" * (1 << 20) + b'"}\n'
    with d.control_conn() as c:
        c.sock.sendall(big + b'{"cmd": "stats"}\n')
        answer = json.loads(c.read_line())
        assert answer["ok"] is False and "over" in answer["error"]
        assert "uptime" in json.loads(c.read_line())        # the line after it is answered
        assert c.request({"cmd": "list"})["ok"]             # and so is a later one
        c.sock.sendall(b"publish /chat " + b"y" * (3 << 19) + b"\nstats\n")
        assert c.read_line().startswith("error: ")
        assert c.read_line().startswith("ok uptime=")
    assert d.ctl({"cmd": "stats"})["events_published"] == 0
    d.publish("/chat", "small")
    assert s.wait_events(1)[0].data == "small"


def test_a_line_just_over_1_mib_is_refused_too(daemon):
    d = daemon(CHAT)
    head = b'{"cmd": "publish", "service": "/chat", "data": "'
    for extra in (1, 100, 5000):
        data = b"z" * ((1 << 20) - len(head) - 2 + extra)
        line = head + data + b'"}'
        assert len(line) == (1 << 20) + extra
        with d.control_conn() as c:
            c.sock.sendall(line + b"\n" + b'{"cmd": "list"}\n')
            answer = json.loads(c.read_line())
            assert answer["ok"] is False and "over" in answer["error"], extra
            assert json.loads(c.read_line())["ok"]
    assert d.ctl({"cmd": "stats"})["events_published"] == 0


def test_pipelined_commands_in_one_write_are_all_answered_in_order(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat")
    lines = []
    for i in range(60):
        if i % 3 == 0:
            lines.append(json.dumps({"cmd": "publish", "service": "/chat", "data": f"m{i}"}))
        elif i % 3 == 1:
            lines.append(f"publish /chat m{i}")
        else:
            lines.append("nope" if i % 2 else '{"cmd": "list"}')
    with d.control_conn() as c:
        c.sock.sendall(("\n".join(lines) + "\n").encode())
        answers = [c.read_line().rstrip("\n") for _ in lines]
    ids = []
    for line, answer in zip(lines, answers):
        if line.startswith("{"):
            parsed = json.loads(answer)
            assert parsed["ok"]
            if "id" in parsed:
                ids.append(parsed["id"])
            else:
                assert "services" in parsed
        elif line == "nope":
            assert answer.startswith("error: ")
        else:
            ids.append(text_fields(answer)["id"])
    assert len(ids) == 40
    assert ids == sorted(ids, key=id_key) and len(set(ids)) == 40
    published = [f"m{i}" for i in range(60) if i % 3 != 2]
    assert [(e.id, e.data) for e in s.wait_events(40)] == list(zip(ids, published))


def test_a_long_pipelined_batch_is_answered_at_once_though_no_timer_is_due(daemon):
    """Past the 64 lines a turn answers, the loop must come round again at once (select
    timeout 0 while lines wait), not at its next timer: here none for 60 s."""
    d = daemon("[/quiet]\nsource = none\n", top="keepalive = 60\n")
    with d.control_conn() as c:
        start = time.monotonic()
        c.sock.sendall(b"stats\n" * 1000)
        answers = [c.read_line() for _ in range(1000)]
        took = time.monotonic() - start
    assert all(a.startswith("ok uptime=") for a in answers)
    assert took < 5.0, f"1000 pipelined stats took {took:.1f} s"


# -- reload -------------------------------------------------------------------------------------

RELOAD_BEFORE = textwrap.dedent("""
    [/keep]
    source = none

    [/gone]
    source = none

    [/tick]
    source = time
    interval = 0.5
    format = unix
""")

RELOAD_AFTER = textwrap.dedent("""
    [/keep]
    source = none

    [/tick]
    source = time
    interval = 0.05
    format = unix

    [/new]
    source = none
""")


def rewrite(d, body):
    d.ini.write_text("[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n\n"
                     + textwrap.dedent(body))


def test_reload_adds_removes_and_changes_services_and_keeps_other_streams(daemon):
    d = daemon(RELOAD_BEFORE)
    keep, gone, tick = d.stream("/keep"), d.stream("/gone"), d.stream("/tick")
    before = d.publish("/keep", "before")
    rewrite(d, RELOAD_AFTER)
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] is True, answer
    changes = answer["changes"]
    assert "removed /gone" in changes and "added /new" in changes
    assert any(c.startswith("changed /tick") and "interval" in c for c in changes), changes
    assert not any("/keep" in c for c in changes), changes
    gone.wait_closed()
    after = d.publish("/keep", "after")
    assert after["delivered"] == 1
    assert [e.data for e in keep.wait_events(2)] == ["before", "after"]
    # The service's history survived the reload.
    replay = d.stream("/keep", [f"Last-Event-ID: 0-0"])
    assert [e.id for e in replay.wait_events(2)] == [before["id"], after["id"]]
    new = d.stream("/new")
    assert new.status == 200 and d.publish("/new", "hello")["delivered"] == 1
    assert d.ctl({"cmd": "publish", "service": "/gone", "data": "x"})["ok"] is False
    # /tick's stream stayed open and now ticks at the new interval (0.5 s would time out).
    seen = len(tick.events)
    events = tick.wait_events(seen + 5, timeout=1.5)[seen:]
    gaps = [id_key(b.id)[0] - id_key(a.id)[0] for a, b in zip(events, events[1:])]
    assert all(gap < 300 for gap in gaps), gaps
    assert {s["path"] for s in d.ctl({"cmd": "list"})["services"]} == {"/keep", "/tick", "/new"}
    d.wait_log(r"reloaded: .*added /new")


def test_reload_with_an_invalid_config_reports_file_line_and_changes_nothing(daemon):
    d = daemon(RELOAD_BEFORE)
    keep = d.stream("/keep")
    gone = d.stream("/gone")
    rewrite(d, RELOAD_AFTER + "\n[/bad]\nsource = time\nintervall = 2\n")
    line = d.ini.read_text().split("\n").index("intervall = 2") + 1
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] is False
    assert f"{d.ini}:{line}:" in answer["error"]
    assert any(e.startswith(f"{d.ini}:{line}: ") and "intervall" in e
               for e in answer["errors"]), answer
    with d.control_conn() as c:
        text = c.request("reload")
        assert text.startswith("error: ") and f"{d.ini}:{line}:" in text
    assert {s["path"] for s in d.ctl({"cmd": "list"})["services"]} == {"/keep", "/gone",
                                                                      "/tick"}
    assert status_of(d, "/new") == 404
    assert d.publish("/gone", "still here")["delivered"] == 1
    assert d.publish("/keep", "still here")["delivered"] == 1
    assert gone.wait_events(1)[0].data == keep.wait_events(1)[0].data == "still here"
    d.wait_log(r"reload refused")


def test_reload_text_form_lists_the_changes_on_one_line(daemon):
    d = daemon(RELOAD_BEFORE)
    rewrite(d, RELOAD_BEFORE + "\n[/more]\n")
    with d.control_conn() as c:
        fields = text_fields(c.request("reload"))
        assert json.loads(fields["changes"]) == ["added /more"]
        assert text_fields(c.request("reload")) == {"changes": "[]"}


# -- the console --------------------------------------------------------------------------------

def read_stdout_line(d, timeout=TIMEOUT):
    """One line of the daemon's stdout, bounded."""
    fd = d.proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = d.__dict__.setdefault("stdout_buf", bytearray())
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no line on stdout: {bytes(buf)!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"stdout closed: {bytes(buf)!r}"
            buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def test_console_answers_commands_from_stdin_on_stdout(daemon):
    d = daemon(CHAT, args=["--console"], stdin=subprocess.PIPE)
    s = d.stream("/chat")

    def say(line):
        d.proc.stdin.write(line.encode() + b"\n")
        d.proc.stdin.flush()
        return read_stdout_line(d)

    fields = text_fields(say("publish /chat hello from the console"))
    assert fields["delivered"] == "1"
    ev = s.wait_events(1)[0]
    assert (ev.id, ev.data) == (fields["id"], "hello from the console")
    assert text_fields(say("stats"))["clients"] == "1"
    assert say("frobnicate").startswith("error: ")
    assert json.loads(say('{"cmd": "list"}'))["ok"] is True
    d.proc.stdin.close()
    d.wait_log(r"console")
    assert d.ctl({"cmd": "stats"})["ok"] and d.proc.poll() is None


def test_console_answers_a_pasted_batch_longer_than_one_turn_in_order(daemon):
    d = daemon(CHAT, args=["--console"], stdin=subprocess.PIPE)
    s = d.stream("/chat")
    d.proc.stdin.write(b"".join(b"publish /chat line%d\n" % i for i in range(200)))
    d.proc.stdin.flush()
    ids = [text_fields(read_stdout_line(d))["id"] for _ in range(200)]
    assert [(e.id, e.data) for e in s.wait_events(200)] == [
        (id_, f"line{i}") for i, id_ in enumerate(ids)]
    assert text_fields(say_stats(d))["clients"] == "1"     # and it reads stdin again after
    d.proc.stdin.close()
    d.wait_log(r"console: end of input")


def say_stats(d):
    d.proc.stdin.write(b"stats\n")
    d.proc.stdin.flush()
    return read_stdout_line(d)
