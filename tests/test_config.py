"""The config reader: good INI text to exact values, bad text to exact `FILE:LINE: message`
errors (all of them, in one pass), reload diffs, the embedded default and the key docs."""
import dataclasses
import ipaddress
import os
import subprocess
import sys
import textwrap

import pytest

from ssed import config
from ssed.config import ConfigError, ServiceConfig

F = "/cfg/ssed.ini"  # base directory /cfg: it need not exist, nothing is opened


def ok(text, **kw):
    return config.parse(textwrap.dedent(text), F, **kw)


def errors(text):
    with pytest.raises(ConfigError) as info:
        config.parse(textwrap.dedent(text), F)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one(text):
    return ok(text).services[0]


# --- good configs --------------------------------------------------------------------------------

def test_empty_file_gives_every_default_and_no_services():
    c = ok("")
    assert c.file == F
    assert c.listen == (("127.0.0.1", 8080),)
    assert c.control == "/cfg/ssed.sock"
    assert c.control_mode == 0o660
    assert c.control_group is None
    assert (c.keepalive, c.retry, c.history) == (15.0, 3000, 100)
    assert (c.max_clients, c.max_clients_per_ip, c.send_buffer) == (10000, 256, 1048576)
    assert (c.header_timeout, c.max_body, c.shutdown_timeout) == (10.0, 65536, 5.0)
    assert c.cors_origins == ()
    assert c.status_allow == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))
    assert c.index is True
    assert c.services == ()


def test_service_defaults():
    s = one("[/a]\n")
    assert s == ServiceConfig(path="/a", line=0, lines={})
    assert (s.path, s.line, dict(s.lines), dict(s.options)) == ("/a", 1, {}, {})
    assert (s.source, s.interval, s.format, s.event, s.file, s.messages) == \
        ("none", 1.0, "iso", None, None, ())
    assert (s.command, s.history, s.cors_origins, s.token, s.publish_token) == \
        (None, 100, (), None, None)
    assert (s.session_event, s.json, s.cls) == (False, False, None)


def test_key_table_defaults_match_dataclass_defaults():
    s = ServiceConfig(path="/x", line=1, lines={})
    for key in config.KEYS:
        if key.scope not in ("ssed", "cluster") and key.name != "file":
            assert getattr(s, "cls" if key.name == "class" else key.name) == key.parse(key.default)


def test_each_key_is_a_field_of_its_dataclass_and_nothing_else_is():
    """KEYS alone names the settings: the dataclasses hold a field per key (`class` as
    `cls`) besides where things were written (and a plugin's own keys)."""
    attr = {"class": "cls"}
    top = [attr.get(k.name, k.name) for k in config.KEYS if k.scope in ("ssed", "both")]
    svc = [attr.get(k.name, k.name) for k in config.KEYS if k.scope not in ("ssed", "cluster")]
    cluster = [k.name for k in config.KEYS if k.scope == "cluster"]
    assert [f.name for f in dataclasses.fields(config.Config)] == ["file", *top, "services",
                                                                    "templates", "cluster",
                                                                    "lines"]
    assert [f.name for f in dataclasses.fields(config.ClusterConfig)] == ["line", "lines",
                                                                          *cluster]
    assert [f.name for f in dataclasses.fields(ServiceConfig)] == [
        "path", "line", "lines", *svc, "options"]
    assert ServiceConfig.__module__ == config.Config.__module__ == "ssed.config"


def test_the_keys_each_source_reads_are_declared_by_its_class():
    from ssed.sources import SOURCES
    assert list(SOURCES) == ["none", "time", "messages", "quotes", "command", "file"]
    for name, cls in SOURCES.items():
        assert {"uses", "needs"} <= set(vars(cls)), name      # beside the class, not inherited
        assert set(cls.needs) <= set(cls.uses), name
        sc = one(f"[/a]\nsource = {name}\n" + "".join(f"{k} = x\n" for k in cls.needs[:1]))
        assert sc.source == name


@pytest.mark.parametrize("body, top, expected", [
    ("journal = off\n", "state_dir = st\n", None),
    ("journal = off\n", "", None),
    ("", "state_dir = st\n", "/cfg/st/a.journal"),
    ("journal = ./off\n", "state_dir = st\n", "/cfg/off"),
    ("journal = j/a.log\n", "state_dir = st\n", "/cfg/j/a.log"),
], ids=["off-with-state_dir", "off-alone", "state_dir", "a-file-named-off", "own-file"])
def test_journal_off_means_none_even_with_state_dir(body, top, expected):
    assert ok(f"[ssed]\n{top}[/a]\n{body}").services[0].journal == expected


def test_two_services_with_journal_off_do_not_clash():
    c = ok("[ssed]\nstate_dir = st\n[/a]\njournal = off\n[/b]\njournal = off\n")
    assert [s.journal for s in c.services] == [None, None]
    assert config.diff(ok("[ssed]\nstate_dir = st\n[/a]\n"), c) == [
        "changed /a: journal", "added /b"]


def test_history_and_cors_are_inherited_from_ssed_and_overridable():
    c = ok("""
        [ssed]
        history = 7
        cors_origins = https://a.example
        [/a]
        [/b]
        history = 0
        cors_origins = *
    """)
    assert (c.history, c.cors_origins) == (7, ("https://a.example",))
    a, b = c.services
    assert (a.history, a.cors_origins) == (7, ("https://a.example",))
    assert (b.history, b.cors_origins) == (0, ("*",))


def test_services_keep_file_order_and_lines():
    c = ok("""\
        [/z]
        [ssed]
        retry = 0

        [/a]
        ; comment
        source = time
        interval = 2
    """)
    assert [s.path for s in c.services] == ["/z", "/a"]
    assert c.services[1].line == 5
    assert dict(c.services[1].lines) == {"source": 7, "interval": 8}
    assert c.retry == 0


def test_relative_paths_resolve_against_the_config_directory():
    c = ok("""
        [ssed]
        control = run/ctl.sock
        [/a]
        source = file
        file = ../data/x.txt
        [/b]
        source = file
        file = /abs/y.txt
    """)
    assert c.control == "/cfg/run/ctl.sock"
    assert [s.file for s in c.services] == ["/data/x.txt", "/abs/y.txt"]


def test_base_dir_overrides_the_file_directory_and_empty_control_means_none():
    c = ok("[ssed]\ncontrol = c.sock\n", base_dir="/srv")
    assert c.control == "/srv/c.sock"
    assert ok("[ssed]\ncontrol =\n").control is None


def test_filename_without_directory_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.parse("", "ssed.ini").control == str(tmp_path / "ssed.sock")


def test_continuation_lines_make_the_messages():
    s = one("""\
        [/news]
        source = messages
        messages = first
            second   ; an inline comment
          # a whole-line comment

            third one
        interval = 2
    """)
    assert s.messages == ("first", "second", "third one")
    assert s.interval == 2.0
    assert s.lines["interval"] == 8


@pytest.mark.parametrize("line, expected", [
    ("event = a#b", "a#b"),          # no whitespace before '#': part of the value
    ("event = a;b", "a;b"),
    ("event = a ; b", "a"),
    ("event = a # b", "a"),
    ("event = a\t;b", "a"),
    ("event =   spaced out  ", "spaced out"),
    ("event = x = y", "x = y"),      # the first '=' splits
    ("event = 100%", "100%"),        # no interpolation
    ("event =", None),
    ("event = ; only a comment", None),
])
def test_values_and_inline_comments(line, expected):
    assert one(f"# head\n; comment\n[/a] ; trailing\n{line}\n").event == expected


def test_crlf_line_endings_and_a_byte_order_mark():
    c = config.parse("\ufeff[ssed]\r\nretry = 5\r\n[/a]\r\nevent = e\r\n", F)
    assert c.retry == 5 and c.services[0].event == "e"


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:0", (("127.0.0.1", 0),)),
    ("[::1]:8080", (("::1", 8080),)),
    ("127.0.0.1:8080 [::1]:8080", (("127.0.0.1", 8080), ("::1", 8080))),
    ("localhost:65535 [2001:db8::1]:443", (("localhost", 65535), ("2001:db8::1", 443))),
    ("0.0.0.0:80 [::]:80", (("0.0.0.0", 80), ("::", 80))),
    ("a.example.com:1 127.0.0.1:0 127.0.0.1:0", (("a.example.com", 1), ("127.0.0.1", 0),
                                                  ("127.0.0.1", 0))),
])
def test_listen(text, expected):
    assert ok(f"[ssed]\nlisten = {text}\n").listen == expected


@pytest.mark.parametrize("line, attr, expected", [
    ("keepalive = 2.5", "keepalive", 2.5),
    ("control_mode = 0600", "control_mode", 0o600),
    ("control_mode = 0o640", "control_mode", 0o640),
    ("control_mode = 660", "control_mode", 0o660),
    ("control_group = ssed-users", "control_group", "ssed-users"),
    ("index = No", "index", False),
    ("index = ON", "index", True),
    ("index = 0", "index", False),
    ("retry = 0", "retry", 0),
    ("max_body = 0", "max_body", 0),
    ("shutdown_timeout = 0", "shutdown_timeout", 0.0),
    ("send_buffer = 1024", "send_buffer", 1024),
    ("header_timeout = 0.5", "header_timeout", 0.5),
    ("status_allow = 10.0.0.1 192.168.1.7/16 fe80::/10", "status_allow",
     tuple(map(ipaddress.ip_network, ["10.0.0.1/32", "192.168.0.0/16", "fe80::/10"]))),
    ("status_allow =", "status_allow", ()),
    ("cors_origins = https://Example.com http://localhost:3000 http://[::1]:8000", "cors_origins",
     ("https://example.com", "http://localhost:3000", "http://[::1]:8000")),
])
def test_ssed_values(line, attr, expected):
    assert getattr(ok(f"[ssed]\n{line}\n"), attr) == expected


@pytest.mark.parametrize("lines, attr, expected", [
    ("source = time\nformat = unix", "format", "unix"),
    ("source = time\nformat = %H:%M:%S", "format", "%H:%M:%S"),
    # every glibc conversion, its flags, width and E/O modifiers, and Python's %f %z %Z
    ("source = time\nformat = %a%A%b%B%c%C%d%D%e%F%g%G%h%H%I%j%k%l%m%M%n%p%P%r%R%s%S%t%T"
     "%u%U%V%w%W%x%X%y%Y %-d %_3H %^a %#p %010Y %Ey %EC %Od %OH %f %z %Z 100%%",
     "format", "%a%A%b%B%c%C%d%D%e%F%g%G%h%H%I%j%k%l%m%M%n%p%P%r%R%s%S%t%T"
     "%u%U%V%w%W%x%X%y%Y %-d %_3H %^a %#p %010Y %Ey %EC %Od %OH %f %z %Z 100%%"),
    ("source = time\ninterval = 0.25", "interval", 0.25),
    ("source = command\ncommand = date +%s | tr -d 0", "command", "date +%s | tr -d 0"),
    ("source = quotes\ncommand = ./quotes.sh", "command", "./quotes.sh"),
    ("source = quotes\nfile = q.txt", "file", "/cfg/q.txt"),
    ("source = messages\nfile = m.txt", "file", "/cfg/m.txt"),
    ("source = file\nfile = /x", "source", "file"),
    ("event = tick", "event", "tick"),
    ("token = s3cr3t-_.~+/=", "token", "s3cr3t-_.~+/="),
    ("publish_token = p", "publish_token", "p"),
    ("publish_token =", "publish_token", None),
    ("session_event = yes", "session_event", True),
    ("json = true", "json", True),
    ("class = mypkg.chat:Chat", "cls", "mypkg.chat:Chat"),
    ("class = chat:Chat_2", "cls", "chat:Chat_2"),
    ("source = time\ncommand =", "command", None),  # empty = unset: not an unused key
    ("source = messages\nmessages =\n  a\n\n  b", "messages", ("a", "b")),
])
def test_service_values(lines, attr, expected):
    assert getattr(one(f"[/s]\n{lines}\n"), attr) == expected


def test_root_path_and_rfc3986_paths_are_services():
    c = ok("[/]\n[/a-b_c.d~e/f!$&'()*+,;=:@/%2F]\n")
    assert [s.path for s in c.services] == ["/", "/a-b_c.d~e/f!$&'()*+,;=:@/%2F"]


def test_class_services_get_unknown_keys_as_options_and_any_source_key():
    s = one("""
        [/chat]
        class = mypkg.chat:Chat
        rooms = lobby games
        Max-Users = 10
        command = anything
        interval = 5
    """)
    assert dict(s.options) == {"rooms": "lobby games", "Max-Users": "10"}
    assert (s.cls, s.command, s.interval, s.source) == ("mypkg.chat:Chat", "anything", 5.0, "none")
    with pytest.raises(TypeError):
        s.options["rooms"] = "x"


def test_configs_are_frozen_and_services_compare_by_settings():
    a = ok("[/a]\ninterval = 2\nsource = time\n").services[0]
    b = ok("\n\n[/a]\nsource = time\n\ninterval = 2\n").services[0]
    assert (a.line, b.line) == (1, 3) and a.lines != b.lines
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.interval = 3


SPEC_EXAMPLE = """\
[ssed]
listen = 127.0.0.1:8080 [::1]:8080   ; one or more host:port
control = ssed.sock                  ; UNIX control socket; relative paths are relative to this file
control_mode = 0660
keepalive = 15          ; seconds of silence before a client gets a ": keepalive" comment
retry = 3000            ; ms, sent as "retry:" when a stream opens; 0 = not sent
history = 100           ; events each service keeps for Last-Event-ID replay (per-service override)
max_clients = 10000     ; all services together
max_clients_per_ip = 256
send_buffer = 1048576   ; bytes queued for one client before it is dropped as too slow
header_timeout = 10     ; seconds to receive a whole request head
max_body = 65536        ; bytes of a POST body
shutdown_timeout = 5
cors_origins =          ; space-separated origins, or *; empty = no CORS headers
status_allow = 127.0.0.0/8 ::1   ; who may read /metrics and /healthz
index = true            ; serve the HTML index page at /

[/time]                 ; a section whose name starts with "/" is a service at that path
source = time           ; time | messages | quotes | command | file | none (the default: fed by publishers only)
interval = 1            ; seconds between timer updates
format = iso            ; time: iso (local time, ISO 8601 with UTC offset), unix, or a strftime pattern
event = time            ; the type of the source's events, and of published events that name none
                        ; (default: no event: line, i.e. "message")

[/news]
source = messages       ; one line of `file` (or of `messages`, one per line) per tick, round robin
file = messages.txt

[/quotes]
source = quotes         ; each tick, run `command` (or read `file`): lines "SYMBOL PRICE";
command = cat quotes.txt ;   publishes a JSON object of the quotes that changed
event = quote

[/chat]
history = 500
token =                 ; if set, subscribers must present it (section 4)
publish_token =         ; if set, POST /chat with this bearer token publishes (section 4)
session_event = false   ; if true, a new stream first gets "event: session" with its client id
json = false            ; if true, published data must be valid JSON, else the publish is refused
class =                 ; module:Class, a Service subclass (section 9)
"""


def test_the_spec_example_parses():
    c = config.parse(SPEC_EXAMPLE, "/etc/ssed/ssed.ini")
    assert c.listen == (("127.0.0.1", 8080), ("::1", 8080))
    assert c.control == "/etc/ssed/ssed.sock"
    assert (c.cors_origins, c.index, c.history) == ((), True, 100)
    time, news, quotes, chat = c.services
    assert (time.path, time.source, time.interval, time.format, time.event) == \
        ("/time", "time", 1.0, "iso", "time")
    assert (news.source, news.file) == ("messages", "/etc/ssed/messages.txt")
    assert (quotes.source, quotes.command, quotes.event) == ("quotes", "cat quotes.txt", "quote")
    assert (chat.source, chat.history, chat.token, chat.publish_token, chat.cls) == \
        ("none", 500, None, None, None)
    assert (chat.session_event, chat.json, chat.line) == (False, False, 34)


# --- bad configs: exact FILE:LINE: message -------------------------------------------------------

BAD = [
    # the reader
    ("retry = 1\n", ["1: key 'retry' before any [section]"]),
    ("[ssed]\ngarbage\n", ["2: expected [section] or key = value, got 'garbage'"]),
    ("[ssed]\n= 3\n", ["2: expected [section] or key = value, got '= 3'"]),
    ("[ssed\nretry = x\n", ["1: section header without a closing ]: '[ssed'"]),
    ("[/a]\n  indented\n", ["2: indented line, but no key before it to continue"]),
    ("; c\n  x = 1\n", ["2: indented line, but no key before it to continue"]),
    ("[/a]\nevent = a\0b\n", ["2: NUL character"]),
    # sections
    ("[foo]\n", ["1: unknown section [foo]: expected [ssed], [cluster] or a service path starting with /"]),
    ("[]\n", ["1: unknown section []: expected [ssed], [cluster] or a service path starting with /"]),
    ("[ssed]\n[ssed]\n", ["2: duplicate section [ssed] (first at line 1)"]),
    # a duplicate section's own errors come in the same pass
    ("[/a]\n\n[/a]\nbogus = 1\n", ["3: duplicate section [/a] (first at line 1)",
                                   "4: unknown key 'bogus'"]),
    ("[/metrics]\n", ["1: path /metrics clashes with the built-in /metrics endpoint"]),
    ("[/healthz]\n", ["1: path /healthz clashes with the built-in /healthz endpoint"]),
    ("[/a b]\n", ["1: invalid service path '/a b': character ' ' is not allowed "
                  "(RFC 3986 path characters only)"]),
    ("[/a?b]\n", ["1: invalid service path '/a?b': character '?' is not allowed "
                  "(RFC 3986 path characters only)"]),
    ("[/a%zz]\n", ["1: invalid service path '/a%zz': character '%' is not allowed "
                   "(RFC 3986 path characters only)"]),
    ("[/café]\n", ["1: invalid service path '/café': character 'é' is not allowed "
                   "(RFC 3986 path characters only)"]),
    ("[/a//b]\n", ["1: invalid service path '/a//b': empty segment (//)"]),
    ("[/a/]\n", ["1: invalid service path '/a/': trailing /"]),
    ("[/a/../b]\n", ["1: invalid service path '/a/../b': '.' and '..' segments are not allowed"]),
    ("[/.]\n", ["1: invalid service path '/.': '.' and '..' segments are not allowed"]),
    # keys
    ("[ssed]\nretry = 1\nretry = 2\n", ["3: duplicate key 'retry' (first set at line 2)"]),
    ("[/a]\nintervall = 2\n", ["2: unknown key 'intervall' (did you mean 'interval'?)"]),
    ("[ssed]\nzzz = 1\n", ["2: unknown key 'zzz'"]),
    ("[ssed]\nsource = time\n", ["2: key 'source' belongs in a service section"]),
    ("[/a]\nlisten = 127.0.0.1:1\n", ["2: key 'listen' belongs in [ssed]"]),
    ("[/a]\nclass = m:C\nlisten = 127.0.0.1:1\n", ["3: key 'listen' belongs in [ssed]"]),
    ("[ssed]\nclass = m:C\n", ["2: key 'class' belongs in a service section"]),
    # values
    ("[/a]\nsource = time\ninterval = abc\n", ["3: interval: expected a number >= 0.01, got 'abc'"]),
    ("[/a]\nsource = time\ninterval = 0\n", ["3: interval: expected a number >= 0.01, got '0'"]),
    ("[/a]\nsource = time\ninterval = nan\n", ["3: interval: expected a number >= 0.01, got 'nan'"]),
    ("[/a]\nsource = time\ninterval = 1e-300\n", ["3: interval: expected a number >= 0.01, got '1e-300'"]),
    ("[/a]\nsource = time\ninterval = \u0661\u0665\n", ["3: interval: expected a number >= 0.01, got '\u0661\u0665'"]),
    ("[ssed]\nkeepalive = -1\n", ["2: keepalive: expected a number >= 0.01, got '-1'"]),
    ("[ssed]\nshutdown_timeout = -0.5\n",
     ["2: shutdown_timeout: expected a number >= 0, got '-0.5'"]),
    ("[ssed]\nretry = 1.5\n", ["2: retry: expected an integer >= 0, got '1.5'"]),
    ("[ssed]\nmax_clients = 0\n", ["2: max_clients: expected an integer >= 1, got '0'"]),
    ("[ssed]\nsend_buffer = 1023\n", ["2: send_buffer: expected an integer >= 1024, got '1023'"]),
    ("[ssed]\nhistory = -1\n", ["2: history: expected an integer >= 0, got '-1'"]),
    ("[ssed]\ncontrol_mode = 0999\n",
     ["2: control_mode: expected an octal file mode such as 0660, got '0999'"]),
    ("[ssed]\ncontrol_group = a b\n",
     ["2: control_group: expected a group name or number, got 'a b'"]),
    ("[ssed]\nindex = maybe\n",
     ["2: index: expected true or false (or yes/no, on/off, 1/0), got 'maybe'"]),
    ("[ssed]\nlisten =\n", ["2: listen: expected one or more host:port"]),
    *[(f"[ssed]\nlisten = 127.0.0.1:1 {bad}\n",
       [f"2: listen: expected host:port with a port 0..65535 and IPv6 in brackets "
        f"(as in [::1]:8080), got {bad!r}"])
      for bad in ("::1:8080", "localhost", "localhost:65536", "[::1]", "[nope]:80",
                  "256.1.1.1:80", "-bad-:80", ":80", "host:-1", "[::1]:")],
    ("[ssed]\nlisten = 127.0.0.1:80 127.0.0.1:80\n", ["2: listen: 127.0.0.1:80 is listed twice"]),
    ("[ssed]\nstatus_allow = 10.0.0.1 nope\n",
     ["2: status_allow: expected IP addresses or CIDR networks: "
      "'nope' does not appear to be an IPv4 or IPv6 network"]),
    ("[ssed]\ncors_origins = https://a.example/\n",
     ["2: cors_origins: expected an origin such as https://example.com (no path), "
      "got 'https://a.example/'"]),
    ("[ssed]\ncors_origins = * https://a.example\n", ["2: cors_origins: '*' must stand alone"]),
    ("[/a]\nsource = bogus\ninterval = 3\n",
     ["2: source: expected none | time | messages | quotes | command | file, got 'bogus'"]),
    ("[/a]\nsource = mesages\nformat = unix\n",      # checked against the likely source
     ["2: source: expected none | time | messages | quotes | command | file, got 'mesages' "
      "(did you mean 'messages'?)", "3: key 'format' is not used by source 'messages'"]),
    # strftime patterns that glibc would print literally, or cannot render
    ("[/a]\nsource = time\nformat = %H:%Q\n",
     ["3: format: unknown strftime directive '%Q' in '%H:%Q' (see `man strftime`)"]),
    ("[/a]\nsource = time\nformat = 100%\n",
     ["3: format: unknown strftime directive '%' in '100%' (see `man strftime`)"]),
    ("[/a]\nsource = time\nformat = %Ed %-f\n",
     ["3: format: unknown strftime directive '%E' in '%Ed %-f' (see `man strftime`)"]),
    ("[/a]\nsource = time\nformat = %-f\n",
     ["3: format: unknown strftime directive '%-' in '%-f' (see `man strftime`)"]),
    ("[/a]\nsource = time\nformat = hh:mm\n",
     ["3: format: expected iso, unix, or a strftime pattern with %, got 'hh:mm'"]),
    ("[/a]\nevent = two\n  lines\n", ["2: event: event type must not contain LF"]),
    ("[/a]\ntoken = a b\n",
     ["2: token: expected visible ASCII characters without spaces, got a value with a space "
      "in it (value not shown)"]),
    ("[/a]\nclass = mypkg.chat\n",
     ["2: class: expected module:Class, as in mypkg.chat:Chat, got 'mypkg.chat'"]),
    ("[/a]\nclass = my-pkg:Chat\nextra = 1\n",
     ["2: class: expected module:Class, as in mypkg.chat:Chat, got 'my-pkg:Chat'"]),
    ("[/a]\njson = 2\n", ["2: json: expected true or false (or yes/no, on/off, 1/0), got '2'"]),
    # what each source needs, and keys it would ignore
    ("[/a]\nsource = messages\n", ["2: source 'messages' needs 'file' or 'messages'"]),
    ("[/a]\nsource = quotes\nfile =\n", ["2: source 'quotes' needs 'command' or 'file'"]),
    ("[/a]\nsource = command\n", ["2: source 'command' needs 'command'"]),
    ("[/a]\nsource = file\n", ["2: source 'file' needs 'file'"]),
    ("[/a]\nsource = messages\nfile = f\nmessages = m\n",
     ["2: source 'messages' takes 'file' or 'messages', not both"]),
    ("[/a]\nsource = time\ncommand = date\n", ["3: key 'command' is not used by source 'time'"]),
    ("[/a]\ninterval = 2\n", ["2: key 'interval' is not used by source 'none'"]),
    ("[/a]\nsource = command\ncommand = x\nformat = unix\n",
     ["4: key 'format' is not used by source 'command'"]),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_bad_config_errors(text, expected):
    assert errors(text) == [f"{F}:{e}" for e in expected]


def test_every_error_is_collected_in_one_pass_in_line_order():
    assert errors("""\
        [ssed]
        retry = soon
        [/a]
        source = messages
        bogus = 1
        [/metrics]
        [ssed]
        keepalive = 0
    """) == [
        f"{F}:2: retry: expected an integer >= 0, got 'soon'",
        f"{F}:4: source 'messages' needs 'file' or 'messages'",
        f"{F}:5: unknown key 'bogus'",
        f"{F}:6: path /metrics clashes with the built-in /metrics endpoint",
        f"{F}:7: duplicate section [ssed] (first at line 1)",
        f"{F}:8: keepalive: expected a number >= 0.01, got '0'",
    ]


# --- load ------------------------------------------------------------------------------------

def test_load_reads_the_file_and_resolves_paths_against_its_directory(tmp_path):
    path = tmp_path / "conf" / "ssed.ini"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbf[ssed]\ncontrol = ctl.sock\n[/n]\nsource = messages\nfile = m\n")
    c = config.load(path)
    assert c.file == str(path)
    assert c.control == str(tmp_path / "conf" / "ctl.sock")
    assert c.services[0].file == str(tmp_path / "conf" / "m")


def test_load_of_a_missing_file():
    with pytest.raises(ConfigError) as info:
        config.load("/nonexistent/ssed.ini")
    assert info.value.errors == ["/nonexistent/ssed.ini: cannot read: No such file or directory"]


def test_load_reports_bad_utf8_with_its_line_and_the_other_errors(tmp_path):
    path = tmp_path / "x.ini"
    path.write_bytes(b"[/a]\nevent = caf\xe9\nbogus = 1\n\xff\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.errors == [
        f"{path}:2: not valid UTF-8 (byte 0xe9)",
        f"{path}:3: unknown key 'bogus'",
        f"{path}:4: not valid UTF-8 (byte 0xff)",
        f"{path}:4: expected [section] or key = value, got '\ufffd'",
    ]


# --- default ---------------------------------------------------------------------------------

def test_default_config_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = config.default()
    assert c.file == "<default>"
    assert c.listen == (("127.0.0.1", 8080),)
    assert c.control == str(tmp_path / "ssed.sock")
    (s,) = c.services
    assert (s.path, s.source, s.interval, s.event, s.format) == \
        ("/time", "time", 1.0, "time", "iso")


# --- diff ------------------------------------------------------------------------------------

BASE = """\
[ssed]
keepalive = 15
[/time]
source = time
[/chat]
class = m:Chat
rooms = a
"""


@pytest.mark.parametrize("new, expected", [
    (BASE, []),
    ("\n\n" + BASE.replace("keepalive = 15", "keepalive = 15.0"), []),   # moved, same values
    (BASE.replace("source = time", "source = time\ninterval = 2\nformat = unix"),
     ["changed /time: interval, format"]),
    (BASE + "[/news]\nsource = messages\nmessages = hi\n", ["added /news"]),
    (BASE.split("[/chat]")[0], ["removed /chat"]),
    (BASE.replace("keepalive = 15", "keepalive = 5\nretry = 0\nhistory = 9"),
     ["changed [ssed]: keepalive, retry, history", "changed /time: history",
      "changed /chat: history"]),
    (BASE.replace("rooms = a", "rooms = b\nlimit = 3").replace("m:Chat", "m:Chat2"),
     ["changed /chat: class, limit, rooms"]),
    (BASE.replace("[/chat]", "[/talk]") + "[/x]\n",
     ["removed /chat", "added /talk", "added /x"]),
])
def test_diff(new, expected):
    assert config.diff(config.parse(BASE, F), config.parse(new, F)) == expected


# --- the key docs ----------------------------------------------------------------------------

def test_keys_markdown_documents_every_key():
    text = config.keys_markdown()
    lines = text.splitlines()
    assert lines[0] == "| key | section | default | meaning |"
    assert len(lines) == 2 + len(config.KEYS)
    for key, line in zip(config.KEYS, lines[2:]):
        assert line.startswith(f"| `{key.name}` | ")
        assert line.count(" | ") == 3  # no unescaped | inside a cell
    assert "| `listen` | [ssed] | `127.0.0.1:8080` |" in text
    assert "| `history` | [ssed] (default), service, template | `100` |" in text
    names = {key.name for key in config.KEYS}
    assert {f.name for f in dataclasses.fields(config.Config)} - {"file", "services", "templates",
                                                                   "lines"} <= names


def test_keys_command_prints_the_table():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "ssed.config", "--keys"], cwd=root,
                         capture_output=True, text=True, check=True)
    out = run.stdout
    assert out == config.keys_markdown()
