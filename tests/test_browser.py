"""The web side in a real browser (SPEC section 4): headless Chromium driven by tests/browser.py.

A test page served from another origin (tests/browser.PageServer) opens an `EventSource` to
the daemon and reports every open, error and event to the test through a DevTools binding;
the index page is loaded from the daemon itself and read with `Runtime.evaluate`. Every wait
is bounded (reports from a queue with a timeout, page conditions checked with a deadline).

Without Chromium these tests fail under CI=true and skip elsewhere (browser.require_chromium).
"""
import json
import time
from urllib.parse import quote, urlencode

import pytest

from browser import TIMEOUT, Browser, PageServer, require_chromium

RETRY = 300     # ms: the reconnection delay the daemon tells browsers in these tests

# The page reports {kind: open|error|event, ...} with the time (ms) it saw each.
ES_PAGE = """<!doctype html>
<meta charset="utf-8"><title>ssed EventSource probe</title>
<script>
"use strict";
const q = new URLSearchParams(location.search);
const send = (o) => ssedReport(JSON.stringify(Object.assign({t: performance.now()}, o)));
const es = new EventSource(q.get("url"));
window.es = es;
es.onopen = () => send({kind: "open"});
es.onerror = () => send({kind: "error", state: es.readyState});
for (const type of (q.get("types") || "message").split(",")) {
  es.addEventListener(type, (e) => send({kind: "event", type: e.type, id: e.lastEventId,
                                         data: e.data, origin: e.origin}));
}
</script>
"""


@pytest.fixture(scope="module")
def chromium():
    browser = Browser(require_chromium())
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def pages():
    server = PageServer({"/es.html": ES_PAGE})
    yield server
    server.close()


@pytest.fixture
def tab(chromium):
    t = chromium.tab()
    yield t
    t.close()


def open_probe(tab, pages, d, target, types="message"):
    """Load the probe page (on the page server's origin) streaming daemon `target`."""
    url = f"http://127.0.0.1:{d.port}{target}"
    tab.goto(pages.url("/es.html?" + urlencode({"url": url, "types": types})))


def events(reports):
    return [r for r in reports if r["kind"] == "event"]


def kinds(reports):
    return [r["kind"] for r in reports]


def publish_all(d, service, items, delivered=None):
    """Publish each data item; their ids. `delivered`: the count each publish must report."""
    ids = []
    for data in items:
        ans = d.publish(service, data)
        if delivered is not None:
            assert ans["delivered"] == delivered, (data, ans)
        ids.append(ans["id"])
    return ids


def test_page_on_another_origin_receives_events_through_eventsource_with_cors(daemon, pages, tab):
    d = daemon("[/feed]\n", top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    assert pages.origin != f"http://127.0.0.1:{d.port}"
    open_probe(tab, pages, d, "/feed", types="message,note")
    assert tab.report()["kind"] == "open"
    first = d.publish("/feed", "hello")
    second = d.publish("/feed", "two\nlines", event="note")
    third = d.publish("/feed", 'é "quoted" <b>')
    got = tab.reports_until(lambda r: len(events(r)) == 3)
    assert [(e["type"], e["id"], e["data"]) for e in events(got)] == [
        ("message", first["id"], "hello"), ("note", second["id"], "two\nlines"),
        ("message", third["id"], 'é "quoted" <b>')]
    assert kinds(got) == ["event"] * 3
    assert {e["origin"] for e in events(got)} == {f"http://127.0.0.1:{d.port}"}


@pytest.mark.parametrize("cors", ["http://elsewhere.example", ""], ids=["other-origin", "no-cors"])
def test_browser_refuses_a_stream_whose_cors_does_not_allow_its_origin(daemon, pages, tab, cors):
    d = daemon("[/feed]\n", top=f"cors_origins = {cors}\nretry = {RETRY}")
    held = publish_all(d, "/feed", ["one", "two"])
    assert len(held) == 2
    # lastEventId=0 asks for everything held: the response carries two events at once,
    # and the browser must still deliver none of them.
    open_probe(tab, pages, d, "/feed?lastEventId=0")
    report = tab.report()
    assert report == {"kind": "error", "state": 2, "t": report["t"]}   # CLOSED: no retry
    assert tab.evaluate("es.readyState") == 2
    assert tab.reports.empty(), list(tab.reports.queue)


def test_browser_reconnects_after_a_kick_and_resumes_exactly_after_its_last_id(daemon, pages, tab):
    d = daemon("[/feed]\n", top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    open_probe(tab, pages, d, "/feed?client=web1")
    assert tab.report()["kind"] == "open"
    before = publish_all(d, "/feed", ["b1", "b2", "b3"], delivered=1)
    tab.reports_until(lambda r: len(events(r)) == 3)
    assert d.ctl({"cmd": "kick", "service": "/feed", "client": "web1"})["closed"] == 1
    dropped = tab.report()
    assert (dropped["kind"], dropped["state"]) == ("error", 0)     # CONNECTING: it will retry
    # Published while no stream is open (delivered 0): only a replay can bring these.
    gap = publish_all(d, "/feed", ["g1", "g2", "g3", "g4"], delivered=0)
    reopened = tab.report()
    assert reopened["kind"] == "open"
    assert reopened["t"] - dropped["t"] >= RETRY * 0.8, "reconnected before the retry delay"
    got = tab.reports_until(lambda r: len(events(r)) == 4)
    after = publish_all(d, "/feed", ["a1", "a2"], delivered=1)
    got += tab.reports_until(lambda r: len(events(r)) == 2)
    assert kinds(got) == ["event"] * 6
    received = before + [e["id"] for e in events(got)]
    assert received == before + gap + after
    assert [e["data"] for e in events(got)] == ["g1", "g2", "g3", "g4", "a1", "a2"]


def test_browser_kicked_before_any_event_resumes_from_the_priming_id(daemon, pages, tab):
    d = daemon("[/quiet]\n", top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    open_probe(tab, pages, d, "/quiet?client=web2")
    assert tab.report()["kind"] == "open"
    assert d.ctl({"cmd": "kick", "service": "/quiet", "client": "web2"})["closed"] == 1
    dropped = tab.report()
    assert (dropped["kind"], dropped["state"]) == ("error", 0)
    gap = publish_all(d, "/quiet", ["p1", "p2", "p3"], delivered=0)
    got = tab.reports_until(lambda r: len(events(r)) == 3)
    assert kinds(got) == ["open", "event", "event", "event"]
    assert [(e["id"], e["data"]) for e in events(got)] == list(zip(gap, ["p1", "p2", "p3"]))


def test_multiplexed_eventsource_gets_both_services_in_id_order_and_resumes_across_them(
        daemon, pages, tab):
    d = daemon("[/a]\n[/b]\n", top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    open_probe(tab, pages, d, "/?service=/a&service=/b&client=mux1")
    assert tab.report()["kind"] == "open"
    order = ["/a", "/b", "/b", "/a", "/b", "/a"]
    ids = [d.publish(s, f"{s}-{i}")["id"] for i, s in enumerate(order)]
    got = tab.reports_until(lambda r: len(events(r)) == 6)
    assert [(e["id"], e["data"]) for e in events(got)] == [
        (i, f"{s}-{n}") for n, (i, s) in enumerate(zip(ids, order))]
    # One Last-Event-ID serves both services: drop the stream, publish to both meanwhile.
    assert d.ctl({"cmd": "kick", "service": "/b", "client": "mux1"})["closed"] == 1
    assert tab.report()["kind"] == "error"
    gap = [d.publish(s, f"gap {s}")["id"] for s in ["/b", "/a", "/b"]]
    got = tab.reports_until(lambda r: len(events(r)) == 3)
    assert kinds(got) == ["open", "event", "event", "event"]
    assert [e["id"] for e in events(got)] == gap


def test_access_token_in_the_query_lets_a_browser_subscribe_to_a_token_service(
        daemon, pages, tab):
    d = daemon("[/secret]\ntoken = s3cret-t0ken\n",
               top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    open_probe(tab, pages, d, "/secret?access_token=s3cret-t0ken")
    assert tab.report()["kind"] == "open"
    ev = d.publish("/secret", "for token holders")
    assert ev["delivered"] == 1
    got = tab.report()
    assert (got["kind"], got["id"], got["data"]) == ("event", ev["id"], "for token holders")


def test_browser_with_a_wrong_access_token_gets_no_stream(daemon, pages, tab):
    d = daemon("[/secret]\ntoken = s3cret-t0ken\n",
               top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    open_probe(tab, pages, d, "/secret?access_token=wrong")
    report = tab.report()
    assert (report["kind"], report["state"]) == ("error", 2)
    assert d.ctl({"cmd": "clients", "service": "/secret"})["clients"] == []


def test_page_on_another_origin_publishes_with_fetch_after_a_cors_preflight(daemon, pages, tab):
    # Authorization and a JSON Content-Type make the browser ask OPTIONS first.
    d = daemon("[/pub]\npublish_token = ptok\n",
               top=f"cors_origins = {pages.origin}\nretry = {RETRY}")
    open_probe(tab, pages, d, "/pub", types="message,chat")
    assert tab.report()["kind"] == "open"
    answer = tab.evaluate(
        "fetch(%s, {method: 'POST', headers: {Authorization: 'Bearer ptok',"
        " 'Content-Type': 'application/json'}, body: JSON.stringify({data: 'from a page',"
        " event: 'chat'})}).then(async (r) => [r.status, await r.json()])"
        % json.dumps(f"http://127.0.0.1:{d.port}/pub"))
    assert answer[0] == 200 and sorted(answer[1]) == ["delivered", "id"]
    assert answer[1]["delivered"] == 1
    got = tab.report()
    assert (got["kind"], got["type"], got["id"], got["data"]) == (
        "event", "chat", answer[1]["id"], "from a page")
    # A refusal is readable by the page too (not just "Failed to fetch").
    refused = tab.evaluate(
        "fetch(%s, {method: 'POST', headers: {Authorization: 'Bearer wrong'}, body: 'x'})"
        ".then(async (r) => [r.status, await r.text()])"
        % json.dumps(f"http://127.0.0.1:{d.port}/pub"))
    assert refused[0] == 401 and "token" in refused[1]


# -- the index page ------------------------------------------------------------------------

CARD = 'document.querySelector(`section.card[data-path="${%s}"]`)'


def card(path):
    return CARD % json.dumps(path)


def shown(tab, path):
    """(id, type, data) of each event a card lists, oldest first."""
    return tab.evaluate(
        f"[...{card(path)}.querySelectorAll('ul.events li:not(.empty)')].reverse().map(li =>"
        " [li.querySelector('.head span').textContent,"
        "  li.querySelector('.head .type').textContent, li.querySelector('pre').textContent])")


def test_index_page_shows_a_published_event_live(daemon, tab):
    d = daemon("[/feed]\n[/other]\nevent = tick\n[/secret]\ntoken = hidden\n",
               top=f"retry = {RETRY}")
    tab.goto(f"http://127.0.0.1:{d.port}/")
    tab.wait(f"{card('/feed')}.dataset.state === 'open' && "
             f"{card('/other')}.dataset.state === 'open'", what="both cards open")
    paths = tab.evaluate("[...document.querySelectorAll('section.card')].map(c => c.dataset.path)")
    assert paths == ["/feed", "/other"]        # the token service is not listed
    data = '<img src=x onerror="ssedReport(1)"> & "quotes"\nsecond line'
    ev = d.publish("/feed", data)
    assert ev["delivered"] == 1
    tab.wait(f"{card('/feed')}.dataset.count === '1'", what="the event in the /feed card")
    assert shown(tab, "/feed") == [[ev["id"], "message", data]]
    assert tab.evaluate(f"{card('/feed')}.querySelector('img')") is None   # text, not HTML
    tick = d.publish("/other", "t1")        # the service's own event type
    tab.wait(f"{card('/other')}.dataset.count === '1'", what="the event in the /other card")
    assert shown(tab, "/other") == [[tick["id"], "tick", "t1"]]
    assert tab.evaluate(f"{card('/feed')}.querySelector('.last').textContent") == ev["id"]
    # One stream per card, still the first one (no reconnects), and nothing went wrong.
    assert len(d.ctl({"cmd": "clients", "service": "/feed"})["clients"]) == 1
    assert tab.evaluate(f"{card('/feed')}.dataset.state") == "open"
    assert tab.reports.empty() and not [c for c in tab.console if "uncaught" in c], tab.console
    # The page's script keeps to itself: its stop() once shadowed window.stop.
    assert tab.evaluate("String(window.stop).includes('[native code]') && typeof start === 'undefined'")


def test_index_page_watch_selected_together_opens_a_multiplexed_view(daemon, tab):
    d = daemon("[/a]\n[/b]\n[/c]\n", top=f"retry = {RETRY}")
    tab.goto(f"http://127.0.0.1:{d.port}/")
    tab.wait(f"{card('/a')}.dataset.state === 'open' && {card('/b')}.dataset.state === 'open'")
    assert tab.evaluate("document.getElementById('mux').disabled") is True
    tab.evaluate(f"{card('/a')}.querySelector('.pick input').click();"
                 f"{card('/b')}.querySelector('.pick input').click();"
                 "document.getElementById('mux').click()")
    mux = "/?service=" + quote("/a", safe="") + "&service=" + quote("/b", safe="")
    tab.wait(f"{card(mux)} && {card(mux)}.dataset.state === 'open'", what="the mux card open")
    order = ["/b", "/a", "/c", "/a"]
    ids = [d.publish(s, f"on {s}")["id"] for s in order]
    tab.wait(f"{card(mux)}.dataset.count === '3'", what="3 events in the mux card")
    assert shown(tab, mux) == [[i, "message", f"on {s}"] for i, s in zip(ids, order)
                               if s != "/c"]
    tab.wait(f"{card('/c')}.dataset.count === '1'")


def test_index_page_keeps_only_five_streams_live_so_the_browser_is_not_starved(daemon, tab):
    # Browsers allow 6 HTTP/1.1 connections per server: a 6th stream and the client-count
    # poll would wait forever. Past five, cards start paused and "Watch" swaps one in.
    d = daemon("".join(f"[/s{i}]\n" for i in range(1, 8)), top=f"retry = {RETRY}")
    tab.goto(f"http://127.0.0.1:{d.port}/")
    states = ("[...document.querySelectorAll('section.card')]"
              ".map(c => c.dataset.state).join(' ')")
    tab.wait(f"{states} === 'open open open open open paused paused'", what="5 open, 2 paused")
    tab.evaluate(f"{card('/s7')}.querySelector('.toggle').click()")
    tab.wait(f"{states} === 'paused open open open open paused open'", what="/s7 swapped in")
    ev = d.publish("/s7", "seen")
    assert ev["delivered"] == 1
    tab.wait(f"{card('/s7')}.dataset.count === '1'")


def test_index_page_shows_a_new_visitor_the_last_five_events_then_live_ones(daemon, tab):
    d = daemon("[/chat]\n[/quiet]\n", top=f"retry = {RETRY}")
    ids = [d.publish("/chat", f"m{i}", event="said" if i % 2 else None)["id"] for i in range(40)]
    tab.goto(f"http://127.0.0.1:{d.port}/")
    tab.wait(f"{card('/chat')}.dataset.count === '5'", what="the last five events of /chat")
    assert shown(tab, "/chat") == [[ids[i], "said" if i % 2 else "message", f"m{i}"]
                                   for i in range(35, 40)]
    tab.wait(f"{card('/quiet')}.dataset.state === 'open'")
    assert tab.evaluate(f"{card('/quiet')}.querySelector('.empty').textContent") == \
        "waiting for events…"
    live = d.publish("/chat", "live")
    tab.wait(f"{card('/chat')}.dataset.count === '6'", what="the live event after them")
    assert shown(tab, "/chat")[-1] == [live["id"], "message", "live"]
    assert len({row[0] for row in shown(tab, "/chat")}) == 6        # none twice
    # The browser asked for no /favicon.ico, and nothing was refused.
    assert d.ctl({"cmd": "stats"})["refused"] == {}


def stream_ids(d, path):
    """The client ids of the streams open on `path`."""
    return {c["id"] for c in d.ctl({"cmd": "clients", "service": path})["clients"]}


def test_index_page_shows_events_of_a_type_it_learns_after_the_load(daemon, tab):
    # An EventSource hands over only the types it listens for. A type first published after
    # the page loaded is learnt from the JSON index (the tab getting the focus asks at once),
    # and the stream reopens after the last event shown, so the missed ones are replayed:
    # here the card has shown none yet, so it replays from the page's start.
    d = daemon("[/chat]\n", top=f"retry = {RETRY}")
    tab.goto(f"http://127.0.0.1:{d.port}/")
    tab.wait(f"{card('/chat')}.dataset.state === 'open'", what="the /chat card open")
    said = d.publish("/chat", "in a new type", event="said")
    tab.evaluate("window.dispatchEvent(new Event('focus'))")
    tab.wait(f"{card('/chat')}.dataset.count === '1'", what="the event of the new type")
    assert shown(tab, "/chat") == [[said["id"], "said", "in a new type"]]
    live = d.publish("/chat", "and live", event="said")
    tab.wait(f"{card('/chat')}.dataset.count === '2'", what="a live event of that type")
    assert shown(tab, "/chat")[-1] == [live["id"], "said", "and live"]


def test_index_page_learns_types_the_service_no_longer_holds(daemon, tab):
    # history = 0: the type is in no held event, yet the index lists it (the hub remembers the
    # types a service broadcast), so the page listens for the next one.
    d = daemon("[/ticker]\nhistory = 0\n", top=f"retry = {RETRY}")
    tab.goto(f"http://127.0.0.1:{d.port}/")
    tab.wait(f"{card('/ticker')}.dataset.state === 'open'", what="the /ticker card open")
    before = stream_ids(d, "/ticker")
    assert len(before) == 1
    d.publish("/ticker", "unseen", event="quote")
    tab.evaluate("window.dispatchEvent(new Event('focus'))")
    deadline = time.monotonic() + TIMEOUT      # the page reopens its stream once it knows
    while len(now := stream_ids(d, "/ticker")) != 1 or now == before:
        assert time.monotonic() < deadline, "the page never reopened for the new type"
        tab.evaluate("new Promise((done) => setTimeout(done, 50))")
    tab.wait(f"{card('/ticker')}.dataset.state === 'open'", what="reopened")
    ev = d.publish("/ticker", "seen", event="quote")
    tab.wait(f"{card('/ticker')}.dataset.count === '1'", what="the next event of that type")
    assert shown(tab, "/ticker") == [[ev["id"], "quote", "seen"]]
