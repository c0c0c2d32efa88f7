"""Services in Python (SPEC section 9): a `module:Class` next to the config is loaded and its
hooks run; `Refuse` turns a subscriber away; an exception in any hook is logged with the
service's name and isolated; a `class` that cannot be loaded is a config error.
"""
import re
import textwrap

from confdir import run_ssed, start_in, write_ini

PLUGIN = textwrap.dedent('''
    import ssed


    class Chat(ssed.Service):
        """Ticks, refuses "mallory", logs departures, answers admin commands."""

        def on_start(self):
            self.ticks = 0
            self.gone = []

        def on_tick(self):
            self.ticks += 1
            self.publish(f"tick {self.ticks}", event="tick")

        def on_connect(self, client, request):
            if request.first("name") == "mallory":
                raise ssed.Refuse(403, "no")

        def on_disconnect(self, client, reason):
            self.gone.append([client.id, reason])
            self.log(f"left {client.id} {reason}")

        def on_admin(self, args):
            if args == ["gone"]:
                return self.gone
            if args[:1] == ["say"]:
                return {"id": self.publish(" ".join(args[1:]), event="said")}
            return {"args": args, "clients": len(self.clients), "greeting": self.options["greeting"]}


    class Boom(ssed.Service):
        """Every hook named in the `fail` option raises."""

        def fails(self, hook):
            if hook in self.options.get("fail", "").split():
                raise RuntimeError(f"boom in {hook}")

        def on_tick(self):
            self.publish("tick", event="tick")      # so a test can see it goes on ticking
            self.fails("on_tick")

        def on_connect(self, client, request):
            self.fails("on_connect")

        def on_disconnect(self, client, reason):
            self.fails("on_disconnect")

        def on_admin(self, args):
            self.fails("on_admin")
            return "fine"


    class Greeter(ssed.Service):
        """Greets each new stream from on_connect: by its Client, and by its id."""

        def on_connect(self, client, request):
            self.publish(f"hello {client.id}", event="greet", client=client)
            self.publish(f"to every {client.id}", event="greet", client=client.id)
            if request.first("refuse"):
                raise ssed.Refuse(403, "greeted, then refused")


    class Echo(ssed.Service):
        """Hears every event of its path (on_event); answers a "ping" with a "pong"."""

        def on_start(self):
            self.heard = []

        def on_event(self, event):
            self.heard.append([event.id, event.data])
            if event.data == "ping":
                self.publish("pong", event="echo")

        def on_admin(self, args):
            return self.heard


    class NotService:
        pass
''')


def plugin_dir(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir(parents=True)
    (conf / "myplug.py").write_text(PLUGIN)
    return conf


CHAT = """
    [/chat]
    class = myplug:Chat
    interval = 0.1
    greeting = hello there
"""


def test_plugin_module_in_the_config_directory_loads_and_its_ticks_publish(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), CHAT)
    s = d.stream("/chat")
    events = s.wait_events(3)
    assert [ev.type for ev in events] == ["tick"] * 3
    numbers = [int(ev.data.split()[1]) for ev in events]
    assert numbers == list(range(numbers[0], numbers[0] + 3))
    [svc] = d.ctl({"cmd": "list"})["services"]
    assert (svc["path"], svc["source"], svc["clients"]) == ("/chat", "myplug:Chat", 1)


def test_on_connect_refuse_turns_the_subscriber_away_with_its_status(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), CHAT)
    answer = d.request(b"GET /chat?name=mallory HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"no" in body
    s = d.stream("/chat?name=alice")
    assert s.status == 200
    assert d.ctl({"cmd": "list"})["services"][0]["clients"] == 1


def test_on_disconnect_is_told_why_the_client_left(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), CHAT)
    kicked = d.stream("/chat?client=kicked")
    left = d.stream("/chat?client=leaver")
    assert d.ctl({"cmd": "kick", "service": "/chat", "client": "kicked"})["closed"] == 1
    kicked.wait_closed()
    d.wait_log(r"/chat: left kicked kicked")
    left.close()
    d.wait_log(r"/chat: left leaver eof")
    answer = d.ctl({"cmd": "admin", "service": "/chat", "args": ["gone"]})
    assert answer == {"ok": True, "result": [["kicked", "kicked"], ["leaver", "eof"]]}


def test_on_admin_result_comes_back_in_json_and_in_text(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), CHAT)
    s = d.stream("/chat")
    answer = d.ctl({"cmd": "admin", "service": "/chat", "args": ["status", "now"]})
    assert answer == {"ok": True, "result": {"args": ["status", "now"], "clients": 1,
                                             "greeting": "hello there"}}
    with d.control_conn() as c:
        line = c.request("/chat status now")
        assert line.startswith("ok result=")
        assert '"args":["status","now"]' in line and '"greeting":"hello there"' in line
        assert c.request("admin /chat status") .startswith('ok result={"args":["status"]')
        said = c.request("/chat say hi all")
    event_id = re.fullmatch(r'ok result=\{"id":"(\d+-\d+)"\}', said)[1]
    s.wait_type("said", 1)
    [ev] = [ev for ev in s.events if ev.type == "said"]
    assert (ev.id, ev.data) == (event_id, "hi all")


def test_on_connect_sends_reach_the_new_stream_after_its_preamble_and_before_live(
        daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), "[/hi]\nclass = myplug:Greeter\n",
                 top="retry = 1500")
    old = d.stream("/hi?client=ann")
    old.wait_events(2)
    s = d.stream("/hi?client=ann")
    live = d.publish("/hi", "live")
    events = s.wait_events(3)
    assert [(e.type, e.data) for e in events] == [
        ("greet", "hello ann"), ("greet", "to every ann"), ("message", "live")]
    raw = bytes(s.body)
    assert raw.startswith(b"retry: 1500\n\nid: ")       # the priming id, then the greetings
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and ids[2] == live["id"]
    # The older stream of that id got the one sent by id, not the one sent to the object.
    assert [e.data for e in old.wait_events(4)][2:] == ["to every ann", "live"]
    refused = d.request(b"GET /hi?client=ann&refuse=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 403 ") and b"hello" not in refused
    stats = d.ctl({"cmd": "stats"})
    assert stats["clients"] == 2
    # The first stream's two greetings; the second's, one of them to both; "live" to both;
    # the refused one's "to every ann" to the two open streams and nothing to itself.
    assert stats["events_delivered"] == 2 + 3 + 2 + 2


BOOM = """
    [/boom]
    class = myplug:Boom
    interval = 0.1
    fail = {fail}

    [/fine]
    source = time
    interval = 0.1
    format = unix
"""


def assert_other_service_delivers(d):
    s = d.stream("/fine")
    assert s.status == 200
    s.wait_events(2)
    assert d.ctl({"cmd": "publish", "service": "/fine", "data": "still here"})["delivered"] == 1
    assert d.proc.poll() is None


def test_exception_in_on_tick_is_logged_with_the_service_and_isolated(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), BOOM.format(fail="on_tick"))
    line = d.wait_log(r"on_tick")
    assert "/boom" in line and "boom in on_tick" in line and "error" in line
    s = d.stream("/boom")
    s.wait_type("tick", 5)      # the service's timer goes on, its failures logged once a minute
    assert_other_service_delivers(d)
    assert sum("on_tick failed" in line for line in d.log) == 1


def test_exception_in_on_connect_is_logged_and_the_subscriber_gets_500(daemon, tmp_path):
    # An on_connect that may refuse but crashed cannot vouch for the client: fail closed,
    # as nginx's auth_request does when its check errs.
    d = start_in(daemon, plugin_dir(tmp_path), BOOM.format(fail="on_connect"))
    answer = d.request(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 ")
    line = d.wait_log(r"on_connect")
    assert "/boom" in line and "boom in on_connect" in line
    assert d.ctl({"cmd": "list"})["services"][0]["clients"] == 0
    assert_other_service_delivers(d)


def test_on_connect_that_raises_for_every_client_logs_one_traceback_not_one_each(
        daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), BOOM.format(fail="on_connect"))
    for _ in range(50):
        answer = d.request(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 ")
    assert_other_service_delivers(d)
    assert d.ctl({"cmd": "stats"})["refused"]["refused_by_service"] == 50
    d.stop()
    d.wait_log(r"info stopped$")        # every line it wrote is in d.log now
    failed = [line for line in d.log if "on_connect failed" in line]
    assert len(failed) == 1 and "Traceback" in failed[0], failed
    assert sum("Traceback" in line for line in d.log) == 1


def test_exception_in_on_admin_is_logged_and_answered_as_an_error(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), BOOM.format(fail="on_admin"))
    with d.control_conn() as c:
        answer = c.request({"cmd": "admin", "service": "/boom", "args": ["x"]})
        assert answer["ok"] is False and "boom in on_admin" in answer["error"]
        assert c.request("/boom x").startswith("error: ")
        assert c.request({"cmd": "list"})["ok"]          # the same connection still answers
    line = d.wait_log(r"on_admin")
    assert "/boom" in line and "boom in on_admin" in line
    assert_other_service_delivers(d)


def test_exception_in_on_disconnect_is_logged_and_isolated(daemon, tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), BOOM.format(fail="on_disconnect"))
    s = d.stream("/boom?client=gone")
    assert d.ctl({"cmd": "kick", "service": "/boom", "client": "gone"})["closed"] == 1
    s.wait_closed()
    line = d.wait_log(r"on_disconnect")
    assert "/boom" in line and "boom in on_disconnect" in line
    assert d.ctl({"cmd": "stats"})["clients"] == 0
    assert_other_service_delivers(d)


# -- a class that cannot be loaded ----------------------------------------------------------

BAD_CLASSES = [
    ("nosuchmodule:Chat", "nosuchmodule"),
    ("myplug:NotService", "NotService"),
    ("myplug:Missing", "Missing"),
]


def bad_config(tmp_path, cls):
    conf = plugin_dir(tmp_path)
    ini = write_ini(conf, f"""
        [/ok]
        source = none

        [/bad]
        interval = 1
        class = {cls}
    """)
    line = ini.read_text().split("\n").index(f"class = {cls}") + 1
    return conf, ini, line


def test_check_reports_a_class_that_cannot_be_loaded_with_file_and_line(tmp_path):
    for i, (cls, named) in enumerate(BAD_CLASSES):
        conf, ini, line = bad_config(tmp_path / str(i), cls)
        done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
        assert done.returncode == 1, (cls, done)
        [out] = done.stdout.splitlines()
        assert out.startswith(f"{ini}:{line}: "), out
        assert named in out
        assert "Traceback" not in done.stdout + done.stderr


def test_startup_with_a_class_that_cannot_be_loaded_exits_1_with_one_line(tmp_path):
    for i, (cls, named) in enumerate(BAD_CLASSES):
        conf, ini, line = bad_config(tmp_path / str(i), cls)
        done = run_ssed("-c", str(ini), cwd=tmp_path)
        assert done.returncode == 1, (cls, done)
        [err] = done.stderr.strip().splitlines()
        assert f"{ini}:{line}: " in err and named in err
        assert "Traceback" not in done.stderr
        assert not (conf / "ssed.sock").exists()


def test_plugin_that_raises_on_import_is_a_config_error(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "broken.py").write_text("raise RuntimeError('half written')\n")
    ini = write_ini(conf, "[/b]\nclass = broken:Chat\n")
    done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
    assert done.returncode == 1
    [out] = done.stdout.splitlines()
    assert out.startswith(f"{ini}:6: ") and "half written" in out


# -- reload reads changed plugin code ------------------------------------------------------------

VERSIONED = textwrap.dedent('''
    import ssed


    class Versioned(ssed.Service):
        def on_admin(self, args):
            return "VERSION"
''')


def test_reload_reads_a_changed_plugin_module_again_and_restarts_its_services(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "versioned.py").write_text(VERSIONED.replace("VERSION", "one"))
    d = start_in(daemon, conf, "[/v]\nclass = versioned:Versioned\n[/other]\n")
    s = d.stream("/v")
    assert d.ctl({"cmd": "admin", "service": "/v", "args": []})["result"] == "one"
    assert d.ctl({"cmd": "reload"})["changes"] == []        # unchanged: nothing read again
    (conf / "versioned.py").write_text(VERSIONED.replace("VERSION", "two, longer"))
    answer = d.ctl({"cmd": "reload"})
    assert answer["changes"] == ["reloaded module versioned (restarts /v)"], answer
    assert d.ctl({"cmd": "admin", "service": "/v", "args": []})["result"] == "two, longer"
    # The service restarted; its streams stayed open.
    assert d.publish("/v", "after")["delivered"] == 1
    assert s.wait_events(1)[0].data == "after"


def test_a_changed_plugin_that_no_longer_loads_is_a_refused_reload_naming_the_class_line(
        daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "versioned.py").write_text(VERSIONED.replace("VERSION", "one"))
    d = start_in(daemon, conf, "[/v]\nclass = versioned:Versioned\n[/other]\n")
    line = d.ini.read_text().split("\n").index("class = versioned:Versioned") + 1
    (conf / "versioned.py").write_text(VERSIONED.replace("VERSION", "two") + "\n1 / 0\n")
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] is False
    [error] = answer["errors"]
    assert error.startswith(f"{d.ini}:{line}: class versioned:Versioned: versioned changed and "
                            "cannot be loaded again (the old code runs on): ZeroDivisionError")
    d.wait_log("reload refused, config unchanged")
    assert d.ctl({"cmd": "admin", "service": "/v", "args": []})["result"] == "one"
    # Renamed class: the module loads but the class is gone; refused the same way.
    (conf / "versioned.py").write_text(VERSIONED.replace("Versioned(", "Renamed("))
    answer = d.ctl({"cmd": "reload"})
    assert answer["ok"] is False and answer["errors"] == [
        f"{d.ini}:{line}: class versioned:Versioned: not a subclass of ssed.Service"]
    assert d.ctl({"cmd": "admin", "service": "/v", "args": []})["result"] == "one"
    (conf / "versioned.py").write_text(VERSIONED.replace("VERSION", "fixed"))
    assert d.ctl({"cmd": "reload"})["ok"] is True
    assert d.ctl({"cmd": "admin", "service": "/v", "args": []})["result"] == "fixed"


def test_on_event_hears_each_broadcast_but_not_one_clients_nor_its_own_from_it(daemon,
                                                                                 tmp_path):
    d = start_in(daemon, plugin_dir(tmp_path), "[/echo]\nclass = myplug:Echo\n")
    s = d.stream("/echo?client=c1")
    ping = d.publish("/echo", "ping")["id"]
    assert d.ctl({"cmd": "publish", "service": "/echo", "data": "just you",
                  "client": "c1"})["ok"]
    hello = d.publish("/echo", "hello")["id"]
    assert [e.data for e in s.wait_events(4)] == ["ping", "pong", "just you", "hello"]
    # The pong it published from on_event is sent, and not heard again (no loop).
    answer = d.ctl({"cmd": "admin", "service": "/echo", "args": []})
    assert answer["result"] == [[ping, "ping"], [hello, "hello"]]
