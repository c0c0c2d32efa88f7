"""hub: services, clients, the preamble, publishing, keepalives, ticks, bans and reload.

No sockets: the hub gets a config from `ssed.config.parse`, a list for its log, and the
time set by hand (`hub.now` / `hub.tick(now)`); the tests read the work orders it leaves
(`Orders`: what each client was sent, what was closed, which commands were run and killed). The plugin classes
below are loaded through `class = hubplugins:Name`, the name under which the fixture puts
this module in `sys.modules`.
"""
import ipaddress
import json
import sys

import pytest

from orders import Orders
from ssed import config as configmod
from ssed.history import parse_id
from ssed.hub import Hub, PublishError
from ssed.service import Refuse, Service

T0 = 1000.0


# -- plugins (loaded by name through the config) ------------------------------------------

class Recorder(Service):
    """Records every hook call on its instance."""

    def on_start(self):
        self.calls = [("start", self.now)]

    def on_stop(self):
        self.calls.append(("stop", self.now))

    def on_tick(self):
        self.calls.append(("tick", self.now))

    def on_connect(self, client, request):
        self.calls.append(("connect", client.id))

    def on_disconnect(self, client, reason):
        self.calls.append(("disconnect", client.id, reason))

    def ticks(self):
        return [when for name, when, *_ in self.calls if name == "tick"]


class Boom(Service):
    """Every hook raises; each tick counts first, so we can see it ran."""

    def on_start(self):
        self.ticked = 0
        raise RuntimeError("boom on start")

    def on_tick(self):
        self.ticked += 1
        raise RuntimeError("boom on tick")

    def on_disconnect(self, client, reason):
        raise RuntimeError("boom on disconnect")

    def on_stop(self):
        raise RuntimeError("boom on stop")


class BadConnect(Service):
    def on_connect(self, client, request):
        raise KeyError("no such user")


class Picky(Service):
    def on_connect(self, client, request):
        if client.id == "mallory":
            raise Refuse(403, "not you")


class Greeter(Service):
    """on_connect does what its `send` option lists, in order: broadcast, send to the
    client object or to its id, refuse, or publish to something that is not a client."""

    def on_connect(self, client, request):
        for what in self.options.get("send", "object").split():
            if what == "broadcast":
                self.publish(f"{client.id} joined", event="joined")
            elif what == "object":
                self.publish(f"hello {client.id}", event="greet", client=client)
            elif what == "id":
                self.publish(f"hello id {client.id}", event="greet", client=client.id)
            elif what == "refuse":
                raise Refuse(403, "changed my mind")
            elif what == "number":
                self.publish("to 42", client=42)


class Runner(Service):
    """Runs a command through the hub; records what came back."""

    def on_start(self):
        self.results = []

    def run(self, command="echo hi"):
        return self.spawn(command, self.done)

    def done(self, output, error):
        self.results.append((output, error))
        if output == b"raise":
            raise ValueError("bad callback")


@pytest.fixture(autouse=True)
def hubplugins(monkeypatch):
    monkeypatch.setitem(sys.modules, "hubplugins", sys.modules[__name__])


def parse(ini, top=""):
    """A config with retry 3000 and keepalive 15 unless `top` sets them."""
    defaults = "".join(f"{key} = {value}\n" for key, value in (("retry", 3000), ("keepalive", 15))
                       if f"{key} =" not in top)
    return configmod.parse(f"[ssed]\n{defaults}{top}\n{ini}", "test.ini")


class Rig:
    def __init__(self, ini, top="", now=T0):
        self.logged = []
        self.hub = Hub(parse(ini, top), lambda level, text: self.logged.append(
            (level, text)), now=now)
        self.orders = Orders(self.hub)
        self.hub.start()

    def sub(self, paths, client_id=None, address="127.0.0.1", last_id=None):
        if isinstance(paths, str):
            paths = [paths]
        client, preamble = self.hub.subscribe(paths, client_id, address, last_id, None)
        self.orders.sent[client].append(preamble)
        return client

    def errors(self):
        return [text for level, text in self.logged if level == "error"]


BASIC = """
[/chat]
[/news]
"""


def ms(t):
    return int(t * 1000)


# -- subscribe: the preamble ----------------------------------------------------------------

def test_new_stream_gets_retry_then_a_priming_id_from_the_clock():
    rig = Rig(BASIC)
    client = rig.sub("/chat")
    assert rig.orders.got(client) == b"retry: 3000\n\nid: %d-0\n\n" % ms(T0)
    assert client in rig.hub.channels["/chat"].clients


def test_priming_ids_are_taken_from_the_one_clock_and_the_next_event_is_greater():
    rig = Rig(BASIC)
    a = rig.sub("/chat")
    b = rig.sub("/news")
    assert rig.orders.got(b) == b"retry: 3000\n\nid: %d-1\n\n" % ms(T0)
    event, _ = rig.hub.publish("/chat", "x")
    assert event.id == "%d-2" % ms(T0)
    assert parse_id(event.id) > parse_id("%d-1" % ms(T0))
    assert rig.orders.take(a).endswith(b"id: %d-2\ndata: x\n\n" % ms(T0))


def test_retry_zero_sends_no_retry_line():
    rig = Rig(BASIC, top="retry = 0")
    assert rig.orders.got(rig.sub("/chat")) == b"id: %d-0\n\n" % ms(T0)


def test_session_event_carries_the_client_id_without_an_id_line():
    rig = Rig("[/chat]\nsession_event = true\n")
    client = rig.sub("/chat", client_id="alice")
    assert rig.orders.got(client) == (b"retry: 3000\n\nevent: session\ndata: alice\n\n"
                                  b"id: %d-0\n\n" % ms(T0))


def test_generated_client_ids_are_distinct_and_url_safe():
    rig = Rig(BASIC)
    ids = {rig.sub("/chat").id for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 12 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


def publish_three(rig, path="/chat"):
    ids = []
    for i, t in enumerate((T0 + 1, T0 + 2, T0 + 3)):
        rig.hub.now = t
        ids.append(rig.hub.publish(path, f"e{i}")[0].id)
    rig.hub.now = T0 + 10
    return ids


def test_replay_after_last_event_id_sends_only_newer_events_and_no_priming_id():
    rig = Rig(BASIC)
    ids = publish_three(rig)
    client = rig.sub("/chat", last_id=ids[0])
    assert rig.orders.got(client) == (b"retry: 3000\n\n"
                                  b"id: %d-0\ndata: e1\n\n" % ms(T0 + 2) +
                                  b"id: %d-0\ndata: e2\n\n" % ms(T0 + 3))


def test_replay_with_an_id_not_of_our_form_sends_everything_held():
    rig = Rig(BASIC)
    publish_three(rig)
    client = rig.sub("/chat", last_id="not-an-id")
    assert rig.orders.got(client).count(b"data: ") == 3


def test_no_last_event_id_means_live_events_only():
    rig = Rig(BASIC)
    publish_three(rig)
    assert rig.orders.got(rig.sub("/chat")) == b"retry: 3000\n\nid: %d-0\n\n" % ms(T0 + 10)


def test_replay_at_the_newest_id_sends_a_priming_id_greater_than_it():
    rig = Rig(BASIC)
    ids = publish_three(rig)
    client = rig.sub("/chat", last_id=ids[-1])
    assert rig.orders.got(client) == b"retry: 3000\n\nid: %d-0\n\n" % ms(T0 + 10)


def test_multiplexed_replay_merges_services_in_id_order():
    rig = Rig(BASIC)
    rig.hub.now = T0 + 1
    first = rig.hub.publish("/chat", "c1")[0].id
    rig.hub.publish("/news", "n1")
    rig.hub.now = T0 + 2
    rig.hub.publish("/chat", "c2")
    rig.hub.publish("/news", "n2")
    client = rig.sub(["/news", "/chat"], last_id=first)
    wire = rig.orders.got(client)
    assert [line for line in wire.split(b"\n") if line.startswith(b"data")] == [
        b"data: n1", b"data: c2", b"data: n2"]


# -- publish ------------------------------------------------------------------------------

def test_publish_frames_once_and_delivers_the_same_bytes_to_every_subscriber():
    rig = Rig(BASIC)
    a, b = rig.sub("/chat"), rig.sub("/chat")
    other = rig.sub("/news")
    for c in (a, b, other):
        rig.orders.take(c)
    rig.hub.now = T0 + 5
    event, delivered = rig.hub.publish("/chat", "hi\nall\r\nthere", "msg")
    wire = b"id: %d-0\nevent: msg\ndata: hi\ndata: all\ndata: there\n\n" % ms(T0 + 5)
    assert event.wire == wire
    assert delivered == 2
    assert rig.orders.sent[a] == [wire] and rig.orders.sent[b] == [wire]
    assert rig.orders.sent[a][0] is rig.orders.sent[b][0]       # one framing, shared
    assert rig.orders.take(other) == b""
    assert rig.hub.stats["events_published"] == 1
    assert rig.hub.stats["events_delivered"] == 2
    assert rig.hub.channels["/chat"].history.last_id == event.id


def test_publish_without_subscribers_delivers_zero_but_keeps_the_event():
    rig = Rig(BASIC)
    event, delivered = rig.hub.publish("/news", "x")
    assert delivered == 0
    assert rig.hub.channels["/news"].history.last_id == event.id


def test_publish_without_a_type_takes_the_service_event_key():
    rig = Rig("[/t]\nevent = tick\n")
    event, _ = rig.hub.publish("/t", "x")
    assert event.wire == b"id: %d-0\nevent: tick\ndata: x\n\n" % ms(T0)
    assert rig.hub.publish("/t", "y", "other")[0].type == "other"


@pytest.mark.parametrize("path, data, event, message", [
    ("/nope", "x", None, "no service /nope"),
    ("/chat", b"x", None, "data must be a string"),
    ("/chat", "x", "a\nb", "event type must not contain LF"),
    ("/chat", "x", "a\rb", "event type must not contain CR"),
    ("/chat", "x", "a\0b", "event type must not contain NUL"),
    ("/chat", "x", 5, "event type must be a string"),
    ("/json", "{not json", None, "/json takes JSON data only"),
    ("/chat", "\ud800", None, "data is not valid Unicode text"),
])
def test_bad_publish_is_refused_and_changes_nothing(path, data, event, message):
    rig = Rig(BASIC + "[/json]\njson = true\n")
    client = rig.sub("/chat")
    rig.orders.take(client)
    with pytest.raises(PublishError) as info:
        rig.hub.publish(path, data, event)
    assert message in str(info.value)
    assert rig.orders.take(client) == b""
    assert rig.hub.channels["/chat"].history.since(None) == []
    assert rig.hub.stats["events_published"] == 0


def test_json_service_takes_valid_json():
    rig = Rig("[/json]\njson = true\n")
    assert rig.hub.publish("/json", '{"a": [1, 2]}')[1] == 0


def test_publish_to_one_client_id_reaches_all_its_streams_and_no_other():
    rig = Rig(BASIC)
    a1, a2 = rig.sub("/chat", "alice"), rig.sub(["/news", "/chat"], "alice")
    bob = rig.sub("/chat", "bob")
    a_news_only = rig.sub("/news", "alice")
    for c in (a1, a2, bob, a_news_only):
        rig.orders.take(c)
    rig.hub.now = T0 + 1
    event, delivered = rig.hub.publish("/chat", "psst", client_id="alice")
    assert delivered == 2
    assert rig.orders.take(a1) == rig.orders.take(a2) == b"id: %d-0\ndata: psst\n\n" % ms(T0 + 1)
    assert rig.orders.take(bob) == b""
    assert rig.orders.take(a_news_only) == b""
    assert rig.hub.publish("/chat", "x", client_id="nobody")[1] == 0


def test_events_sent_to_one_client_are_never_replayed():
    rig = Rig(BASIC)
    rig.sub("/chat", "alice")
    rig.hub.now = T0 + 1
    public = rig.hub.publish("/chat", "public")[0]
    rig.hub.now = T0 + 2
    rig.hub.publish("/chat", "private", client_id="alice")
    assert rig.hub.channels["/chat"].history.last_id == public.id
    again = rig.sub("/chat", "alice", last_id="0-0")
    wire = rig.orders.got(again)
    assert b"data: public" in wire and b"private" not in wire


# -- keepalive and ticks ------------------------------------------------------------------

KEEPALIVE = b": keepalive\n\n"


def test_keepalive_comes_after_keepalive_seconds_of_silence_and_not_before():
    rig = Rig(BASIC)
    client = rig.sub("/chat")
    rig.orders.take(client)
    rig.hub.tick(T0 + 14.9)
    assert rig.orders.take(client) == b""
    rig.hub.tick(T0 + 15)
    assert rig.orders.take(client) == KEEPALIVE
    rig.hub.tick(T0 + 20)
    assert rig.orders.take(client) == b""
    rig.hub.tick(T0 + 30)
    assert rig.orders.take(client) == KEEPALIVE


def test_no_keepalive_while_the_channel_is_active():
    rig = Rig(BASIC)
    client = rig.sub("/chat")
    for t in (T0 + 10, T0 + 20, T0 + 30):
        rig.hub.now = t
        rig.hub.publish("/chat", "x")
        rig.hub.tick(t + 5)
    assert KEEPALIVE not in rig.orders.got(client)
    rig.orders.take(client)
    rig.hub.tick(T0 + 45)
    assert rig.orders.take(client) == KEEPALIVE


def test_keepalive_is_per_client_a_recent_connection_waits_its_own_silence():
    rig = Rig(BASIC)
    old = rig.sub("/chat")
    rig.hub.now = T0 + 10
    new = rig.sub("/chat")
    rig.orders.take(old), rig.orders.take(new)
    rig.hub.tick(T0 + 15)
    assert rig.orders.take(old) == KEEPALIVE
    assert rig.orders.take(new) == b""
    rig.hub.tick(T0 + 25)
    assert rig.orders.take(new) == KEEPALIVE
    assert rig.orders.take(old) == b""


def test_an_event_sent_to_one_client_counts_as_activity_for_it_only():
    rig = Rig(BASIC)
    alice, bob = rig.sub("/chat", "alice"), rig.sub("/chat", "bob")
    rig.hub.now = T0 + 10
    rig.hub.publish("/chat", "psst", client_id="alice")
    rig.orders.take(alice), rig.orders.take(bob)
    rig.hub.tick(T0 + 15)
    assert rig.orders.take(alice) == b""
    assert rig.orders.take(bob) == KEEPALIVE


def test_multiplexed_client_gets_no_keepalive_while_one_of_its_services_is_active():
    rig = Rig(BASIC)
    both = rig.sub(["/chat", "/news"])
    rig.orders.take(both)
    rig.hub.now = T0 + 10
    rig.hub.publish("/news", "x")
    rig.orders.take(both)
    rig.hub.tick(T0 + 15)
    assert rig.orders.take(both) == b""
    rig.hub.tick(T0 + 25)
    assert rig.orders.take(both) == KEEPALIVE      # exactly one, not one per service


def test_tick_returns_when_to_come_back():
    rig = Rig(BASIC, top="keepalive = 2")
    assert rig.hub.tick(T0) == T0 + 2                   # the first keepalive that can be due
    client = rig.sub("/chat")
    assert rig.hub.tick(T0 + 1) == T0 + 2               # ... and still, with a client since T0
    rig.hub.now = T0 + 1.5
    rig.hub.publish("/chat", "x")
    rig.hub.tick(T0 + 2)
    assert rig.hub.tick(T0 + 2.1) == T0 + 3.5           # silence restarts at the last event
    assert KEEPALIVE not in rig.orders.got(client)
    rig = Rig("[/r]\nclass = hubplugins:Recorder\ninterval = 0.3\n")
    assert rig.hub.tick(T0) == T0 + 0.3                 # the next tick
    rig = Rig(BASIC)
    assert T0 < rig.hub.tick(T0) <= T0 + 15


def test_tick_runs_on_tick_at_the_interval():
    rig = Rig("[/r]\nclass = hubplugins:Recorder\ninterval = 2\n")
    service = rig.hub.channels["/r"].service
    for t in (T0, T0 + 1, T0 + 1.99, T0 + 2, T0 + 3, T0 + 4, T0 + 5.5, T0 + 6):
        rig.hub.tick(t)
    assert service.ticks() == [T0, T0 + 2, T0 + 4, T0 + 6]


def test_tick_after_a_stall_runs_once_then_resumes_without_a_burst():
    rig = Rig("[/r]\nclass = hubplugins:Recorder\ninterval = 2\n")
    service = rig.hub.channels["/r"].service
    rig.hub.tick(T0)
    rig.hub.tick(T0 + 100)          # 50 intervals missed
    assert service.ticks() == [T0, T0 + 100]
    for t in (T0 + 100.5, T0 + 100.9):
        rig.hub.tick(t)
    assert service.ticks() == [T0, T0 + 100]
    rig.hub.tick(T0 + 101)          # at most half an interval early, never a catch-up burst
    rig.hub.tick(T0 + 103)
    assert service.ticks() == [T0, T0 + 100, T0 + 101, T0 + 103]


def test_tick_after_the_wall_clock_went_back_does_not_stall():
    rig = Rig("[/r]\nclass = hubplugins:Recorder\ninterval = 2\n")
    service = rig.hub.channels["/r"].service
    rig.hub.tick(T0)
    rig.hub.tick(T0 - 3600)
    assert service.ticks() == [T0, T0 - 3600]


def test_hook_exceptions_are_logged_with_the_service_and_isolated():
    rig = Rig("[/boom]\nclass = hubplugins:Boom\n[/r]\nclass = hubplugins:Recorder\n")
    assert any("service /boom: on_start failed" in e and "boom on start" in e
               for e in rig.errors())
    rig.hub.tick(T0)
    assert rig.hub.channels["/boom"].service.ticked == 1
    assert rig.hub.channels["/r"].service.ticks() == [T0]
    assert any("service /boom: on_tick failed" in e and "Traceback" in e for e in rig.errors())
    client = rig.sub(["/boom", "/r"], "c1")
    rig.hub.tick(T0 + 1)
    rig.orders.close(client, "kicked")
    assert any("service /boom: on_disconnect failed" in e for e in rig.errors())
    assert ("disconnect", "c1", "kicked") in rig.hub.channels["/r"].service.calls
    assert rig.hub.client_count == 0
    rig.hub.stop()
    assert any("service /boom: on_stop failed" in e for e in rig.errors())
    assert rig.hub.channels["/r"].service.calls[-1] == ("stop", T0 + 1)


def test_a_hook_that_keeps_raising_logs_one_traceback_a_minute_per_service_and_hook():
    rig = Rig("[/bad]\nclass = hubplugins:BadConnect\n[/worse]\nclass = hubplugins:BadConnect\n"
              "[/boom]\nclass = hubplugins:Boom\ninterval = 1\n")
    rig.logged.clear()
    for i in range(500):
        rig.hub.now = T0 + i * 0.1
        for path in ("/bad", "/worse"):
            with pytest.raises(Refuse) as info:      # still fails closed, every time
                rig.hub.subscribe([path], None, "10.0.0.1", None, None)
            assert info.value.status == 500
        rig.hub.tick(T0 + i * 0.1)
    assert rig.hub.channels["/boom"].service.ticked == 50
    errors = rig.errors()
    assert [e.split(" failed")[0] for e in errors] == [
        "service /bad: on_connect", "service /worse: on_connect", "service /boom: on_tick"]
    assert all("Traceback" in e for e in errors)
    rig.logged.clear()
    rig.hub.now = T0 + 60.5
    for path in ("/bad", "/worse"):
        with pytest.raises(Refuse):
            rig.hub.subscribe([path], None, "10.0.0.1", None, None)
    assert len(rig.errors()) == 2
    assert all("KeyError('no such user')" in e and "Traceback" in e for e in rig.errors())
    assert all("[499 more like this in the last 60 s were not logged]" in e
               for e in rig.errors())
    assert rig.hub.client_count == 0 and rig.hub.per_ip == {}


def test_refuse_in_on_connect_adds_the_client_nowhere():
    rig = Rig("[/a]\n[/picky]\nclass = hubplugins:Picky\n")
    with pytest.raises(Refuse) as info:
        rig.hub.subscribe(["/a", "/picky"], "mallory", "10.0.0.1", None, None)
    assert info.value.status == 403
    assert rig.hub.channels["/a"].clients == set()
    assert rig.hub.client_count == 0 and rig.hub.by_id == {}
    rig.sub(["/a", "/picky"], "alice")
    assert rig.hub.client_count == 1


# -- on_connect sends to the new stream ---------------------------------------------------

def greeter(send, extra=""):
    return Rig(f"[/g]\nclass = hubplugins:Greeter\nsend = {send}\n{extra}")


def frames(wire):
    """The blocks of a stream's bytes, each as its lines."""
    return [block.split(b"\n") for block in wire.split(b"\n\n") if block]


def test_on_connect_send_to_the_client_object_follows_the_preamble():
    rig = greeter("object")
    other = rig.sub("/g", "old")
    rig.orders.take(other)
    client = rig.sub("/g", "new")
    assert frames(rig.orders.got(client)) == [
        [b"retry: 3000"], [b"id: %d-2" % ms(T0)],
        [b"id: %d-3" % ms(T0), b"event: greet", b"data: hello new"]]
    assert rig.orders.take(other) == b""        # sent to that stream only
    live, _ = rig.hub.publish("/g", "live")
    assert rig.orders.got(client).endswith(live.wire)
    assert (rig.hub.stats["events_delivered"], rig.hub.channels["/g"].delivered) == (4, 4)


def test_on_connect_send_to_the_client_id_reaches_the_new_stream_and_the_older_ones():
    rig = greeter("id")
    old = rig.sub("/g", "alice")
    bob = rig.sub("/g", "bob")
    rig.orders.take(old), rig.orders.take(bob)
    new = rig.sub("/g", "alice")
    greeting = b"event: greet\ndata: hello id alice\n\n"
    assert rig.orders.take(old).endswith(greeting)
    assert rig.orders.got(new).endswith(greeting) and rig.orders.got(new).startswith(b"retry: 3000\n\n")
    assert rig.orders.take(bob) == b""
    assert len(frames(rig.orders.got(new))) == 3      # retry, priming id, greeting


def test_on_connect_events_come_after_the_replay_in_id_order_with_its_broadcasts():
    rig = greeter("broadcast object broadcast")
    watcher = rig.sub("/g", "watcher")
    rig.orders.take(watcher)
    rig.hub.now = T0 + 1
    before, _ = rig.hub.publish("/g", "before")
    first = rig.hub.publish("/g", "first")[0]
    rig.hub.now = T0 + 2
    replayed = rig.sub("/g", "r", last_id=before.id)
    wire = rig.orders.take(replayed)
    datas = [[line for line in f if line.startswith(b"data")] for f in frames(wire)]
    assert datas == [[], [b"data: first"], [b"data: r joined"], [b"data: hello r"],
                     [b"data: r joined"]]
    ids = [parse_id(line[4:].decode()) for line in wire.split(b"\n") if line.startswith(b"id: ")]
    assert ids == sorted(ids) and len(set(ids)) == 4
    assert first.id in wire.decode()
    fresh = rig.sub("/g", "f")
    # Without Last-Event-ID: the priming id, then what its hooks broadcast and sent, in order.
    wire = rig.orders.got(fresh)
    ids = [parse_id(line[4:].decode()) for line in wire.split(b"\n") if line.startswith(b"id: ")]
    assert ids == sorted(ids) and len(ids) == 4
    assert [f[-1] for f in frames(wire)][1:] == [
        b"id: %d-4" % ms(T0 + 2), b"data: f joined", b"data: hello f", b"data: f joined"]
    # The watcher got the four broadcasts live, none of the greetings.
    assert rig.orders.take(watcher).count(b" joined\n\n") == 4
    assert b"hello" not in rig.orders.got(watcher)


def test_on_connect_events_to_a_stream_with_nothing_to_replay_follow_its_priming_id():
    rig = greeter("object")
    newest, _ = rig.hub.publish("/g", "newest")
    rig.hub.now = T0 + 1
    client = rig.sub("/g", "c", last_id=newest.id)
    assert frames(rig.orders.got(client)) == [
        [b"retry: 3000"], [b"id: %d-0" % ms(T0 + 1)],
        [b"id: %d-1" % ms(T0 + 1), b"event: greet", b"data: hello c"]]


def test_on_connect_that_refuses_after_sending_leaks_nothing_and_counts_nothing():
    rig = greeter("id refuse", extra="[/plain]\n")
    old = rig.sub("/plain", "alice")        # an older alice stream, on another service
    delivered = rig.hub.stats["events_delivered"]
    with pytest.raises(Refuse):
        rig.hub.subscribe(["/g"], "alice", "10.0.0.9", None, None)
    assert rig.hub.client_count == 1 and rig.hub.streams_of("alice") == (old,)
    assert rig.hub.per_ip == {"127.0.0.1": 1}
    assert rig.hub.channels["/g"].clients == set()
    assert rig.hub.stats["events_delivered"] == delivered
    assert rig.hub.channels["/g"].delivered == 0
    assert [c for c in rig.orders.sent if c is not old] == []
    assert rig.hub.joining is None
    # The next stream of the same id is not sent what the refused one was.
    rig2 = greeter("object refuse")
    with pytest.raises(Refuse):
        rig2.hub.subscribe(["/g"], "bob", "10.0.0.9", None, None)
    assert rig2.orders.sent == {} and rig2.hub.stats["events_delivered"] == 0


def test_on_connect_send_reaches_a_multiplexed_stream_once():
    rig = greeter("object", extra="[/plain]\n")
    client = rig.sub(["/plain", "/g"], "m")
    assert rig.orders.got(client).count(b"data: hello m") == 1


def test_publish_to_a_client_object_reaches_that_stream_only_and_a_closed_one_nowhere():
    rig = greeter("broadcast")
    a1, a2 = rig.sub("/g", "alice"), rig.sub("/g", "alice")
    rig.orders.take(a1), rig.orders.take(a2)
    service = rig.hub.channels["/g"].service
    service.publish("just a1", client=a1)
    assert b"just a1" in rig.orders.take(a1) and rig.orders.take(a2) == b""
    rig.orders.close(a1, "eof")
    published = rig.hub.stats["events_published"]
    service.publish("gone", client=a1)
    assert rig.orders.take(a2) == b"" and rig.orders.take(a1) == b""
    assert rig.hub.stats["events_published"] == published + 1


@pytest.mark.parametrize("bad", [42, b"alice", ["alice"], object()])
def test_publish_to_something_that_is_not_a_client_is_a_type_error_and_changes_nothing(bad):
    rig = greeter("broadcast")
    rig.sub("/g", "alice")
    service = rig.hub.channels["/g"].service
    last, published = rig.hub.clock.last, rig.hub.stats["events_published"]
    with pytest.raises(TypeError, match=r"/g: publish\(client=...\) takes a Client or a client id"):
        service.publish("x", client=bad)
    assert (rig.hub.clock.last, rig.hub.stats["events_published"]) == (last, published)


def test_on_connect_publishing_to_a_non_client_fails_closed_and_is_logged():
    rig = greeter("number")
    with pytest.raises(Refuse) as info:
        rig.hub.subscribe(["/g"], "x", "10.0.0.1", None, None)
    assert info.value.status == 500
    assert any("on_connect failed" in e and "TypeError" in e for e in rig.errors())


# -- detach, kick, counts -----------------------------------------------------------------

def test_detach_updates_per_ip_counts_and_dropped_reasons():
    rig = Rig("[/r]\nclass = hubplugins:Recorder\n")
    a = rig.sub("/r", "a", "10.0.0.1")
    b = rig.sub("/r", "b", "10.0.0.1")
    c = rig.sub("/r", "c", "::1")
    assert rig.hub.per_ip == {"10.0.0.1": 2, "::1": 1}
    assert rig.hub.client_count == 3
    rig.orders.close(a, "slow")
    assert rig.hub.per_ip == {"10.0.0.1": 1, "::1": 1}
    rig.orders.close(b, "eof")
    rig.orders.close(c, "shutdown")
    assert rig.hub.per_ip == {}
    assert rig.hub.client_count == 0
    assert dict(rig.hub.dropped) == {"slow": 1}      # eof and shutdown are not drops
    assert rig.hub.channels["/r"].clients == set()
    assert rig.hub.by_id == {}
    calls = rig.hub.channels["/r"].service.calls
    assert [call for call in calls if call[0] == "disconnect"] == [
        ("disconnect", "a", "slow"), ("disconnect", "b", "eof"), ("disconnect", "c", "shutdown")]


def test_kick_closes_the_client_id_streams_of_that_service_only():
    rig = Rig(BASIC)
    a1, a2 = rig.sub("/chat", "alice"), rig.sub("/chat", "alice")
    a_news = rig.sub("/news", "alice")
    rig.sub("/chat", "bob")
    assert rig.hub.kick("/chat", "alice") == 2
    assert sorted(rig.orders.closed) == [("alice", "kicked"), ("alice", "kicked")]
    assert rig.hub.streams_of("alice") == (a_news,)
    assert rig.hub.dropped["kicked"] == 2
    assert rig.hub.kick("/chat", "alice") == 0
    with pytest.raises(PublishError):
        rig.hub.kick("/nope", "alice")
    assert a1 not in rig.hub.channels["/chat"].clients and a2 not in rig.hub.channels["/chat"].clients


# -- bans ---------------------------------------------------------------------------------

def net(text):
    return ipaddress.ip_network(text, strict=False)


def test_ban_of_an_ipv4_range_closes_its_streams_including_ipv4_mapped_ones():
    rig = Rig(BASIC)
    v4 = rig.sub("/chat", "v4", "10.1.2.3")
    mapped = rig.sub(["/chat", "/news"], "mapped", "::ffff:10.9.9.9")
    keep = rig.sub("/chat", "keep", "11.0.0.1")
    keep6 = rig.sub("/chat", "keep6", "::1")
    assert rig.hub.ban(net("10.0.0.0/8"), 60) == 2
    assert sorted(rig.orders.closed) == [("mapped", "banned"), ("v4", "banned")]
    assert rig.hub.channels["/chat"].clients == {keep, keep6}
    assert rig.hub.dropped["banned"] == 2
    assert v4.conn is None and mapped.conn is None      # (the fake io has no conns)


@pytest.mark.parametrize("ban, inside, outside", [
    ("1.2.3.4", ["1.2.3.4", "::ffff:1.2.3.4"], ["1.2.3.5", "::1", "2001:db8::1"]),
    ("10.0.0.0/8", ["10.0.0.1", "10.255.255.255", "::ffff:10.1.1.1"], ["11.0.0.0", "9.255.255.255"]),
    ("2001:db8::/32", ["2001:db8::1", "2001:db8:ffff::1"], ["2001:db9::1", "1.2.3.4"]),
    ("fe80::/10", ["fe80::1%eth0", "fe80::abcd"], ["fec0::1"]),
    ("::1", ["::1"], ["127.0.0.1", "::2"]),
])
def test_banned_matches_addresses_in_the_network(ban, inside, outside):
    rig = Rig(BASIC)
    rig.hub.ban(net(ban), 60)
    for address in inside:
        assert rig.hub.banned(address), address
    for address in outside + ["", "not an address", "unix:/x"]:
        assert not rig.hub.banned(address), address


def test_ban_expires_at_its_end_and_unban_lifts_it():
    rig = Rig(BASIC)
    rig.hub.ban(net("1.2.3.4"), 60)
    rig.hub.ban(net("5.6.7.8"), 3600)
    rig.hub.now = T0 + 59.9
    assert rig.hub.banned("1.2.3.4")
    rig.hub.now = T0 + 60
    assert not rig.hub.banned("1.2.3.4")
    assert net("1.2.3.4") not in rig.hub.bans            # expired bans are forgotten
    assert rig.hub.unban(net("5.6.7.8")) == 1
    assert not rig.hub.banned("5.6.7.8")
    assert rig.hub.unban(net("5.6.7.8")) == 0


def test_ban_again_extends_or_shortens_it():
    rig = Rig(BASIC)
    rig.hub.ban(net("1.2.3.4"), 10)
    rig.hub.ban(net("1.2.3.4"), 100)
    rig.hub.now = T0 + 50
    assert rig.hub.banned("1.2.3.4")
    assert rig.hub.bans == {net("1.2.3.4"): T0 + 100}


# -- children -----------------------------------------------------------------------------

def test_service_spawn_runs_one_child_at_a_time_and_calls_back():
    rig = Rig("[/run]\nclass = hubplugins:Runner\ninterval = 3\n")
    service = rig.hub.channels["/run"].service
    assert service.run("echo hi") is True
    assert service.run("echo again") is False               # one at a time
    command, timeout, done, name, cwd = rig.orders.spawned[0]
    assert (command, timeout, name) == ("echo hi", 3, "/run")
    done(b"hi\n", None)
    assert service.results == [(b"hi\n", None)]
    assert service.run("echo again") is True
    rig.orders.spawned[1][2](b"raise", None)                    # a callback that raises
    assert any("command callback failed" in e for e in rig.errors())
    assert service.run() is True                            # and the service goes on


def test_reload_that_removes_a_service_kills_its_child():
    rig = Rig("[/run]\nclass = hubplugins:Runner\n")
    rig.hub.channels["/run"].service.run()
    rig.hub.reload(parse("[/other]\n"))
    assert rig.orders.killed == ["child-1"]


# -- reload -------------------------------------------------------------------------------

BEFORE = """
[/same]
class = hubplugins:Recorder
[/changed]
class = hubplugins:Recorder
interval = 1
[/gone]
class = hubplugins:Recorder
"""

AFTER = """
[/same]
class = hubplugins:Recorder
[/changed]
class = hubplugins:Recorder
interval = 2
history = 2
[/new]
class = hubplugins:Recorder
"""


def test_reload_starts_stops_and_restarts_services_and_keeps_open_streams():
    rig = Rig(BEFORE)
    same_service = rig.hub.channels["/same"].service
    changed_service = rig.hub.channels["/changed"].service
    gone_service = rig.hub.channels["/gone"].service
    s = rig.sub("/same", "s")
    c = rig.sub("/changed", "c")
    g = rig.sub("/gone", "g")
    both = rig.sub(["/same", "/gone"], "both")
    for i in range(5):
        rig.hub.now = T0 + 1 + i
        rig.hub.publish("/same", f"s{i}")
        rig.hub.publish("/changed", f"c{i}")
    rig.hub.now = T0 + 10
    rig.hub.reload(parse(AFTER))

    assert list(rig.hub.channels) == ["/same", "/changed", "/new"]
    # removed: its streams closed with "removed", its service stopped
    assert sorted(rig.orders.closed) == [("both", "removed"), ("g", "removed")]
    assert rig.hub.dropped["removed"] == 2
    assert ("stop", T0 + 10) in gone_service.calls
    assert ("disconnect", "g", "removed") in gone_service.calls
    assert g not in rig.hub.streams_of("g") and both not in rig.hub.channels["/same"].clients
    # unchanged: same service object, not restarted, its client and history kept
    assert rig.hub.channels["/same"].service is same_service
    assert ("stop", T0 + 10) not in same_service.calls
    assert rig.hub.channels["/same"].clients == {s}
    assert len(rig.hub.channels["/same"].history.since(None)) == 5
    # changed: restarted with the new settings, clients kept, history resized to the newest
    new_changed = rig.hub.channels["/changed"].service
    assert new_changed is not changed_service
    assert changed_service.calls[-1] == ("stop", T0 + 10)
    assert new_changed.calls == [("start", T0 + 10)]
    assert new_changed.config.interval == 2
    assert rig.hub.channels["/changed"].clients == {c}
    assert [e.data for e in rig.hub.channels["/changed"].history.since(None)] == ["c3", "c4"]
    # added
    assert rig.hub.channels["/new"].service.calls == [("start", T0 + 10)]
    # streams that stayed still get events
    rig.orders.take(s), rig.orders.take(c)
    rig.hub.publish("/same", "after")
    rig.hub.publish("/changed", "after")
    assert b"data: after" in rig.orders.take(s) and b"data: after" in rig.orders.take(c)
    assert rig.hub.client_count == 2


def test_reload_picks_up_new_global_settings():
    rig = Rig(BASIC)
    rig.hub.reload(parse(BASIC, top="retry = 500"))
    assert rig.orders.got(rig.sub("/chat")).startswith(b"retry: 500\n\n")


def test_reload_to_the_same_config_changes_nothing():
    rig = Rig(BEFORE)
    services = {p: ch.service for p, ch in rig.hub.channels.items()}
    client = rig.sub("/gone")
    rig.hub.reload(parse(BEFORE))
    assert {p: ch.service for p, ch in rig.hub.channels.items()} == services
    assert rig.orders.closed == []
    assert rig.hub.channels["/gone"].clients == {client}


def test_quotes_keeps_what_any_publish_says_for_new_subscribers_within_max_quotes(
        monkeypatch, tmp_path):
    """A `quotes` source learns quotes from every event of its path (on_event), its own or a
    publisher's: a new subscriber gets the newest of each. What is not a quote is ignored;
    past MAX_QUOTES symbols, new ones are not kept (one warning), known ones still change."""
    monkeypatch.setattr("ssed.sources.MAX_QUOTES", 3)
    (tmp_path / "none.txt").write_text("")
    rig = Rig(f"[/q]\nsource = quotes\nfile = {tmp_path / 'none.txt'}\ninterval = 60\n")
    for data in ('{"A": 1, "B": 2}', "not json", '["A", 9]', '{"C": 3, "B": "x", "E": true}',
                 '{"D": 4}', '{"A": 5.5}'):
        rig.hub.publish("/q", data)
    client = rig.sub("/q")
    snapshot = rig.orders.got(client).split(b"data: ")[1].split(b"\n")[0]
    assert json.loads(snapshot) == {"A": 5.5, "B": 2, "C": 3}
    warned = [text for level, text in rig.logged if "over 3 symbols" in text]
    assert len(warned) == 1 and "'D'" in warned[0] and rig.errors() == [], rig.logged
