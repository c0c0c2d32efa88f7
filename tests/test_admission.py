"""admission: the ladders that turn clients away (every rung, its bytes, the order between
rungs), the per-address counter, and the web layer's use of them, with no subprocess."""
import time

import pytest

from ssed import admission
from ssed import config as configmod
from ssed import web
from ssed.addresses import network_of
from ssed.admission import LADDERS, PerAddress, refusal
from ssed.http1 import whole_request
from ssed.hub import Hub


class Limits:
    max_clients = 10
    max_clients_per_ip = 3


LIMITS = Limits()
FREE = {"from_address": 2, "total": 9}      # one under each limit

SHUTTING_DOWN = (503, "shutting down", "shutting_down")
BANNED = (403, "address banned", "banned")
CONNECTIONS_FROM_ADDRESS = (429, "too many connections from your address", "max_clients_per_ip")
CONNECTIONS = (503, "too many connections", "max_clients")
STREAMS = (503, "too many clients", "max_clients")
STREAMS_FROM_ADDRESS = (429, "too many streams from your address", "max_clients_per_ip")


def outcome(stage, **given):
    refused = refusal(stage, LIMITS, **{**FREE, **given})
    return None if refused is None else (refused.status, refused.text, refused.reason)


@pytest.mark.parametrize("stage, given, expected", [
    # each rung alone, at its limit
    ("connect", {}, None),
    ("connect", {"stopping": True}, SHUTTING_DOWN),
    ("connect", {"banned": True}, BANNED),
    ("connect", {"from_address": 3}, CONNECTIONS_FROM_ADDRESS),
    ("connect", {"total": 10}, CONNECTIONS),
    ("request", {}, None),
    ("request", {"banned": True}, BANNED),
    ("stream", {}, None),
    ("stream", {"total": 10}, STREAMS),
    ("stream", {"from_address": 3}, STREAMS_FROM_ADDRESS),
    # past the limit too
    ("connect", {"from_address": 99, "total": 0}, CONNECTIONS_FROM_ADDRESS),
    ("stream", {"from_address": 0, "total": 99}, STREAMS),
    # what a stage does not check
    ("stream", {"stopping": True}, None),           # a request read before the stop streams
    ("stream", {"banned": True}, None),             # ("request" checked it just before)
    ("request", {"stopping": True, "from_address": 99, "total": 99}, None),
    # the order between rungs: the first one tripped answers
    ("connect", {"stopping": True, "banned": True, "from_address": 3, "total": 10},
     SHUTTING_DOWN),
    ("connect", {"banned": True, "from_address": 3, "total": 10}, BANNED),
    ("connect", {"from_address": 3, "total": 10}, CONNECTIONS_FROM_ADDRESS),
    ("stream", {"from_address": 3, "total": 10}, STREAMS),    # the other way round from connect
])
def test_each_rung_and_the_order_between_them(stage, given, expected):
    assert outcome(stage, **given) == expected


def test_counts_and_flags_default_to_nothing_open():
    assert refusal("request", LIMITS) is None
    assert refusal("request", LIMITS, banned=True).reason == "banned"
    assert refusal("connect", LIMITS, 0, 0, True).reason == "shutting_down"   # positional


def test_an_unknown_stage_is_a_bug_not_an_admission():
    with pytest.raises(KeyError):
        refusal("accept", LIMITS, total=10)


def test_the_table_holds_every_rung_once_per_ladder_and_reasons_are_metric_labels():
    for stage, ladder in LADDERS.items():
        rungs = [rung for rung, _ in ladder]
        assert len(rungs) == len(set(rungs)), stage
    reasons = {refused.reason for ladder in LADDERS.values() for _, refused in ladder}
    assert reasons == {"shutting_down", "banned", "max_clients_per_ip", "max_clients"}


def head(status, length, retry):
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {length}\r\nCache-Control: no-store\r\n"
            + ("Retry-After: 7\r\n" if retry else "") + "Connection: close\r\n\r\n").encode()


@pytest.mark.parametrize("stage, given, data", [
    ("connect", {"stopping": True}, head("503 Service Unavailable", 39, True)
     + b"503 Service Unavailable: shutting down\n"),
    ("connect", {"banned": True}, head("403 Forbidden", 30, False)
     + b"403 Forbidden: address banned\n"),
    ("request", {"banned": True}, head("403 Forbidden", 30, False)
     + b"403 Forbidden: address banned\n"),
    ("connect", {"from_address": 3}, head("429 Too Many Requests", 62, True)
     + b"429 Too Many Requests: too many connections from your address\n"),
    ("connect", {"total": 10}, head("503 Service Unavailable", 46, True)
     + b"503 Service Unavailable: too many connections\n"),
    ("stream", {"total": 10}, head("503 Service Unavailable", 42, True)
     + b"503 Service Unavailable: too many clients\n"),
    ("stream", {"from_address": 3}, head("429 Too Many Requests", 58, True)
     + b"429 Too Many Requests: too many streams from your address\n"),
])
def test_each_refusal_replies_these_bytes(monkeypatch, stage, given, data):
    monkeypatch.setattr(admission, "retry_after", lambda: "7")
    assert refusal(stage, LIMITS, **{**FREE, **given}).reply() == data


def test_retry_after_is_spread_over_1_to_10_seconds():
    values = {admission.retry_after() for _ in range(500)}
    assert values <= {str(n) for n in range(1, 11)} and len(values) > 5
    retry = {dict(refusal("stream", LIMITS, total=10).headers())["Retry-After"]
             for _ in range(200)}
    assert len(retry) > 5
    assert refusal("request", LIMITS, banned=True).headers() == []


# -- the per-address counter ----------------------------------------------------------------

def test_per_address_counts_up_and_down_and_forgets_an_address_at_zero():
    counts = PerAddress()
    counts.add("10.0.0.1")
    counts.add("10.0.0.1")
    counts.add("::1")
    assert counts == {"10.0.0.1": 2, "::1": 1}
    assert counts.get("10.0.0.1", 0) == 2 and counts.get("10.0.0.9", 0) == 0
    counts.remove("10.0.0.1")
    assert counts == {"10.0.0.1": 1, "::1": 1}
    counts.remove("10.0.0.1")
    counts.remove("::1")
    assert counts == {} and len(counts) == 0
    assert counts.get("10.0.0.1", 0) == 0 and "10.0.0.1" not in counts     # no entry made


def test_per_address_remove_without_add_raises_and_changes_nothing():
    counts = PerAddress()
    counts.add("a")
    with pytest.raises(KeyError):
        counts.remove("b")
    assert counts == {"a": 1}
    assert not hasattr(counts, "__dict__")


# -- the web layer's use: web.handle in process, with a real Hub ----------------------------

def make_hub(top=""):
    config = configmod.parse("[ssed]\nlisten = 127.0.0.1:0\nmax_clients = 3\n"
                             f"max_clients_per_ip = 2\n{top}[/s]\nsource = none\n", "t.ini")
    log = lambda level, text: None     # noqa: E731
    log.debug = False
    hub = Hub(config, log, now=time.time())
    hub.start()
    return hub


def get(path="/s"):
    return whole_request(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


def test_web_refuses_streams_over_the_limits_with_the_stream_ladder(monkeypatch):
    monkeypatch.setattr(admission, "retry_after", lambda: "7")
    hub = make_hub()
    for address in ("10.0.0.1", "10.0.0.1"):
        assert type(web.handle(hub, get(), address)) is web.Stream
    refused = web.handle(hub, get(), "10.0.0.1")
    assert (refused.refused, refused.data) == ("max_clients_per_ip", head(
        "429 Too Many Requests", 58, True)
        + b"429 Too Many Requests: too many streams from your address\n")
    assert type(web.handle(hub, get(), "10.0.0.2")) is web.Stream
    for address in ("10.0.0.3", "10.0.0.1"):        # both over: the total answers first
        refused = web.handle(hub, get(), address)
        assert (refused.refused, refused.data) == ("max_clients", head(
            "503 Service Unavailable", 42, True) + b"503 Service Unavailable: too many clients\n")
    assert hub.client_count == 3 and hub.per_ip == {"10.0.0.1": 2, "10.0.0.2": 1}


@pytest.mark.parametrize("path", ["/s", "/healthz", "/nowhere", "/"])
def test_web_refuses_every_request_from_a_banned_address(path):
    hub = make_hub()
    hub.ban(network_of("::ffff:10.0.0.0/104"), 60)
    for address in ("10.1.2.3", "::ffff:10.1.2.3"):
        refused = web.handle(hub, get(path), address)
        assert (refused.refused, refused.data) == ("banned", head("403 Forbidden", 30, False)
                                                   + b"403 Forbidden: address banned\n")
    assert getattr(web.handle(hub, get(path), "11.0.0.1"), "refused", None) != "banned"


@pytest.mark.parametrize("allow, address, open_", [
    ("", "127.0.0.1", True), ("", "::ffff:127.0.0.1", True), ("", "::1", True),
    ("", "10.0.0.1", False), ("", "fe80::1%eth0", False), ("", "unix:/x", False),
    ("status_allow = fe80::/10\n", "fe80::1%eth0", True),
    ("status_allow = 10.0.0.0/8\n", "::ffff:10.9.9.9", True),
    ("status_allow = ::/0\n", "::ffff:10.9.9.9", False),    # an IPv4 client is IPv4 only
])
def test_status_endpoints_open_to_status_allow_only(allow, address, open_):
    answer = web.handle(make_hub(allow), get("/healthz"), address)
    if open_:
        assert answer.refused is None and answer.data.startswith(b"HTTP/1.1 200 OK\r\n")
    else:
        assert answer.refused == "status_forbidden"
        assert answer.data.endswith(f"403 Forbidden: /healthz is not open to {address}\n"
                                    .encode())
