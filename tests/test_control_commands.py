"""control: every command of the `COMMANDS` table in process, as tables (no subprocess).

Each line goes through `control.handle_line(line, hub, daemon)` against a real Hub built from
a config string and a small daemon stand-in; the answer is compared byte for byte. Then
`control.log_line`: which requests a control connection logs, at what level, and how.
test_control.py keeps the end-to-end tests that prove the wiring (socket, console, reload).
"""
import sys

import pytest

from ssed import config as configmod
from ssed import control
from ssed.hub import Hub
from ssed.service import Service

T0 = 1000.0
MS = int(T0 * 1000)

CONFIG = """
[/chat]
[/admin]
class = ctlcommands:Admin
[/json]
json = true
"""


class Admin(Service):
    def on_admin(self, args):
        return {"args": args}


class Daemon:
    """What handle_line asks of the daemon beyond the hub."""

    def reload(self):
        return ["added /new"]

    def rss(self):
        return 4096


def make_hub(text=CONFIG):
    """A started Hub for `text`. Nothing here fans out or closes a stream, so it needs no
    loop (the one place that changes when the Hub's constructor does)."""
    hub = Hub(configmod.parse(text, "test.ini"), lambda level, line: None, now=T0)
    hub.start()
    return hub


@pytest.fixture
def ask(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctlcommands", sys.modules[__name__])
    hub, daemon = make_hub(), Daemon()

    def ask(line):
        answer, _ = control.handle_line(line, hub, daemon)
        return answer.decode()

    ask.hub = hub
    return ask


# Each row: the line, the answer line. Rows run in order on one hub (ids and bans carry on).
SESSION = [
    ('{"cmd":"publish","service":"/chat","data":"hi"}',
     '{"ok":true,"id":"%d-0","delivered":0}\n' % MS),
    ("publish /chat -e note hello there", "ok id=%d-1 delivered=0\n" % MS),
    ("publish /chat --client bob psst", "ok id=%d-2 delivered=0 (no such client now)\n" % MS),
    ('{"cmd":"publish","service":"/json","data":"{}"}',
     '{"ok":true,"id":"%d-3","delivered":0}\n' % MS),
    ("publish /json nope", "error: /json takes JSON data only: Expecting value: line 1 "
                           "column 1 (char 0)\n"),
    ("publish /nowhere x", "error: no service /nowhere\n"),
    ('{"cmd":"list"}', '{"ok":true,"services":[{"path":"/chat","source":"none","clients":0,'
                       '"last_id":"%d-1"},{"path":"/admin","source":"ctlcommands:Admin",'
                       '"clients":0,"last_id":null},{"path":"/json","source":"none",'
                       '"clients":0,"last_id":"%d-3"}]}\n' % (MS, MS)),
    ("clients /chat", "ok clients=[]\n"),
    ('{"cmd":"kick","service":"/chat","client":"bob"}',
     '{"ok":true,"closed":0,"no_such_client":true}\n'),
    ("ban 10.0.0.0/8 60", "ok closed=0\n"),
    ('{"cmd":"ban","ip":"::ffff:192.0.2.1"}', '{"ok":true,"closed":0}\n'),
    ("bans", 'ok bans=[{"ip":"10.0.0.0/8","until":1060.0},'
             '{"ip":"192.0.2.1/32","until":4600.0}]\n'),
    ("unban 10.0.0.0/8", "ok closed=0 removed=1\n"),
    ('{"cmd":"unban","ip":"10.0.0.0/8"}', '{"ok":true,"closed":0,"removed":0}\n'),
    ("reload", "ok changes=[\"added /new\"]\n"),
    ("/admin a 'b c'", 'ok result={"args":["a","b c"]}\n'),
    ('{"cmd":"admin","service":"/admin","args":[]}', '{"ok":true,"result":{"args":[]}}\n'),
    ("/chat x", "error: /chat takes no admin commands\n"),
    ("frob", "error: unknown command 'frob' (try: help)\n"),
    ('{"cmd":"kick","service":"/chat"}', '{"ok":false,"error":"kick: missing client"}\n'),
    ("kick /chat 'bob", "error: kick: no closing '\n"),
]


def test_every_command_answers_exactly_in_the_form_it_was_asked(ask):
    for line, answer in SESSION:
        assert (line, ask(line)) == (line, answer)


def test_stats_and_help_answer_every_field(ask):
    ask("publish /chat x")
    ask.hub.now = T0 + 2.5
    assert ask("stats") == (
        "ok uptime=2.5 clients=0 events_published=1 events_delivered=0 bytes_sent=0 "
        "dropped={} refused={} journal_failures=0 rss_bytes=4096 loop_stalls=0 "
        "longest_stall=0\n")
    commands = [c.split()[0] for c in control.execute({"cmd": "help"}, ask.hub, None)["commands"]]
    assert commands == list(control.COMMANDS)


# -- what a control connection logs ----------------------------------------------------------

@pytest.mark.parametrize("request_, debug, logged", [
    ({"cmd": "publish", "service": "/s", "data": "secret words"}, True,
     ("debug", "cmd=publish service=/s bytes=12")),
    ({"cmd": "publish", "service": "/s", "data": "é", "event": "x"}, True,
     ("debug", "cmd=publish service=/s event=x bytes=2")),
    ({"cmd": "publish", "service": "/s", "data": "secret"}, False, None),
    ({"cmd": "publish", "service": "/s", "data": 12}, True, ("debug", "cmd=publish service=/s")),
    ({"cmd": "kick", "service": "/s", "client": "bob"}, False,
     ("info", "cmd=kick service=/s client=bob")),
    ({"cmd": "ban", "ip": "10.9.8.7", "seconds": 5}, False,
     ("info", "cmd=ban ip=10.9.8.7 seconds=5")),
    ({"cmd": "unban", "ip": "10.9.8.7"}, False, ("info", "cmd=unban ip=10.9.8.7")),
    ({"cmd": "reload"}, False, ("info", "cmd=reload")),
    ({"cmd": "admin", "service": "/s", "args": ["a"]}, False,
     ("info", "cmd=admin service=/s args=['a']")),
    ({"cmd": "stats"}, True, None),
    ({"cmd": "list"}, True, None),
    ({"cmd": "help"}, True, None),
    ({"cmd": "frob"}, True, None),
    ({"cmd": ["publish"]}, True, None),
    (None, True, None),
], ids=["publish", "publish-size-in-bytes", "publish-not-debug", "publish-bad-data", "kick",
        "ban", "unban", "reload", "admin", "stats", "list", "help", "unknown", "cmd-not-str",
        "unreadable-line"])
def test_log_line_logs_state_changes_with_the_size_of_the_data_not_the_data(request_, debug,
                                                                            logged):
    assert control.log_line(request_, debug) == logged


def test_every_command_that_changes_state_is_logged_and_no_other():
    for name, spec in control.COMMANDS.items():
        entry = control.log_line({"cmd": name})
        assert (entry is not None) == spec.changes_state, name
        assert entry is None or entry[0] == ("debug" if name == "publish" else "info")
