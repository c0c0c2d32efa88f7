"""Channels made on demand from templates (SPEC 10), in process: the hub with a config, the
time set by hand, its work orders read (tests/orders.py); web.handle for what a request
makes. The plugin below is loaded through `class = chplugins:Room`."""
import sys

import pytest

from orders import Orders
from ssed import config as configmod, control, memory, metrics, web
from ssed.channel import ChannelsFull
from ssed.http1 import RequestParser, whole_request
from ssed.hub import Hub, PublishError
from ssed.service import Refuse, Service

T0 = 1000.0


class Room(Service):
    """One per channel: records its hooks on a class-wide list, refuses `mallory`."""
    log = []

    def on_start(self):
        Room.log.append(("start", self.path, self.config.history))

    def on_stop(self):
        Room.log.append(("stop", self.path))

    def on_connect(self, client, request):
        if client.id == "mallory":
            raise Refuse(403, "not you")

    def on_admin(self, args):
        return f"{self.path} {' '.join(args)}"


@pytest.fixture(autouse=True)
def chplugins(monkeypatch):
    monkeypatch.setitem(sys.modules, "chplugins", sys.modules[__name__])
    Room.log = []


def parse(ini, top=""):
    return configmod.parse(f"[ssed]\nretry = 0\nkeepalive = 15\n{top}\n{ini}", "test.ini")


class Rig:
    def __init__(self, ini, top="", journals=None):
        self.logged = []
        self.hub = Hub(parse(ini, top), lambda level, text: self.logged.append((level, text)),
                       now=T0, journals=journals)
        self.orders = Orders(self.hub)
        self.hub.start()

    def sub(self, paths, client_id=None):
        if isinstance(paths, str):
            paths = [paths]
        client, preamble = self.hub.subscribe(paths, client_id, "127.0.0.1", None, None)
        self.orders.sent[client].append(preamble)
        return client

    def at(self, t):
        """Advance the clock to T0 + t, as the loop does: through tick."""
        self.hub.tick(T0 + t)

    def ctl(self, **req):
        return control.execute(req, self.hub, None)

    def get(self, target, method="GET", headers=b""):
        raw = f"{method} {target} HTTP/1.1\r\nHost: x\r\n".encode() + headers + b"\r\n"
        request = whole_request(raw) or RequestParser(1024).feed(raw)
        return web.handle(self.hub, request, "127.0.0.1")


USER = """
[/chat]
[/user/*]
idle = 60
max_channels = 3
history = 5
"""


def test_a_channel_is_made_by_its_first_publish_and_keeps_its_history():
    rig = Rig(USER)
    assert "/user/alice" not in rig.hub.channels
    event, delivered = rig.hub.publish("/user/alice", "hi")
    assert delivered == 0
    channel = rig.hub.channels["/user/alice"]
    assert channel.template.path == "/user/*" and channel.path == "/user/alice"
    assert [e.data for e in channel.history.ring] == ["hi"]
    client = rig.hub.subscribe(["/user/alice"], "a", "127.0.0.1", "0-0", None)[1]
    assert b"data: hi" in client


def test_a_channel_is_made_by_its_first_subscriber_and_gets_events():
    rig = Rig(USER)
    alice = rig.sub("/user/alice", "alice")
    assert rig.hub.channels["/user/alice"].clients == {alice}
    rig.hub.publish("/user/alice", "x")
    rig.hub.publish("/user/bob", "y")
    assert b"data: x" in rig.orders.got(alice) and b"data: y" not in rig.orders.got(alice)


def test_bad_paths_make_nothing():
    rig = Rig(USER)
    for path in ("/user/", "/user//a", "/user/..", "/user/a b", "/user/" + "a" * 251, "/nope/a"):
        with pytest.raises(PublishError):
            rig.hub.publish(path, "x")
    assert list(rig.hub.channels) == ["/chat"]


def test_a_refused_publish_leaves_no_channel_behind():
    rig = Rig(USER + "json = true\n")
    with pytest.raises(PublishError, match="JSON"):
        rig.hub.publish("/user/alice", "not json")
    assert "/user/alice" not in rig.hub.channels
    assert rig.ctl(cmd="list")["services"][1]["channels"] == 0


def test_an_exact_service_beats_a_template_and_the_longest_prefix_wins():
    rig = Rig("[/user/admin]\nhistory = 1\n[/user/*]\n[/user/vip/*]\nhistory = 2\n")
    rig.hub.publish("/user/admin", "x")
    rig.hub.publish("/user/vip/bob", "x")
    rig.hub.publish("/user/bob", "x")
    assert rig.hub.channels["/user/admin"].template is None
    assert rig.hub.channels["/user/vip/bob"].template.path == "/user/vip/*"
    assert rig.hub.channels["/user/bob"].template.path == "/user/*"


# -- idle removal ----------------------------------------------------------------------------

def test_a_channel_goes_idle_seconds_after_its_last_publish_and_its_history_with_it():
    rig = Rig(USER)
    rig.hub.publish("/user/alice", "old")
    rig.at(59.9)
    assert "/user/alice" in rig.hub.channels
    rig.hub.publish("/user/alice", "again")      # a publish restarts its idle clock
    rig.at(60.1)
    assert "/user/alice" in rig.hub.channels
    rig.at(119.8)
    assert "/user/alice" in rig.hub.channels
    rig.at(120)
    assert "/user/alice" not in rig.hub.channels
    rig.hub.publish("/user/alice", "new")        # made again, with an empty history
    assert [e.data for e in rig.hub.channels["/user/alice"].history.ring] == ["new"]


def test_a_channel_with_a_subscriber_stays_and_goes_idle_seconds_after_the_last_leaves():
    rig = Rig(USER)
    a = rig.sub("/user/alice", "a")
    rig.at(500)
    assert rig.hub.channels["/user/alice"].clients == {a}
    assert rig.ctl(cmd="channels", template="/user/*")["channels"] == [
        {"path": "/user/alice", "clients": 1, "last_id": None, "idle": 0}]
    rig.orders.close(a, "eof")
    rig.at(530)
    assert rig.ctl(cmd="channels", template="/user/*")["channels"][0]["idle"] == 30
    rig.at(559.9)
    assert "/user/alice" in rig.hub.channels
    rig.at(560)
    assert "/user/alice" not in rig.hub.channels


def test_tick_is_due_when_the_next_channel_goes_and_sweeps_no_more_than_is_due():
    rig = Rig(USER.replace("max_channels = 3", "max_channels = 1000"))
    for i in range(100):
        rig.hub.now = T0 + i / 10
        rig.hub.publish(f"/user/u{i}", "x")         # goes at T0 + 60 + i/10
    channels = rig.hub.ondemand.by_prefix["/user/"].channels
    rig.at(60.05)
    assert len(channels) == 99 and "/user/u0" not in channels
    assert rig.hub.tick(T0 + 65) == pytest.approx(T0 + 65.1)   # the next to go, u51
    assert len(channels) == 49 and "/user/u51" in channels
    rig.at(200)
    assert not channels and rig.hub.ondemand._idle == []


def test_a_direct_publish_to_one_client_counts_as_use():
    rig = Rig(USER)
    rig.hub.publish("/user/alice", "x")
    rig.at(50)
    rig.hub.publish("/user/alice", "for you", client_id="nobody")
    rig.at(100)
    assert "/user/alice" in rig.hub.channels
    rig.at(110)
    assert "/user/alice" not in rig.hub.channels


# -- max_channels ------------------------------------------------------------------------------

def test_max_channels_refuses_publish_and_subscribe_until_one_goes():
    rig = Rig(USER)
    for name in ("a", "b", "c"):
        rig.hub.publish(f"/user/{name}", "x")
    with pytest.raises(ChannelsFull, match=r"/user/\* is at max_channels \(3\)"):
        rig.hub.publish("/user/d", "x")
    with pytest.raises(ChannelsFull):
        rig.sub("/user/d")
    assert rig.ctl(cmd="publish", service="/user/d", data="x")["error"].startswith(
        "/user/* is at max_channels (3)")
    rig.hub.publish("/user/a", "existing channels take publishes")
    rig.at(60)                              # b and c go; a was used at T0 too
    rig.hub.publish("/user/d", "x")
    assert sorted(rig.hub.ondemand.by_prefix["/user/"].channels) == ["/user/d"]


def test_over_max_channels_a_get_is_503_with_retry_after_and_makes_nothing():
    rig = Rig(USER + "publish_token = sixteen-bytes-long\n")
    for name in ("a", "b", "c"):
        rig.hub.publish(f"/user/{name}", "x")
    reply = rig.get("/user/d")
    assert reply.data.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: " in reply.data
    assert reply.refused == "max_channels"
    post = rig.get("/user/d", "POST", b"Authorization: Bearer sixteen-bytes-long\r\n"
                                      b"Content-Length: 0\r\n")
    assert post.data.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: " in post.data
    multi = rig.get("/?service=/chat&service=/user/d")
    assert multi.data.startswith(b"HTTP/1.1 503 ")
    assert sorted(rig.hub.channels) == ["/chat", "/user/a", "/user/b", "/user/c"]


# -- what a request makes ----------------------------------------------------------------------

def test_refused_head_and_bad_requests_make_no_channel():
    rig = Rig(USER + "token = sixteen-bytes-long\n")
    assert rig.get("/user/alice").data.startswith(b"HTTP/1.1 401 ")
    assert rig.get("/user/alice", "HEAD",
                   b"Authorization: Bearer sixteen-bytes-long\r\n").head_only
    assert rig.get("/user/alice", "OPTIONS").data.startswith(b"HTTP/1.1 204 ")
    assert rig.get("/user/al%69ce").data.startswith(b"HTTP/1.1 404 ")
    assert rig.get("/user/a/../b").data.startswith(b"HTTP/1.1 404 ")
    assert list(rig.hub.channels) == ["/chat"]
    stream = rig.get("/user/alice", headers=b"Authorization: Bearer sixteen-bytes-long\r\n")
    assert isinstance(stream, web.Stream) and "/user/alice" in rig.hub.channels


def test_a_stream_refused_by_the_channels_on_connect_leaves_no_channel():
    rig = Rig("[/chat]\n[/room/*]\nclass = chplugins:Room\n")
    reply = rig.get("/room/1?client=mallory")
    assert reply.data.startswith(b"HTTP/1.1 403 ")
    assert "/room/1" not in rig.hub.channels
    assert Room.log == [("start", "/room/1", 100), ("stop", "/room/1")]


def test_a_multiplexed_stream_makes_its_channels_once():
    rig = Rig(USER)
    stream = rig.get("/?service=/user/a&service=/chat&service=/user/a&service=/user/b")
    assert isinstance(stream, web.Stream)
    assert [ch.path for ch in stream.client.channels] == ["/user/a", "/chat", "/user/b"]
    rig.hub.publish("/user/b", "to b")
    assert b"data: to b" in rig.orders.got(stream.client)
    assert rig.get("/?service=/chat&service=/user/").data.startswith(b"HTTP/1.1 404 ")


# -- a class per channel -----------------------------------------------------------------------

def test_a_class_on_a_template_runs_one_instance_per_channel_with_its_path():
    rig = Rig("[/chat]\n[/room/*]\nclass = chplugins:Room\nidle = 10\n")
    rig.hub.publish("/room/1", "x")
    rig.sub("/room/2")
    one, two = rig.hub.channels["/room/1"].service, rig.hub.channels["/room/2"].service
    assert one is not two and (one.path, two.path) == ("/room/1", "/room/2")
    assert rig.ctl(cmd="admin", service="/room/2", args=["hello"]) == {
        "ok": True, "result": "/room/2 hello"}
    rig.at(10)
    assert Room.log == [("start", "/room/1", 100), ("start", "/room/2", 100),
                        ("stop", "/room/1")]


# -- control and metrics -----------------------------------------------------------------------

def test_list_shows_each_template_once_with_its_channel_count():
    rig = Rig(USER + "[/room/*]\nclass = chplugins:Room\n")
    rig.sub("/user/a")
    rig.hub.publish("/user/b", "x")
    assert rig.ctl(cmd="list")["services"] == [
        {"path": "/chat", "source": "none", "clients": 0, "last_id": None},
        {"path": "/user/*", "source": "none", "clients": 1, "last_id": None, "channels": 2},
        {"path": "/room/*", "source": "chplugins:Room", "clients": 0, "last_id": None,
         "channels": 0}]
    assert rig.ctl(cmd="channels", template="/nope/*") == {
        "ok": False, "error": "no template /nope/* (a template path ends in /*)"}
    assert rig.ctl(cmd="channels", template="/chat")["ok"] is False
    answer = control.handle_line("channels /user/*", rig.hub, None)[0].decode()
    assert answer.startswith('ok channels=[{"path":"/user/a","clients":1')


def test_clients_and_kick_work_on_a_channel():
    rig = Rig(USER)
    a = rig.sub("/user/alice", "alice")
    rig.sub("/user/bob", "alice")
    assert [c["id"] for c in rig.ctl(cmd="clients", service="/user/alice")["clients"]] \
        == ["alice"]
    assert rig.ctl(cmd="kick", service="/user/alice", client="alice") == {"ok": True,
                                                                           "closed": 1}
    assert rig.orders.closed == [("alice", "kicked")]
    assert not rig.hub.channels["/user/alice"].clients and a not in rig.hub.streams_of("alice")


def test_metrics_label_channels_by_their_template_and_keep_what_went():
    rig = Rig(USER)
    rig.sub("/user/a")
    rig.hub.publish("/user/a", "x")
    rig.hub.publish("/user/b", "x")
    rig.hub.publish("/user/b", "y")
    text = metrics.render(metrics.samples(rig.hub))
    assert 'ssed_clients{service="/user/*"} 1' in text
    assert 'ssed_events_published_total{service="/user/*"} 3' in text
    assert 'ssed_events_delivered_total{service="/user/*"} 1' in text
    assert "/user/a" not in text and "/user/b" not in text
    rig.at(100)                             # b goes; its counts stay in the template's
    text = metrics.render(metrics.samples(rig.hub))
    assert 'ssed_events_published_total{service="/user/*"} 3' in text


# -- reload ------------------------------------------------------------------------------------

def test_reload_removing_a_template_closes_its_streams_and_stops_its_instances():
    rig = Rig("[/chat]\n[/room/*]\nclass = chplugins:Room\n")
    a = rig.sub("/room/1", "a")
    both = rig.sub(["/chat", "/room/2"], "both")
    c = rig.sub("/chat", "c")
    rig.hub.reload(parse("[/chat]\n"))
    assert sorted(rig.orders.closed) == [("a", "removed"), ("both", "removed")]
    assert list(rig.hub.channels) == ["/chat"] and rig.hub.channels["/chat"].clients == {c}
    assert ("stop", "/room/1") in Room.log and ("stop", "/room/2") in Room.log
    assert a not in rig.hub.streams_of("a") and both not in rig.hub.streams_of("both")
    with pytest.raises(PublishError, match="no service /room/1"):
        rig.hub.publish("/room/1", "x")


def test_reload_changing_a_template_restarts_its_channels_and_keeps_their_streams():
    rig = Rig("[/chat]\n[/room/*]\nclass = chplugins:Room\nhistory = 5\n")
    a = rig.sub("/room/1", "a")
    before = rig.hub.channels["/room/1"].service
    rig.hub.reload(parse("[/chat]\n[/room/*]\nclass = chplugins:Room\nhistory = 2\n"))
    after = rig.hub.channels["/room/1"].service
    assert after is not before and after.path == "/room/1"
    assert Room.log == [("start", "/room/1", 5), ("stop", "/room/1"), ("start", "/room/1", 2)]
    assert rig.orders.closed == [] and rig.hub.channels["/room/1"].clients == {a}
    rig.hub.publish("/room/1", "still here")
    assert b"data: still here" in rig.orders.got(a)
    rig.hub.reload(parse("[/chat]\n[/room/*]\nclass = chplugins:Room\nhistory = 2\n"))
    assert rig.hub.channels["/room/1"].service is after      # unchanged: not restarted


def test_reload_adding_a_template_makes_its_channels_and_a_service_takes_a_channels_path():
    rig = Rig("[/chat]\n")
    with pytest.raises(PublishError):
        rig.hub.publish("/user/a", "x")
    rig.hub.reload(parse("[/chat]\n[/user/*]\n"))
    a = rig.sub("/user/a", "a")
    rig.hub.reload(parse("[/chat]\n[/user/*]\n[/user/a]\n"))
    assert rig.orders.closed == [("a", "removed")] and a not in rig.hub.streams_of("a")
    assert rig.hub.channels["/user/a"].template is None


# -- journals ----------------------------------------------------------------------------------

def test_each_channel_has_a_journal_of_its_own_that_brings_its_history_back(tmp_path):
    rig = Rig("[/chat]\n[/user/*]\nidle = 10\n", top=f"state_dir = {tmp_path}")
    rig.hub.publish("/user/alice", "kept")
    rig.hub.publish("/user/bob", "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chat.journal", "user%2Falice.journal", "user%2Fbob.journal"]
    rig.at(10)
    assert "/user/alice" not in rig.hub.channels
    client = rig.hub.subscribe(["/user/alice"], None, "127.0.0.1", "0-0", None)[1]
    assert b"data: kept" in client and b"other" not in client


def test_a_sweep_removes_at_most_a_thousand_channels_a_turn_and_compacts_after_many():
    rig = Rig(USER.replace("max_channels = 3", "max_channels = 5000"))
    for i in range(2500):
        rig.hub.publish(f"/user/u{i}", "x")
    channels = rig.hub.ondemand.by_prefix["/user/"].channels
    assert rig.hub.tick(T0 + 60) == T0 + 60      # more due: come back at once
    assert len(channels) == 1500
    assert rig.hub.tick(T0 + 60) == T0 + 60
    assert rig.hub.tick(T0 + 60) > T0 + 60 and not channels
    assert rig.hub.ondemand.removed == 0         # compacted on the way and at the end
    assert list(rig.hub.channels) == ["/chat"]


def test_the_end_of_a_wave_of_channels_compacts_in_place_and_a_few_going_do_not(monkeypatch):
    given_back = []
    monkeypatch.setattr(memory, "give_back", given_back.append)     # (its `collect`)
    rig = Rig(USER.replace("max_channels = 3", "max_channels = 5000"))
    channels, hub_channels = rig.hub.ondemand.by_prefix["/user/"].channels, rig.hub.channels
    for i in range(100):
        rig.hub.publish(f"/user/u{i}", "x")
    grown = sys.getsizeof(channels)
    rig.hub.tick(T0 + 60)                   # 100 went, none left: the end of a wave
    assert rig.hub.ondemand.removed == 0 and not channels
    assert given_back == [True]             # the free lists emptied: the wave is over
    assert sys.getsizeof(channels) < grown / 4          # the table was let go of
    # The same dicts, shrunk where they are (a new dict made now would pin an arena).
    assert rig.hub.ondemand.by_prefix["/user/"].channels is channels
    assert rig.hub.channels is hub_channels and list(hub_channels) == ["/chat"]
    for i in range(3):
        rig.hub.publish(f"/user/v{i}", "x")
    rig.hub.tick(T0 + 200)
    assert not channels and rig.hub.ondemand.removed == 3       # too few to compact for
    assert given_back == [True] and rig.hub.ondemand.uncollected == 3


def test_a_wave_with_many_channels_left_compacts_without_a_full_collection(monkeypatch):
    given_back = []
    monkeypatch.setattr(memory, "give_back", given_back.append)
    rig = Rig(USER.replace("max_channels = 3", "max_channels = 5000"))
    for i in range(1200):
        rig.hub.publish(f"/user/old{i}", "x")
    rig.at(30)
    for i in range(300):
        rig.hub.publish(f"/user/new{i}", "x")
    while rig.hub.tick(T0 + 60) <= T0 + 60:     # (1,000 a turn)
        pass
    # 1,200 went, 300 left: compacted, not collected.
    assert given_back == [False] and rig.hub.ondemand.uncollected == 1200
    rig.at(90)                              # ... and then the rest went: the wave is over
    assert given_back == [False, True] and rig.hub.ondemand.uncollected == 0


def test_shrink_keeps_the_dict_its_keys_and_their_order():
    d = {f"k{i}": i for i in range(1000)}
    for i in range(2, 1000):
        del d[f"k{i}"]
    before, same = sys.getsizeof(d), d
    memory.shrink(d)
    assert d is same and list(d.items()) == [("k0", 0), ("k1", 1)]
    assert sys.getsizeof(d) < before / 10
    small = sys.getsizeof(d)
    memory.shrink(d)                        # nothing to give back: left as it is
    assert sys.getsizeof(d) == small and list(d) == ["k0", "k1"]


def test_a_channels_streams_get_keepalives_and_ids_as_a_services_do():
    rig = Rig(USER)
    a = rig.sub("/user/a")
    chat = rig.sub("/chat")
    rig.orders.take(a), rig.orders.take(chat)
    rig.at(15)
    assert rig.orders.take(a) == b": keepalive\n\n" == rig.orders.take(chat)
    first = rig.hub.publish("/user/a", "x")[0]
    second = rig.hub.publish("/chat", "y")[0]
    assert second.key > first.key           # one id clock for services and channels


class Publisher(Service):
    """On stop, publishes to a channel of its template that does not exist yet."""

    def on_stop(self):
        self.publish("ignored")
        self._hub.publish("/room/made-on-stop", "x")


def test_hooks_that_make_channels_while_the_hub_stops_or_reloads_break_nothing():
    rig = Rig("[/chat]\n[/room/*]\nclass = chplugins:Publisher\n")
    rig.hub.publish("/room/1", "x")
    rig.hub.reload(parse("[/chat]\n[/room/*]\nclass = chplugins:Publisher\nhistory = 3\n"))
    assert "/room/made-on-stop" in rig.hub.channels
    rig.hub.stop()


class Crashing(Service):
    def on_start(self):
        raise RuntimeError("boom")


def test_channels_failing_alike_log_one_line_per_template(tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")                 # journals cannot be made under a regular file
    rig = Rig(f"[/chat]\n[/room/*]\nclass = chplugins:Crashing\njournal = {blocked}\n",
              top="")
    for i in range(50):
        rig.hub.publish(f"/room/{i}", "x")
    errors = [text for level, text in rig.logged if level == "error"]
    assert len([e for e in errors if "on_start failed" in e]) == 1
    assert len([e for e in errors if "journal" in e]) == 1
    rig.at(61)
    rig.hub.publish("/room/again", "x")
    later = [text for level, text in rig.logged if level == "error"][len(errors):]
    assert any("[49 more like this" in e for e in later)
