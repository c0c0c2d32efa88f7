"""`/healthz` and `/metrics` (SPEC section 4): only for `status_allow`; the metrics are the
Prometheus text format (0.0.4), read here by a strict parser (every sample's metric has a HELP
and a TYPE before it, valid names and labels, float values, no duplicate series), and the
figures move as the daemon's work does.
"""
import math
import re
import socket
import textwrap
import time

import pytest

from confdir import start_in
from conftest import TIMEOUT

BODY = textwrap.dedent("""
    [/a]
    [/b]
    [/secret]
    token = s3cret
""")

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
LABELS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_exposition(text):
    """{(name, frozenset(labels.items())): value} of a Prometheus text exposition, and
    {name: type}. Raises AssertionError on anything the format does not allow."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    helps, types, samples, done = {}, {}, {}, set()
    current = None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}: {line!r}"
        assert line and line == line.strip(), where
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[0] == "#" and parts[1] in ("HELP", "TYPE") and len(parts) == 4, where
            name = parts[2]
            assert NAME.match(name), where
            if parts[1] == "HELP":
                assert name not in helps and name not in done, f"second HELP, {where}"
                helps[name] = parts[3]
            else:
                assert name not in types and name not in done, f"second TYPE, {where}"
                assert parts[3] in TYPES, where
                types[name] = parts[3]
            if current is not None and current != name:
                done.add(current)
            current = name
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, where
        name, label_text, value = m.groups()
        assert name == current, f"sample away from its HELP/TYPE block, {where}"
        assert name in helps and name in types, f"no HELP and TYPE before it, {where}"
        labels = {}
        if label_text:
            pos = 0
            while pos < len(label_text):
                lm = LABELS.match(label_text, pos)
                assert lm, f"bad labels, {where}"
                assert lm[1] not in labels and not lm[1].startswith("__"), where
                labels[lm[1]] = lm[2].replace("\\n", "\n").replace('\\"', '"') \
                    .replace("\\\\", "\\")
                pos = lm.end()
        try:
            number = float(value)
        except ValueError:
            raise AssertionError(f"value not a float, {where}") from None
        if types[name] == "counter":
            assert number >= 0 and not math.isnan(number), where
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate series, {where}"
        samples[key] = number
    return samples, types


def get(d, path, method="GET"):
    """(status, headers, body) of one request. A refusal made at accept, before the request
    is read, ends in a reset after the answer (the unread request makes the kernel send RST
    rather than FIN): what came before it is the answer."""
    chunks = []
    with socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            assert chunks, "reset before any answer"
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.lower(), v.strip()) for k, _, v in (h.partition(":") for h in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def scrape(d):
    status, headers, body = get(d, "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(body.decode())


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- the parser itself, so that a lenient parser cannot pass bad text --------------------------

GOOD = ('# HELP x_total Things.\n# TYPE x_total counter\nx_total{a="1",b="q\\"\\\\\\n"} 3\n'
        'x_total{a="2"} 4.5e3\n# HELP y A gauge.\n# TYPE y gauge\ny -1\ny{z="Inf"} +Inf\n')

BAD_EXPOSITIONS = [
    ("no newline at the end", GOOD[:-1]),
    ("sample without HELP", "# TYPE x counter\nx 1\n"),
    ("sample without TYPE", "# HELP x h\nx 1\n"),
    ("sample of another block", "# HELP x h\n# TYPE x gauge\n# HELP y h\n# TYPE y gauge\nx 1\n"),
    ("unknown type", "# HELP x h\n# TYPE x number\nx 1\n"),
    ("bad name", "# HELP 1x h\n# TYPE 1x gauge\n1x 1\n"),
    ("bad label name", '# HELP x h\n# TYPE x gauge\nx{1a="v"} 1\n'),
    ("unescaped quote", '# HELP x h\n# TYPE x gauge\nx{a="v"v"} 1\n'),
    ("value not a float", "# HELP x h\n# TYPE x gauge\nx one\n"),
    ("negative counter", "# HELP x h\n# TYPE x counter\nx -1\n"),
    ("duplicate series", '# HELP x h\n# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n'),
    ("blank line", "# HELP x h\n# TYPE x gauge\n\nx 1\n"),
    ("second HELP", "# HELP x h\n# HELP x h\n# TYPE x gauge\nx 1\n"),
]


def test_the_strict_parser_reads_good_text():
    samples, types = parse_exposition(GOOD)
    assert types == {"x_total": "counter", "y": "gauge"}
    assert value(samples, "x_total", a="1", b='q"\\\n') == 3
    assert value(samples, "y", z="Inf") == math.inf


@pytest.mark.parametrize("text", [t for _, t in BAD_EXPOSITIONS],
                         ids=[n for n, _ in BAD_EXPOSITIONS])
def test_the_strict_parser_refuses_bad_text(text):
    with pytest.raises(AssertionError):
        parse_exposition(text)


# -- /healthz ------------------------------------------------------------------------------------

def test_healthz_says_ok_to_status_allow(daemon):
    d = daemon(BODY)
    status, headers, body = get(d, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["content-type"].startswith("text/plain")
    status, _, body = get(d, "/healthz", method="HEAD")
    assert (status, body) == (200, b"")
    status, headers, _ = get(d, "/healthz", method="POST")
    assert status == 405 and "GET" in headers["allow"]


def test_status_endpoints_are_403_outside_status_allow_and_counted(daemon):
    d = daemon(BODY, top="status_allow = 10.0.0.0/8")
    for path in ("/healthz", "/metrics"):
        status, _, body = get(d, path)
        assert status == 403, (path, body)
        assert b"ssed_" not in body
    assert d.ctl({"cmd": "stats"})["refused"]["status_forbidden"] == 2


def test_status_allow_matches_ipv6_peers_separately(daemon):
    d = daemon(BODY, top="status_allow = ::1", listen="127.0.0.1:0 [::1]:0")
    v6 = d.ports()["::1"]
    assert get(d, "/healthz")[0] == 403
    with socket.create_connection(("::1", v6), timeout=TIMEOUT) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\nok\n")


# -- /metrics ------------------------------------------------------------------------------------

def test_metrics_is_well_formed_from_the_start(daemon):
    d = daemon(BODY)
    samples, types = scrape(d)
    assert types == {
        "ssed_clients": "gauge", "ssed_events_published_total": "counter",
        "ssed_events_delivered_total": "counter", "ssed_bytes_sent_total": "counter",
        "ssed_clients_dropped_total": "counter", "ssed_connections_refused_total": "counter",
        "ssed_journal_failures_total": "counter", "ssed_uptime_seconds": "gauge",
        "ssed_loop_stalls_total": "counter"}
    for path in ("/a", "/b", "/secret"):
        assert samples[("ssed_clients", frozenset({("service", path)}))] == 0
        assert samples[("ssed_events_published_total", frozenset({("service", path)}))] == 0
    assert value(samples, "ssed_bytes_sent_total") == 0
    assert value(samples, "ssed_uptime_seconds") >= 0
    status, _, body = get(d, "/metrics", method="HEAD")
    assert (status, body) == (200, b"")


def test_metrics_follow_clients_events_bytes_drops_and_refusals(daemon):
    d = daemon(BODY)
    a = [d.stream("/a") for _ in range(2)]
    b = d.stream("/b?client=bee")
    for s in a + [b]:
        s.wait_bytes(b"\n\n")
    before, _ = scrape(d)
    assert value(before, "ssed_clients", service="/a") == 2
    assert value(before, "ssed_clients", service="/b") == 1
    for n in range(3):
        d.publish("/a", f"event {n}")
    d.publish("/b", "x" * 1000)
    for s in a:
        s.wait_events(3)
    b.wait_events(1)
    # Refusals: unknown path, wrong method, missing token.
    assert get(d, "/nowhere")[0] == 404
    assert get(d, "/a", method="DELETE")[0] == 405
    assert get(d, "/secret")[0] == 401
    # Drops: a kick.
    assert d.ctl({"cmd": "kick", "service": "/b", "client": "bee"})["closed"] == 1
    b.wait_closed()
    after, _ = scrape(d)
    assert value(after, "ssed_events_published_total", service="/a") == 3
    assert value(after, "ssed_events_delivered_total", service="/a") == 6
    assert value(after, "ssed_events_published_total", service="/b") == 1
    assert value(after, "ssed_events_delivered_total", service="/b") == 1
    assert value(after, "ssed_events_published_total", service="/secret") == 0
    assert value(after, "ssed_clients", service="/b") == 0
    assert value(after, "ssed_clients", service="/a") == 2
    sent = value(after, "ssed_bytes_sent_total") - value(before, "ssed_bytes_sent_total")
    assert sent >= 1000 + 6 * len("data: event 0\n\n")
    assert value(after, "ssed_clients_dropped_total", reason="kicked") == 1
    for reason in ("not_found", "method", "unauthorized"):
        assert value(after, "ssed_connections_refused_total", reason=reason) == 1, reason
    # A client that leaves by itself is not a drop.
    a[0].close()
    d.publish("/a", "after leaving")
    a[1].wait_events(4)
    final, _ = scrape(d)
    assert value(final, "ssed_clients", service="/a") == 1
    assert sum(v for (n, _), v in final.items() if n == "ssed_clients_dropped_total") == 1
    # The same figures as `stats`.
    stats = d.ctl({"cmd": "stats"})
    assert stats["events_published"] == sum(
        v for (n, _), v in final.items() if n == "ssed_events_published_total")
    assert stats["dropped"] == {"kicked": 1}


def test_metrics_count_bans_both_as_drops_and_refusals(daemon):
    d = daemon(BODY)
    s = d.stream("/a")
    s.wait_bytes(b"\n\n")
    assert d.ctl({"cmd": "ban", "ip": "127.0.0.1", "seconds": 60})["closed"] == 1
    s.wait_closed()
    assert get(d, "/metrics")[0] == 403     # a banned address gets nothing, /metrics neither
    d.ctl({"cmd": "unban", "ip": "127.0.0.1"})
    samples, _ = scrape(d)
    assert value(samples, "ssed_clients_dropped_total", reason="banned") == 1
    assert value(samples, "ssed_connections_refused_total", reason="banned") == 1


# -- a stalled loop (issue 12.8) ------------------------------------------------------------

SLOW = """
import time

import ssed


class Slow(ssed.Service):
    def on_tick(self):
        time.sleep(float(self.options.get("tick_sleep", "0")))

    def on_admin(self, args):
        time.sleep(float(args[0]))
        return "slept"

    def on_connect(self, client, request):
        time.sleep(float(request.first("sleep") or "0"))
"""


def slow_daemon(daemon, tmp_path, body):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "slowplug.py").write_text(SLOW)
    return start_in(daemon, conf, body)


def test_a_hook_that_stalls_the_loop_is_named_in_the_log_once_a_minute_and_counted(daemon,
                                                                                tmp_path):
    d = slow_daemon(daemon, tmp_path, "[/ok]\n[/slow]\nclass = slowplug:Slow\n"
                    "interval = 0.2\ntick_sleep = 1.1\n")
    line = d.wait_log(r"loop stalled")
    assert re.search(r" warning loop stalled 1\.\d s in /slow on_tick", line), line
    with d.control_conn() as c:
        deadline = time.monotonic() + 3 * TIMEOUT
        while (stats := c.request({"cmd": "stats"}))["loop_stalls"] < 3:
            assert time.monotonic() < deadline, stats
    assert 1.1 <= stats["longest_stall"] < 3 * TIMEOUT, stats
    samples, _ = scrape(d)
    assert value(samples, "ssed_loop_stalls_total") >= 3
    assert sum("loop stalled" in line for line in d.log) == 1, d.log     # rate-limited


def test_a_control_command_that_stalls_the_loop_is_named(daemon, tmp_path):
    d = slow_daemon(daemon, tmp_path, "[/slow]\nclass = slowplug:Slow\n")
    assert d.ctl({"cmd": "stats"})["loop_stalls"] == 0
    assert d.ctl({"cmd": "admin", "service": "/slow", "args": ["0.1"]})["result"] == "slept"
    assert d.ctl({"cmd": "admin", "service": "/slow", "args": ["1.2"]})["result"] == "slept"
    line = d.wait_log(r"loop stalled")
    assert re.search(r"loop stalled 1\.\d s in control command admin /slow", line), line
    stats = d.ctl({"cmd": "stats"})
    assert stats["loop_stalls"] == 1 and 1.2 <= stats["longest_stall"] < 2, stats


def test_a_stall_in_on_connect_names_the_service_hook(daemon, tmp_path):
    """on_connect runs while a connection is being accepted and routed; it is timed like
    every other hook, so the line names it (stalls outside any hook name the kind of
    connection: test_loop)."""
    d = slow_daemon(daemon, tmp_path, "[/slow]\nclass = slowplug:Slow\n")
    assert d.stream("/slow?sleep=1.2").status == 200
    line = d.wait_log(r"loop stalled")
    assert re.search(r"loop stalled 1\.\d s in /slow on_connect", line), line
    assert d.ctl({"cmd": "stats"})["loop_stalls"] == 1
