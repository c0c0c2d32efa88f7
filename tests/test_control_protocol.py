"""control: the line protocol (SPEC section 5) without a socket.

`parse_text` and `validate` with tables; `handle_line` against a real Hub with a fake io
(as in test_hub) for the exact JSON and text answers; `render_text`; and `LineSplitter`
fed whole, byte by byte and split at every position.
"""
import json

import pytest

from ssed import config as configmod
from ssed.control import CommandError, LineSplitter, handle_line, parse_text, render_text, validate
from ssed.hub import Hub
from ssed.service import Service

from orders import Orders

T0 = 1000.0
MS = int(T0 * 1000)


# -- parse_text -----------------------------------------------------------------------------

@pytest.mark.parametrize("line, request_", [
    ("publish /chat hi all", {"cmd": "publish", "service": "/chat", "data": "hi all"}),
    ("publish /chat  hi   all  ", {"cmd": "publish", "service": "/chat", "data": "hi   all"}),
    ("publish /chat -e msg hi  there",
     {"cmd": "publish", "service": "/chat", "event": "msg", "data": "hi  there"}),
    ("publish /chat --event msg hi", {"cmd": "publish", "service": "/chat", "event": "msg", "data": "hi"}),
    ("publish /chat --client bob hello",
     {"cmd": "publish", "service": "/chat", "client": "bob", "data": "hello"}),
    ("publish /chat --client bob -e x  a -e b",
     {"cmd": "publish", "service": "/chat", "client": "bob", "event": "x", "data": "a -e b"}),
    ("publish /chat", {"cmd": "publish", "service": "/chat", "data": ""}),
    ("publish", {"cmd": "publish", "service": None, "data": ""}),
    ("list", {"cmd": "list"}),
    ("  list  ", {"cmd": "list"}),
    ("clients /chat", {"cmd": "clients", "service": "/chat"}),
    ("kick /chat bob", {"cmd": "kick", "service": "/chat", "client": "bob"}),
    ("ban 1.2.3.4", {"cmd": "ban", "ip": "1.2.3.4"}),
    ("ban 10.0.0.0/8 60", {"cmd": "ban", "ip": "10.0.0.0/8", "seconds": 60}),
    ("ban ::1 1.5", {"cmd": "ban", "ip": "::1", "seconds": 1.5}),
    ("unban 1.2.3.4", {"cmd": "unban", "ip": "1.2.3.4"}),
    ("bans", {"cmd": "bans"}),
    ("stats", {"cmd": "stats"}),
    ("reload", {"cmd": "reload"}),
    ("help", {"cmd": "help"}),
    ("admin /chat a b", {"cmd": "admin", "service": "/chat", "args": ["a", "b"]}),
    ("admin", {"cmd": "admin", "service": None, "args": []}),
    ("/chat say hi  there", {"cmd": "admin", "service": "/chat", "args": ["say", "hi", "there"]}),
    ("/chat", {"cmd": "admin", "service": "/chat", "args": []}),
    ("frobnicate now", {"cmd": "frobnicate"}),
    # Words are read as a shell reads them ...
    ("publish /chat -e 'a b' x", {"cmd": "publish", "service": "/chat", "event": "a b", "data": "x"}),
    ("""publish '/chat' --client "c 1" -e "" x""",
     {"cmd": "publish", "service": "/chat", "client": "c 1", "event": "", "data": "x"}),
    ("publish /chat -e a\\ b x", {"cmd": "publish", "service": "/chat", "event": "a b", "data": "x"}),
    ("""kick /chat "bo"'b'\\ 1""", {"cmd": "kick", "service": "/chat", "client": "bob 1"}),
    ("/chat say 'hi there' x\\ y \t z", {"cmd": "admin", "service": "/chat",
                                          "args": ["say", "hi there", "x y", "z"]}),
    ("admin /chat '' \"a\\\"b\\\\c\\n\"", {"cmd": "admin", "service": "/chat",
                                           "args": ["", 'a"b\\c\\n']}),
    ("ban 1.2.3.4 '60'", {"cmd": "ban", "ip": "1.2.3.4", "seconds": 60}),
    ("'list'", {"cmd": "list"}),
    # ... except publish's DATA: the rest of the line as typed ...
    ("publish /chat it's 5 o'clock", {"cmd": "publish", "service": "/chat", "data": "it's 5 o'clock"}),
    ("""publish /chat {"text": "a  'b'"}""",
     {"cmd": "publish", "service": "/chat", "data": """{"text": "a  'b'"}"""}),
    ("publish /chat x 'y z' \\", {"cmd": "publish", "service": "/chat", "data": "x 'y z' \\"}),
    # ... unless it starts with a quote: then it is one quoted word.
    ("publish /chat '  two spaces'", {"cmd": "publish", "service": "/chat", "data": "  two spaces"}),
    ("""publish /chat "it's" """, {"cmd": "publish", "service": "/chat", "data": "it's"}),
    ("publish /chat '-e'", {"cmd": "publish", "service": "/chat", "data": "-e"}),
    ("publish /chat ''", {"cmd": "publish", "service": "/chat", "data": ""}),
    ("""publish /chat '"a JSON string"'""",
     {"cmd": "publish", "service": "/chat", "data": '"a JSON string"'}),
])
def test_parse_text_gives_the_request_its_json_form_would_be(line, request_):
    assert parse_text(line) == request_


@pytest.mark.parametrize("line, message", [
    ("ban 1.2.3.4 soon", "not a number: 'soon'"),
    ("ban 1.2.3.4 1e3", "not a number"),
    ("list everything", "list: too many arguments"),
    ("kick /chat bob alice", "kick: too many arguments (usage: kick SERVICE CLIENT)"),
    ("ban 1.2.3.4 60 70", "ban: too many arguments"),
    ("kick /chat 'bob", "kick: no closing '"),
    ('publish /chat -e "a b', 'publish: no closing "'),
    ("publish '/chat x", "publish: no closing '"),
    ("publish /chat -e", "publish: -e needs a value"),
    ("publish /chat --client ", "publish: --client needs a value"),
    ("publish /chat 'a b' c", "publish: text after the quoted DATA"),
    ("publish /chat 'unbalanced", "publish: no closing '"),
    ("/chat say x\\", "/chat: nothing after the final \\ to escape"),
    ("'list", "command: no closing '"),
])
def test_parse_text_refuses_malformed_lines(line, message):
    with pytest.raises(CommandError) as info:
        parse_text(line)
    assert message in str(info.value)


# -- validate -------------------------------------------------------------------------------

@pytest.mark.parametrize("request_, message", [
    ({}, 'missing "cmd"'),
    ({"cmd": 5}, 'missing "cmd"'),
    ({"cmd": None}, 'missing "cmd"'),
    ({"cmd": "nope"}, "unknown command 'nope' (try: help)"),
    ({"cmd": ""}, "unknown command ''"),
    ({"cmd": "publish", "data": "x"}, "publish: missing service"),
    ({"cmd": "publish", "service": None, "data": "x"}, "publish: missing service"),
    ({"cmd": "publish", "service": "/a"}, "publish: missing data"),
    ({"cmd": "publish", "service": 5, "data": "x"}, "publish: service must be a string"),
    ({"cmd": "publish", "service": "/a", "data": ["x"]}, "publish: data must be a string"),
    ({"cmd": "publish", "service": "/a", "data": "x", "event": 5},
     "publish: event must be a string or null"),
    ({"cmd": "publish", "service": "/a", "data": "x", "client": True},
     "publish: client must be a string or null"),
    ({"cmd": "clients"}, "clients: missing service"),
    ({"cmd": "kick", "service": "/a", "client": None}, "kick: missing client"),
    ({"cmd": "ban"}, "ban: missing ip"),
    ({"cmd": "ban", "ip": "1.2.3.4", "seconds": True}, "ban: seconds must be a number"),
    ({"cmd": "ban", "ip": "1.2.3.4", "seconds": "60"}, "ban: seconds must be a number"),
    ({"cmd": "ban", "ip": 1234}, "ban: ip must be a string"),
    ({"cmd": "admin", "service": "/a", "args": "x y"}, "admin: args must be a list"),
    ({"cmd": "admin", "service": "/a", "args": ["x", 1]}, "admin: args must be a list of strings"),
    ({"cmd": "admin", "service": "/a", "args": [None]}, "admin: args must be a list of strings"),
    ({"cmd": "admin", "service": "/a"}, "admin: missing args"),
])
def test_validate_names_what_is_wrong(request_, message):
    with pytest.raises(CommandError) as info:
        validate(request_)
    assert message in str(info.value)


@pytest.mark.parametrize("request_", [
    {"cmd": "publish", "service": "/a", "data": ""},
    {"cmd": "publish", "service": "/a", "data": "x", "event": None, "client": None},
    {"cmd": "ban", "ip": "1.2.3.4", "seconds": 1.5},
    {"cmd": "ban", "ip": "1.2.3.4"},
    {"cmd": "admin", "service": "/a", "args": []},
    {"cmd": "list", "extra": "ignored"},
])
def test_validate_accepts_well_formed_requests(request_):
    validate(request_)


# -- handle_line against a real hub ----------------------------------------------------------

class Chatty(Service):
    def on_admin(self, args):
        if args == ["fail"]:
            raise RuntimeError("broken")
        if args == ["object"]:
            return object.__new__(Chatty.Opaque)
        return {"args": args, "clients": len(self.clients)}

    class Opaque:
        def __repr__(self):
            return "<opaque>"

        __str__ = __repr__


class FakeDaemon:
    def __init__(self):
        self.fail = False

    def reload(self):
        if self.fail:
            raise CommandError("config not valid, nothing changed: x.ini:3: bad",
                               errors=["x.ini:3: bad", "x.ini:4: worse"])
        return ["added /new"]

    def rss(self):
        return 4096


@pytest.fixture
def rig(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ctlplugins", sys.modules[__name__])
    cfg = configmod.parse("[ssed]\nretry = 0\n[/chat]\n[/svc]\nclass = ctlplugins:Chatty\n"
                          "[/json]\njson = true\n", "test.ini")
    hub = Hub(cfg, lambda level, text: None, now=T0)
    orders = Orders(hub)
    hub.start()
    daemon = FakeDaemon()

    def ask(line):
        answer, request = handle_line(line, hub, daemon)
        orders.take_orders()        # as the loop does after each line
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1
        return answer.decode()[:-1]

    ask.hub, ask.orders, ask.daemon = hub, orders, daemon
    return ask


def subscribe(hub, path, client_id, address="127.0.0.1"):
    client, _ = hub.subscribe([path], client_id, address, None, None)
    return client


def test_json_publish_answers_json_with_the_id_and_delivered_count(rig):
    client = subscribe(rig.hub, "/chat", "bob")          # its priming id takes MS-0
    answer = rig('{"cmd":"publish","service":"/chat","data":"hi\\nall","event":"msg"}')
    assert answer == '{"ok":true,"id":"%d-1","delivered":1}' % MS
    assert rig.orders.sent[client] == [b"id: %d-1\nevent: msg\ndata: hi\ndata: all\n\n" % MS]


def test_text_publish_answers_one_text_line(rig):
    subscribe(rig.hub, "/chat", "bob")
    assert rig("publish /chat -e msg hi  all") == "ok id=%d-1 delivered=1" % MS
    assert rig.hub.channels["/chat"].history.since(None)[0].data == "hi  all"


def test_publish_to_one_client(rig):
    alice = subscribe(rig.hub, "/chat", "alice")
    bob = subscribe(rig.hub, "/chat", "bob")
    assert rig("publish /chat --client alice psst").endswith("delivered=1")
    assert len(rig.orders.sent[alice]) == 1 and bob not in rig.orders.sent


def test_publish_to_or_kick_of_a_client_with_no_stream_succeeds_and_says_so(rig):
    subscribe(rig.hub, "/chat", "alice")
    subscribe(rig.hub, "/svc", "ghost")         # on another service: not there for /chat
    assert rig("publish /chat --client ghost boo") == (
        "ok id=%d-2 delivered=0 (no such client now)" % MS)
    assert json.loads(rig('{"cmd":"publish","service":"/chat","data":"x","client":"ghost"}')) == {
        "ok": True, "id": "%d-3" % MS, "delivered": 0, "no_such_client": True}
    assert rig("kick /chat ghost") == "ok closed=0 (no such client now)"
    assert json.loads(rig('{"cmd":"kick","service":"/chat","client":"ghost"}')) == {
        "ok": True, "closed": 0, "no_such_client": True}
    # No note where the client is there, nor for a broadcast that reached no one.
    assert rig("publish /chat --client alice hi") == "ok id=%d-4 delivered=1" % MS
    assert rig("publish /json {}") == "ok id=%d-5 delivered=0" % MS
    assert rig("kick /chat alice") == "ok closed=1"


def test_publish_with_a_bad_client_id_is_refused(rig):
    assert rig('{"cmd":"publish","service":"/chat","data":"x","client":"a b"}') == (
        '{"ok":false,"error":"client must be 1-64 of A-Za-z0-9._:-"}')
    assert rig.hub.stats["events_published"] == 0


@pytest.mark.parametrize("line, answer", [
    ('{"cmd":"publish","service":"/nope","data":"x"}', '{"ok":false,"error":"no service /nope"}'),
    ("publish /nope x", "error: no service /nope"),
    ('{"cmd":"frob"}', '{"ok":false,"error":"unknown command \'frob\' (try: help)"}'),
    ("frob", "error: unknown command 'frob' (try: help)"),
    ('{"cmd":"publish","service":"/chat","data":"x","event":"a\\nb"}',
     '{"ok":false,"error":"event type must not contain LF"}'),
    ('{"cmd":"publish","service":"/json","data":"{"}', None),
    ("ban 1.2.3.4 soon", "error: not a number: 'soon'"),
    ('{"cmd":"ban","ip":"1.2.3.4","seconds":0}', '{"ok":false,"error":"seconds must be a finite number > 0"}'),
    ('{"cmd":"ban","ip":"1.2.3.4","seconds":-5}', '{"ok":false,"error":"seconds must be a finite number > 0"}'),
    ('{"cmd":"ban","ip":"1.2.3.4","seconds":NaN}', '{"ok":false,"error":"seconds must be a finite number > 0"}'),
    ('{"cmd":"ban","ip":"1.2.3.4","seconds":Infinity}',
     '{"ok":false,"error":"seconds must be a finite number > 0"}'),
    ('{"cmd":"ban","ip":"1.2.3.4","seconds":1e999}',
     '{"ok":false,"error":"seconds must be a finite number > 0"}'),
    ('{"cmd":"ban","ip":"1.2.3.4","seconds":1%s}' % ("0" * 400),
     '{"ok":false,"error":"seconds must be a finite number > 0"}'),
    ("ban 1.2.3.4 1%s" % ("0" * 400), "error: seconds must be a finite number > 0"),
    ("ban nonsense", "error: not an IP address or CIDR range: 'nonsense'"),
    ("clients /nope", "error: no service /nope"),
    ("kick /nope bob", "error: no service /nope"),
    ("/nope x", "error: no service /nope"),
    ("/chat x", "error: /chat takes no admin commands"),
    ("/svc fail", "error: /svc: admin failed: broken"),
])
def test_errors_answer_ok_false_in_the_form_asked_and_change_nothing(rig, line, answer):
    got = rig(line)
    if line.startswith("{"):
        parsed = json.loads(got)        # strict JSON: no NaN
        assert parsed["ok"] is False
    else:
        assert got.startswith("error: ")
    if answer is not None:
        assert got == answer
    assert rig.hub.bans == {}
    assert rig.hub.stats["events_published"] == 0


@pytest.mark.parametrize("line, error", [
    ("{not json", "invalid JSON: "),
    ('{"cmd":"list"', "invalid JSON: "),
])
def test_malformed_json_is_an_error_answered_in_json(rig, line, error):
    answer, request = handle_line(line, rig.hub, rig.daemon)
    parsed = json.loads(answer)
    assert parsed["ok"] is False and parsed["error"].startswith(error)
    assert request is None


def test_handle_line_returns_the_request_it_ran(rig):
    answer, request = handle_line("kick /chat bob", rig.hub, rig.daemon)
    assert request == {"cmd": "kick", "service": "/chat", "client": "bob"}
    assert answer == b"ok closed=0 (no such client now)\n"


def test_list_and_clients(rig):
    subscribe(rig.hub, "/chat", "bob", "10.0.0.1")
    rig.hub.now = T0 + 2
    event_id = json.loads(rig('{"cmd":"publish","service":"/chat","data":"x"}'))["id"]
    assert json.loads(rig('{"cmd":"list"}')) == {"ok": True, "services": [
        {"path": "/chat", "source": "none", "clients": 1, "last_id": event_id},
        {"path": "/svc", "source": "ctlplugins:Chatty", "clients": 0, "last_id": None},
        {"path": "/json", "source": "none", "clients": 0, "last_id": None}]}
    assert json.loads(rig('{"cmd":"clients","service":"/chat"}')) == {"ok": True, "clients": [
        {"id": "bob", "address": "10.0.0.1", "since": T0, "bytes_sent": 0, "bytes_queued": 0}]}
    assert rig("clients /chat") == ('ok clients=[{"id":"bob","address":"10.0.0.1","since":%r,'
                                    '"bytes_sent":0,"bytes_queued":0}]' % T0)


def test_kick_answers_how_many_streams_were_closed(rig):
    subscribe(rig.hub, "/chat", "bob")
    subscribe(rig.hub, "/chat", "bob")
    assert rig('{"cmd":"kick","service":"/chat","client":"bob"}') == '{"ok":true,"closed":2}'
    assert rig.hub.client_count == 0


def test_ban_bans_and_unban(rig):
    subscribe(rig.hub, "/chat", "bob", "10.1.1.1")
    subscribe(rig.hub, "/chat", "eve", "192.168.0.1")
    assert rig("ban 10.0.0.0/8 60") == "ok closed=1"
    assert rig('{"cmd":"ban","ip":"::1"}') == '{"ok":true,"closed":0}'
    assert json.loads(rig('{"cmd":"bans"}')) == {"ok": True, "bans": [
        {"ip": "10.0.0.0/8", "until": T0 + 60}, {"ip": "::1/128", "until": T0 + 3600}]}
    assert rig.hub.banned("10.2.3.4")
    assert rig("unban 10.0.0.0/8") == "ok closed=0 removed=1"
    assert rig("unban 10.0.0.0/8") == "ok closed=0 removed=0"
    rig.hub.now = T0 + 3600
    assert rig("bans") == "ok bans=[]"


def test_stats_has_the_spec_fields(rig):
    subscribe(rig.hub, "/chat", "bob")
    rig("publish /chat x")
    rig.hub.now = T0 + 12.5
    stats = json.loads(rig('{"cmd":"stats"}'))
    assert {"uptime": 12.5, "clients": 1, "events_published": 1, "events_delivered": 1,
            "bytes_sent": 0, "dropped": {}, "rss_bytes": 4096}.items() <= stats.items()


def test_reload_answers_the_changes_or_the_errors(rig):
    assert rig('{"cmd":"reload"}') == '{"ok":true,"changes":["added /new"]}'
    rig.daemon.fail = True
    assert json.loads(rig('{"cmd":"reload"}')) == {
        "ok": False, "error": "config not valid, nothing changed: x.ini:3: bad",
        "errors": ["x.ini:3: bad", "x.ini:4: worse"]}
    assert rig("reload") == "error: config not valid, nothing changed: x.ini:3: bad"


def test_admin_returns_the_hook_result(rig):
    assert rig('{"cmd":"admin","service":"/svc","args":["a","b c"]}') == (
        '{"ok":true,"result":{"args":["a","b c"],"clients":0}}')
    assert rig("/svc a b") == 'ok result={"args":["a","b"],"clients":0}'
    assert rig("admin /svc a") == 'ok result={"args":["a"],"clients":0}'
    assert rig('{"cmd":"admin","service":"/svc","args":["object"]}') == (
        '{"ok":true,"result":"<opaque>"}')


def test_text_form_quoting_end_to_end(rig):
    """A quoted event type and a quoted DATA reach the stream unquoted; a bad quote is a
    one-line error answer and publishes nothing."""
    client = subscribe(rig.hub, "/chat", "bob")
    assert rig("publish /chat -e 'a-b' 'two  words'") == "ok id=%d-1 delivered=1" % MS
    assert rig.orders.sent[client][-1] == b"id: %d-1\nevent: a-b\ndata: two  words\n\n" % MS
    assert rig("publish /chat -e 'a b") == "error: publish: no closing '"
    assert rig("publish /chat it's mine") == "ok id=%d-2 delivered=1" % MS
    assert rig.orders.sent[client][-1] == b"id: %d-2\ndata: it's mine\n\n" % MS


def test_help_lists_every_command_and_says_how_to_quote(rig):
    answer = json.loads(rig('{"cmd":"help"}'))
    assert "'...'" in answer["quoting"] and "DATA" in answer["quoting"]
    assert rig("help").startswith("ok commands=[")
    commands = answer["commands"]
    assert [c.split()[0] for c in commands] == ["publish", "list", "clients", "kick", "channels",
                                                "ban", "unban", "bans", "stats", "reload", "admin",
                                                "cluster", "help"]


# -- render_text ----------------------------------------------------------------------------

@pytest.mark.parametrize("answer, text", [
    ({"ok": True}, "ok"),
    ({"ok": True, "id": "1-0", "delivered": 3}, "ok id=1-0 delivered=3"),
    ({"ok": True, "last_id": None}, "ok last_id=-"),
    ({"ok": True, "services": [{"path": "/a", "clients": 2}]},
     'ok services=[{"path":"/a","clients":2}]'),
    ({"ok": True, "dropped": {"slow": 1}}, 'ok dropped={"slow":1}'),
    ({"ok": True, "result": "two words"}, "ok result=two words"),
    ({"ok": False, "error": "no service /x"}, "error: no service /x"),
    ({"ok": False}, "error: failed"),
    ({"ok": True, "closed": 0, "no_such_client": True}, "ok closed=0 (no such client now)"),
    ({"ok": True, "id": "1-0", "delivered": 0, "no_such_client": True},
     "ok id=1-0 delivered=0 (no such client now)"),
])
def test_render_text_is_one_line_for_a_person(answer, text):
    assert render_text(answer) == text


# -- LineSplitter ---------------------------------------------------------------------------

def split_all(chunks, limit=10):
    splitter = LineSplitter(limit)
    out = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return [("ERROR", str(x), getattr(x, "as_json", None)) if isinstance(x, CommandError) else x
            for x in out]


def feedings(data):
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for cut in range(len(data) + 1):
        yield [data[:cut], data[cut:]]


OVER = ("ERROR", "line over 10 bytes", False)
OVER_JSON = ("ERROR", "line over 10 bytes", True)
BAD_UTF8 = ("ERROR", "line is not valid UTF-8", False)

SPLITS = [
    ("lines", b"list\nstats\n", ["list", "stats"]),
    ("CR LF", b"list\r\nstats\r\n", ["list", "stats"]),
    ("inner CR kept", b"a\rb\n", ["a\rb"]),
    ("empty lines", b"\n\r\n", ["", ""]),
    ("incomplete last line held back", b"list\nsta", ["list"]),
    ("UTF-8", "caf\u00e9 \u2603\n".encode(), ["caf\u00e9 \u2603"]),
    ("exactly the limit", b"x" * 10 + b"\nok\n", ["x" * 10, "ok"]),
    ("exactly the limit with CR LF", b"x" * 10 + b"\r\nok\n", ["x" * 10, "ok"]),
    ("one over the limit", b"x" * 11 + b"\nok\n", [OVER, "ok"]),
    ("far over the limit", b"y" * 45 + b"\nok\n", [OVER, "ok"]),
    ("JSON over the limit", b"{" + b"y" * 45 + b"\nok\n", [OVER_JSON, "ok"]),
    ("two long lines, one error each", b"y" * 25 + b"\n" + b"z" * 12 + b"\nok\n", [OVER, OVER, "ok"]),
    ("invalid UTF-8", b"caf\xe9\nok\n", [BAD_UTF8, "ok"]),
    ("truncated UTF-8 then a good line", b"\xe2\x98\nok\n", [BAD_UTF8, "ok"]),
]


@pytest.mark.parametrize("name, data, lines", SPLITS, ids=[s[0] for s in SPLITS])
def test_line_splitter_gives_the_same_lines_however_the_bytes_arrive(name, data, lines):
    for chunks in feedings(data):
        assert split_all(chunks) == lines, chunks


def test_line_splitter_default_limit_is_one_mebibyte():
    splitter = LineSplitter()
    assert splitter.feed(b"a" * (1 << 20) + b"\n") == ["a" * (1 << 20)]
    out = splitter.feed(b"b" * ((1 << 20) + 1) + b"\nstats\n")
    assert len(out) == 2 and isinstance(out[0], CommandError) and out[1] == "stats"


def test_oversized_and_undecodable_lines_are_answered_in_the_form_they_were_sent(rig):
    lines = LineSplitter(10).feed(b'{"cmd":"list","pad":"xxxxxxxx"}\n' + b"x" * 11 + b"\n")
    answers = [handle_line(line, rig.hub, rig.daemon)[0] for line in lines]
    assert answers == [b'{"ok":false,"error":"line over 10 bytes"}\n',
                       b"error: line over 10 bytes\n"]
    lines = LineSplitter().feed(b"publish /chat \xff\n")
    assert handle_line(lines[0], rig.hub, rig.daemon)[0] == b"error: line is not valid UTF-8\n"
    lines = LineSplitter().feed(b'{"cmd":"\xff"}\n')
    assert handle_line(lines[0], rig.hub, rig.daemon)[0] == (
        b'{"ok":false,"error":"line is not valid UTF-8"}\n')
