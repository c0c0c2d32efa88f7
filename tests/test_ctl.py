"""ssectl as a subprocess against in-test servers: a UNIX socket that records the request line
and answers a scripted line, and a raw-socket HTTP server for `listen`. No daemon, no sleeps:
every wait is bounded by a socket timeout or the subprocess timeout.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from argparse import Namespace
from pathlib import Path

import pytest

from ssed import ctl
from ssed.sseclient import Dechunker, parse_url, request

REPO = Path(__file__).resolve().parent.parent
WAIT = 10       # seconds any in-test server waits for ssectl


@pytest.fixture
def short_dir():
    """A directory with a short path: UNIX socket paths are limited to ~100 bytes."""
    path = tempfile.mkdtemp(prefix="ssectl-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def run_ctl(*argv, stdin=b"", env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if k != "SSED_SOCKET"}
    base.update(PYTHONPATH=str(REPO), TZ="UTC", **(env or {}))
    return subprocess.run([sys.executable, "-m", "ssed.ctl", *argv], input=stdin, env=base,
                          cwd=cwd or tempfile.gettempdir(), capture_output=True, timeout=30)


def read_until(conn, end):
    buf = b""
    while end not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


class Server:
    """Serves one scripted reply per connection, in order, on a listening socket; records
    what each connection sent up to `end`. `reply` may be bytes or a function of the request."""

    def __init__(self, sock, replies, end):
        self.sock, self.replies, self.end = sock, list(replies), end
        self.requests = []
        sock.settimeout(WAIT)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for reply in self.replies:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(WAIT)
                try:
                    got = read_until(conn, self.end)
                    self.requests.append(got)
                    conn.sendall(reply(got) if callable(reply) else reply)
                except OSError:
                    return

    def close(self):
        self.thread.join(WAIT)
        self.sock.close()


@pytest.fixture
def control(short_dir):
    """control(*answers) -> a Server on short_dir/c.sock answering each connection's line."""
    servers = []

    def start(*answers, name="c.sock"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(short_dir / name))
        sock.listen()
        replies = [a if isinstance(a, bytes) else json.dumps(a).encode() + b"\n" for a in answers]
        servers.append(Server(sock, replies, b"\n"))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def sent(server, index=0):
    line = server.requests[index]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return json.loads(line)


# ---- every control command: the JSON sent and the human output --------------------------

TIME = 1700000000.5     # 2023-11-14T22:13:20 UTC

CASES = [
    ("publish", ["publish", "/chat", "hi all"],
     {"cmd": "publish", "service": "/chat", "data": "hi all", "event": None, "client": None},
     {"ok": True, "id": "1-0", "delivered": 3}, "id=1-0 delivered=3\n"),
    ("publish event client", ["publish", "/chat", "x", "-e", "msg", "--client", "c1"],
     {"cmd": "publish", "service": "/chat", "data": "x", "event": "msg", "client": "c1"},
     {"ok": True, "id": "1-1", "delivered": 1}, "id=1-1 delivered=1\n"),
    ("publish to no client", ["publish", "/chat", "x", "--client", "ghost"],
     {"cmd": "publish", "service": "/chat", "data": "x", "event": None, "client": "ghost"},
     {"ok": True, "id": "1-2", "delivered": 0, "no_such_client": True},
     "id=1-2 delivered=0 (no such client now)\n"),
    ("list", ["list"], {"cmd": "list"},
     {"ok": True, "services": [{"path": "/time", "source": "time", "clients": 12,
                                "last_id": "1700000000000-0"},
                               {"path": "/c", "source": "none", "clients": 0, "last_id": None}]},
     "PATH   SOURCE  CLIENTS  LAST_ID\n"
     "/time  time    12       1700000000000-0\n"
     "/c     none    0        -\n"),
    ("list empty", ["list"], {"cmd": "list"}, {"ok": True, "services": []},
     "PATH  SOURCE  CLIENTS  LAST_ID\n"),
    ("clients", ["clients", "/chat"], {"cmd": "clients", "service": "/chat"},
     {"ok": True, "clients": [{"id": "c1", "address": "127.0.0.1", "since": TIME,
                               "bytes_sent": 120, "bytes_queued": 0}]},
     "ID  ADDRESS    SINCE                BYTES_SENT  BYTES_QUEUED\n"
     "c1  127.0.0.1  2023-11-14T22:13:20  120         0\n"),
    ("kick", ["kick", "/chat", "c1"], {"cmd": "kick", "service": "/chat", "client": "c1"},
     {"ok": True, "closed": 2}, "closed=2\n"),
    ("kick no client", ["kick", "/chat", "ghost"],
     {"cmd": "kick", "service": "/chat", "client": "ghost"},
     {"ok": True, "closed": 0, "no_such_client": True}, "closed=0 (no such client now)\n"),
    ("ban default", ["ban", "10.0.0.1"], {"cmd": "ban", "ip": "10.0.0.1", "seconds": 3600},
     {"ok": True, "closed": 1}, "closed=1\n"),
    ("ban seconds", ["ban", "10.0.0.0/8", "60"], {"cmd": "ban", "ip": "10.0.0.0/8", "seconds": 60},
     {"ok": True, "closed": 0}, "closed=0\n"),
    ("unban", ["unban", "10.0.0.1"], {"cmd": "unban", "ip": "10.0.0.1"},
     {"ok": True, "closed": 0, "removed": 1}, "closed=0 removed=1\n"),
    ("bans", ["bans"], {"cmd": "bans"},
     {"ok": True, "bans": [{"ip": "10.0.0.0/8", "until": TIME}]},
     "IP          UNTIL\n10.0.0.0/8  2023-11-14T22:13:20\n"),
    ("stats", ["stats"], {"cmd": "stats"},
     {"ok": True, "uptime": 12.5, "clients": 3, "dropped": {"slow": 1}},
     'uptime  12.5\nclients 3\ndropped {"slow": 1}\n'),
    ("reload", ["reload"], {"cmd": "reload"},
     {"ok": True, "changes": ["added /b", "changed /a: interval"]}, "added /b\nchanged /a: interval\n"),
    ("reload nothing", ["reload"], {"cmd": "reload"}, {"ok": True, "changes": []}, "no changes\n"),
    ("admin text", ["admin", "/chat", "say", "hello", "--loud"],
     {"cmd": "admin", "service": "/chat", "args": ["say", "hello", "--loud"]},
     {"ok": True, "result": "said\nit"}, "said\nit\n"),
    ("admin JSON", ["admin", "/chat"], {"cmd": "admin", "service": "/chat", "args": []},
     {"ok": True, "result": {"rooms": 2}}, '{"rooms": 2}\n'),
    ("admin None", ["admin", "/chat", "x"], {"cmd": "admin", "service": "/chat", "args": ["x"]},
     {"ok": True, "result": None}, ""),
]


@pytest.mark.parametrize("name, argv, request_, answer, human", CASES, ids=[c[0] for c in CASES])
def test_command_sends_json_and_shows_answer(control, short_dir, name, argv, request_, answer, human):
    server = control(answer)
    result = run_ctl("-s", str(short_dir / "c.sock"), *argv)
    assert (result.returncode, result.stderr, result.stdout.decode()) == (0, b"", human)
    assert sent(server) == request_


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_prints_the_answer_line_as_is(control, short_dir, where):
    line = b'{"ok": true,   "services": [], "extra": "\\u00e9"}\n'
    server = control(line)
    argv = ["--json", "list"] if where == "before" else ["list", "--json"]
    result = run_ctl("-s", str(short_dir / "c.sock"), *argv)
    assert (result.returncode, result.stdout, result.stderr) == (0, line, b"")
    assert sent(server) == {"cmd": "list"}


def test_refusal_exits_1_with_the_error(control, short_dir):
    control({"ok": False, "error": "no service /nope"})
    result = run_ctl("-s", str(short_dir / "c.sock"), "clients", "/nope")
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"ssectl: no service /nope\n")


def test_refusal_with_json_prints_the_answer_and_exits_1(control, short_dir):
    control(b'{"ok":false,"error":"bad"}\n')
    result = run_ctl("-s", str(short_dir / "c.sock"), "--json", "reload")
    assert (result.returncode, result.stdout) == (1, b'{"ok":false,"error":"bad"}\n')


def test_garbage_answer_exits_1(control, short_dir):
    control(b"ok id=1\n")
    result = run_ctl("-s", str(short_dir / "c.sock"), "list")
    assert result.returncode == 1 and b"not a JSON answer" in result.stderr


# ---- publish data from standard input ------------------------------------------------------

@pytest.mark.parametrize("argv, stdin, data", [
    (["publish", "/a"], b"one\ntwo\n", "one\ntwo"),
    (["publish", "/a", "-"], b"x\r\n", "x"),
    (["publish", "/a", "-"], b"x\n\n", "x\n"),
    (["publish", "/a"], b"no newline", "no newline"),
    (["publish", "/a"], b"", ""),
    (["publish", "/a", "-e", "t"], "h\u00e9 \u20ac\n".encode(), "h\u00e9 \u20ac"),
])
def test_publish_reads_stdin_less_one_final_newline(control, short_dir, argv, stdin, data):
    server = control({"ok": True, "id": "1-0", "delivered": 0})
    result = run_ctl("-s", str(short_dir / "c.sock"), *argv, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert sent(server)["data"] == data


def test_publish_stdin_not_utf8_is_usage_error(short_dir):
    result = run_ctl("-s", str(short_dir / "c.sock"), "publish", "/a", stdin=b"\xff\n")
    assert result.returncode == 2 and b"not UTF-8" in result.stderr


# ---- usage errors and connection failures ------------------------------------------------

@pytest.mark.parametrize("argv", [
    [], ["nope"], ["publish"], ["ban", "1.2.3.4", "soon"], ["ban", "1.2.3.4", "0"],
    ["kick", "/a"], ["-s", "x", "-c", "y", "list"], ["listen", "http://h/", "--count", "x"],
    ["listen", "https://example.com/a"], ["listen", "http://h:99999/"],
])
def test_usage_errors_exit_2(argv):
    result = run_ctl(*argv)
    assert result.returncode == 2, result
    assert b"Traceback" not in result.stderr
    assert result.stderr.startswith((b"usage:", b"ssectl: "))


def test_missing_socket_exits_3_naming_it(short_dir):
    path = str(short_dir / "none.sock")
    result = run_ctl("-s", path, "list")
    assert result.returncode == 3
    assert result.stderr.decode() == f"ssectl: cannot connect to {path}: No such file or directory\n"


def test_refused_socket_exits_3(short_dir):
    path = str(short_dir / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)         # bound, never listening: connections are refused
        result = run_ctl("-s", path, "stats")
    assert result.returncode == 3 and path.encode() in result.stderr
    assert result.stderr.count(b"\n") == 1


def test_closed_without_answer_exits_3(control, short_dir):
    control(b"")
    result = run_ctl("-s", str(short_dir / "c.sock"), "stats")
    assert result.returncode == 3 and b"no answer" in result.stderr


# ---- which socket ---------------------------------------------------------------------------

def test_ssed_socket_env(control, short_dir):
    server = control({"ok": True, "services": []})
    result = run_ctl("list", env={"SSED_SOCKET": str(short_dir / "c.sock")})
    assert result.returncode == 0 and sent(server) == {"cmd": "list"}


def test_dash_s_wins_over_env(control, short_dir):
    control({"ok": True, "services": []})
    result = run_ctl("-s", str(short_dir / "c.sock"), "list",
                     env={"SSED_SOCKET": str(short_dir / "other.sock")})
    assert result.returncode == 0


def test_default_is_ssed_sock_in_the_current_directory(control, short_dir):
    if os.path.exists(ctl.SYSTEM_SOCKET):
        pytest.skip(f"{ctl.SYSTEM_SOCKET} exists here")
    control({"ok": True, "services": []}, name="ssed.sock")
    assert run_ctl("list", cwd=short_dir).returncode == 0


def test_socket_path_order(tmp_path, monkeypatch):
    args = Namespace(socket=None, config=None)
    monkeypatch.setattr(ctl, "SYSTEM_SOCKET", str(tmp_path / "system.sock"))
    assert ctl.socket_path(args, {}) == "./ssed.sock"
    (tmp_path / "system.sock").touch()
    assert ctl.socket_path(args, {}) == str(tmp_path / "system.sock")
    assert ctl.socket_path(args, {"SSED_SOCKET": "/e.sock"}) == "/e.sock"
    assert ctl.socket_path(Namespace(socket="/s.sock", config=None), {"SSED_SOCKET": "/e"}) == "/s.sock"


def test_dash_c_uses_the_configs_control_socket(control, short_dir):
    (short_dir / "ssed.ini").write_text("[ssed]\ncontrol = x.sock\n\n[/a]\n")
    server = control({"ok": True, "uptime": 1}, name="x.sock")
    result = run_ctl("-c", str(short_dir / "ssed.ini"), "stats",
                     env={"SSED_SOCKET": str(short_dir / "other.sock")})
    assert (result.returncode, result.stdout) == (0, b"uptime 1\n")
    assert sent(server) == {"cmd": "stats"}


BROKEN = (b"; the daemon would refuse every other line of this file\n"
          b"[/early]\nsource = bogus\n"
          b"[ssed]\nbogus = 1\nretry = soon\n%s\n"
          b"control_mode = 0660 ; comment\n\xff\xfe not UTF-8\n"
          b"[/chat]\ncontrol = /elsewhere/wrong.sock\n[/chat]\n[unknown\nno equals sign\n")


@pytest.mark.parametrize("command, request_, answer, shown", [
    ("reload", {"cmd": "reload"},
     {"ok": False, "error": "config not valid, nothing changed: x:3: bad",
      "errors": ["x:3: bad", "x:5: worse"]},
     None),
    ("list", {"cmd": "list"}, {"ok": True, "services": []}, "PATH  SOURCE  CLIENTS  LAST_ID\n"),
])
def test_dash_c_with_a_broken_config_still_asks_the_daemon(control, short_dir, command,
                                                          request_, answer, shown):
    """Only [ssed]'s `control` is read; judging the rest is the daemon's job (a refused
    reload comes back with its errors, exit 1)."""
    (short_dir / "sub").mkdir()
    (short_dir / "sub" / "broken.ini").write_bytes(BROKEN % b"control = ../x.sock ; here")
    server = control(answer, name="x.sock")
    result = run_ctl("-c", str(short_dir / "sub" / "broken.ini"), command)
    assert sent(server) == request_
    if shown is None:
        assert (result.returncode, result.stdout) == (1, b"")
        assert result.stderr.decode() == ("ssectl: config not valid, nothing changed: x:3: bad"
                                          "\n  x:3: bad\n  x:5: worse\n")
    else:
        assert (result.returncode, result.stdout, result.stderr) == (0, shown.encode(), b"")


def test_dash_c_without_control_uses_ssed_sock_beside_the_file(control, short_dir):
    (short_dir / "sub").mkdir()
    (short_dir / "sub" / "c.ini").write_bytes(BROKEN % b"")
    server = control({"ok": True, "uptime": 1}, name="sub/ssed.sock")
    result = run_ctl("-c", str(short_dir / "sub" / "c.ini"), "stats")
    assert (result.returncode, result.stdout) == (0, b"uptime 1\n")
    assert sent(server) == {"cmd": "stats"}


@pytest.mark.parametrize("body, error", [
    (b"[ssed]\ncontrol =\n", "{ini}: no control socket configured (control is empty)"),
    (b"[ssed]\ncontrol = ; none\n[/a]\n", "{ini}: no control socket configured (control is empty)"),
    (None, "{ini}: cannot read: No such file or directory"),
])
def test_dash_c_without_a_control_socket_is_a_usage_error(short_dir, body, error):
    ini = short_dir / "c.ini"
    if body is not None:
        ini.write_bytes(body)
    result = run_ctl("-c", str(ini), "list")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == f"ssectl: {error.format(ini=ini)}\n"


# ---- listen ---------------------------------------------------------------------------------

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Connection: close\r\n\r\n")


def headers_of(raw):
    lines = raw.decode().split("\r\n")
    return lines[0], {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}


@pytest.fixture
def http():
    servers = []

    def start(*replies):
        sock = socket.create_server(("127.0.0.1", 0))
        servers.append(Server(sock, replies, b"\r\n\r\n"))
        return servers[-1], f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield start
    for server in servers:
        server.close()


def resumes_after(last_id, response):
    """A reply for a reconnect: `response` if Last-Event-ID is `last_id`, else a 400."""
    def reply(raw):
        if headers_of(raw)[1].get("last-event-id") != last_id:
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 15\r\n\r\nwrong last id\r\n"
        return response
    return reply


def test_listen_prints_events_and_reconnects_with_last_event_id(http):
    first = HEAD + b"retry: 50\n\nid: 1-0\ndata: one\n\nid: 2-0\nevent: e\ndata: two\ndata:  lines\n\n"
    server, url = http(first, resumes_after("2-0", HEAD + b"id: 3-0\ndata: three\n\n"))
    result = run_ctl("listen", url + "/chat?x=1", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == ("id=1-0 event=message data=one\n"
                                      "id=2-0 event=e data=two\\n lines\n"
                                      "id=3-0 event=message data=three\n")
    start, headers = headers_of(server.requests[0])
    assert start == "GET /chat?x=1 HTTP/1.1"
    assert headers["accept"] == "text/event-stream" and headers["cache-control"] == "no-cache"
    assert "last-event-id" not in headers
    assert headers_of(server.requests[1])[1]["last-event-id"] == "2-0"


def test_listen_json_priming_id_and_chunked_stream(http):
    payload = "id: 9-0\ndata: \u00e9\u20ac\n\n".encode()    # UTF-8 split across chunks
    chunks = [payload[:5], payload[5:15], payload[15:]]
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")
    server, url = http(resumes_after("5-0", HEAD + b"retry: 50\nid: 7-0\n\n"),
                       resumes_after("7-0", chunked))
    result = run_ctl("--json", "listen", url + "/a", "--last-event-id", "5-0", "--count", "1")
    assert result.returncode == 0, result.stderr
    assert [json.loads(l) for l in result.stdout.splitlines()] == [
        {"id": "9-0", "event": "message", "data": "\u00e9\u20ac"}]
    assert len(server.requests) == 2


def test_listen_count_passes_over_session_greetings_but_not_published_session_events(http):
    """The greeting (no id of its own) is shown, not counted; an event named `session` that
    carries an id is a published one, and counts."""
    server, url = http(HEAD + b"event: session\ndata: L\n\nid: 1-0\nevent: session\n"
                              b"data: published\n\nid: 2-0\ndata: later\n\n")
    result = run_ctl("listen", url + "/chat", "--count", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == ("id=- event=session data=L\n"
                                      "id=1-0 event=session data=published\n")


def test_listen_http_error_exits_1(http):
    server, url = http(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                       b"Content-Length: 16\r\n\r\nno service /nope\n")
    result = run_ctl("listen", url + "/nope")
    assert (result.returncode, result.stderr) == (1, b"ssectl: HTTP 404 no service /nope\n")


def test_listen_not_an_event_stream_exits_1(http):
    server, url = http(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n")
    result = run_ctl("listen", url + "/")
    assert result.returncode == 1 and b"text/html" in result.stderr


def test_listen_retries_a_503_after_the_first_stream(http):
    server, url = http(HEAD + b"retry: 10\nid: 1-0\ndata: a\n\n",
                       b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\n\r\nshutting down\n",
                       resumes_after("1-0", HEAD + b"id: 2-0\ndata: b\n\n"))
    result = run_ctl("listen", url + "/a", "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b"\n") == 2 and b"HTTP 503 shutting down" in result.stderr


def test_listen_first_connection_refused_exits_3():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    result = run_ctl("listen", f"http://127.0.0.1:{port}/a")
    assert result.returncode == 3
    assert result.stderr.decode().startswith(f"ssectl: cannot connect to http://127.0.0.1:{port}/a: ")


# ---- the client's pure parts ------------------------------------------------------------------

def test_dechunker_byte_by_byte():
    stream = b"3\r\nabc\r\n1A;x=y\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n"
    d = Dechunker()
    assert b"".join(d.feed(stream[i:i + 1]) for i in range(len(stream))) == b"abc" + b"z" * 26
    assert d.done


def test_request_head():
    target = parse_url("http://[::1]:8080/a?service=/b")
    assert request(target, "1-0") == (b"GET /a?service=/b HTTP/1.1\r\nHost: [::1]:8080\r\n"
                                      b"Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
                                      b"User-Agent: ssectl\r\nLast-Event-ID: 1-0\r\n\r\n")
    assert b"Last-Event-ID" not in request(parse_url("http://h/"), "")
    assert parse_url("http://h").host_header == "h" and parse_url("http://h").path == "/"


def test_json_flag_before_or_after_the_command():
    parse = ctl.parser().parse_args
    assert parse(["listen", "http://h/", "--json"]).json is True
    assert parse(["--json", "listen", "http://h/"]).json is True
    assert parse(["stats", "--json"]).json is True
    assert parse(["stats"]).json is False


def test_undecodable_argument_is_a_usage_error(short_dir):
    result = run_ctl("-s", str(short_dir / "c.sock"), "publish", "/a", b"\xff")
    assert (result.returncode, result.stderr) == (2, b"ssectl: arguments must be valid UTF-8\n")
