"""The control socket and the edges against hostile input (SPEC sections 2, 4, 5): the
socket's mode and group, the peer's uid/gid logged with state-changing commands, bad lines
that leave the connection usable, 100 control clients at once, event types that would inject
fields, ids that only the daemon makes, and token values that never reach the log.
"""
import grp
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from confdir import start_in
from conftest import TIMEOUT, Daemon, env
from hostile import get, request_from, status_of

SERVICES = "[/s]\n[/pub]\npublish_token = pubtoken\n"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("hardening"), SERVICES)
    yield d
    d.stop()


def mode_of(path):
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    return stat.S_IMODE(st.st_mode), st.st_gid


# -- the socket file ------------------------------------------------------------------------

def test_the_control_socket_is_0660_by_default_even_under_umask_0(daemon):
    d = daemon("[/s]\n", preexec_fn=lambda: os.umask(0))
    mode, _ = mode_of(d.control)
    assert mode == 0o660
    assert not mode & stat.S_IWOTH


def test_control_mode_0600_is_honoured(daemon):
    d = daemon("[/s]\n", top="control_mode = 0600\n", preexec_fn=lambda: os.umask(0))
    assert mode_of(d.control)[0] == 0o600
    assert d.ctl({"cmd": "stats"})["ok"]


def test_control_group_gives_the_socket_that_group(daemon):
    group = grp.getgrgid(os.getgid()).gr_name
    d = daemon("[/s]\n", top=f"control_group = {group}\n")
    assert mode_of(d.control) == (0o660, os.getgid())


def test_an_unknown_control_group_stops_the_start_with_one_line_and_no_socket(tmp_path):
    ini = tmp_path / "ssed.ini"
    ini.write_text("[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n"
                   "control_group = nosuchgroup9z\n[/s]\n")
    proc = subprocess.run([sys.executable, "-m", "ssed", "-c", str(ini)], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env())
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "nosuchgroup9z" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "ssed.sock").exists()


# -- who did it ---------------------------------------------------------------------------------

def test_state_changing_commands_are_logged_with_the_peers_pid_uid_and_gid(daemon):
    d = daemon("[/s]\n")
    who = f"pid={os.getpid()} uid={os.getuid()} gid={os.getgid()}"
    with d.control_conn() as c:
        assert c.request({"cmd": "stats"})["ok"]
        assert c.request({"cmd": "list"})["ok"]
        assert c.request({"cmd": "publish", "service": "/s", "data": "secret words"})["ok"]
        assert c.request("ban 10.9.8.7 5").startswith("ok")
        assert f"control ({who}): cmd=ban ip=10.9.8.7" in d.wait_log(r"control \(")
        assert c.request("unban 10.9.8.7").startswith("ok")
        assert f"control ({who}): cmd=unban" in d.wait_log(r"control \(")
    assert not any("cmd=stats" in line or "cmd=list" in line for line in d.log)
    # Publishes (issue 11.17: one info line each was noise) are logged at debug only.
    assert not any("cmd=publish" in line for line in d.log), d.log


def test_every_publish_is_logged_at_debug_with_who_and_its_size_not_its_data(daemon):
    d = daemon("[/s]\n", args=["--log-level", "debug"])
    who = f"pid={os.getpid()} uid={os.getuid()} gid={os.getgid()}"
    with d.control_conn() as c:
        for n in range(3):
            assert c.request({"cmd": "publish", "service": "/s", "data": "secret words"})["ok"]
            line = d.wait_log(r"control \(")
            assert f" debug control ({who}): cmd=publish service=/s" in line
            assert "secret words" not in line and "bytes=12" in line


# -- bad lines leave the connection usable ---------------------------------------------------

BAD_LINES = [
    (b'{"cmd": "publish", "service": "/s", "data": "' + b"x" * (1 << 20) + b'"}',
     "line over 1048576 bytes"),
    (b"publish /s " + b"y" * ((1 << 20) + 1), "line over 1048576 bytes"),
    (b'{"cmd": "publish", "service": "/s", "data": ', "invalid JSON"),
    (b'{"cmd": "stats"', "invalid JSON"),
    (b"{not json at all}", "invalid JSON"),
    (b'{"cmd": "format_disk"}', "unknown command 'format_disk'"),
    (b"format_disk /", "unknown command 'format_disk'"),
    (b'{"cmd": 7}', 'missing "cmd"'),
    (b'{"cmd": "publish", "service": ["/s"], "data": "x"}', "publish: service must be a string"),
    (b'{"cmd": "publish", "service": "/s", "data": 12}', "publish: data must be a string"),
    (b'{"cmd": "publish", "service": "/s", "data": "x", "event": 5}', "event must be a string"),
    (b'{"cmd": "kick", "service": "/s", "client": true}', "kick: client must be a string"),
    (b'{"cmd": "ban", "ip": "10.0.0.1", "seconds": true}', "ban: seconds must be a number"),
    (b'{"cmd": "admin", "service": "/s", "args": [1, 2]}', "args must be a list of strings"),
    (b"\xc3\x28 stats", "not valid UTF-8"),
]


@pytest.mark.parametrize("line, error", BAD_LINES, ids=[e for _, e in BAD_LINES])
def test_a_bad_line_gets_a_clear_error_and_the_connection_then_answers_stats(shared, line,
                                                                            error):
    with shared.control_conn() as c:
        c.send_line(line + b"\n")
        answer = c.read_line()
        if line.startswith(b"{"):
            ans = json.loads(answer)
            assert ans["ok"] is False and error in ans["error"], ans
        else:
            assert answer.startswith("error: ") and error in answer, answer
        assert c.request({"cmd": "stats"})["ok"]
        assert c.request("stats").startswith("ok uptime=")
    assert shared.ctl({"cmd": "stats"})["events_published"] == 0


def test_100_control_clients_at_once_are_all_answered(shared):
    sub = shared.stream("/s")
    conns = [shared.control_conn() for _ in range(100)]
    for i, c in enumerate(conns):
        c.send_line(json.dumps({"cmd": "publish", "service": "/s", "data": f"from {i}"}))
    answers = [json.loads(c.read_line()) for c in conns]
    for c in conns:
        c.close()
    assert all(a["ok"] and a["delivered"] == 1 for a in answers), answers
    assert len({a["id"] for a in answers}) == 100
    events = sub.wait_events(100)
    assert sorted(e.data for e in events) == sorted(f"from {i}" for i in range(100))
    assert {e.id for e in events} == {a["id"] for a in answers}
    sub.close()


# -- input that would inject fields ----------------------------------------------------------

@pytest.mark.parametrize("char, name", [("\r", "CR"), ("\n", "LF"), ("\0", "NUL")])
def test_an_event_type_with_cr_lf_or_nul_is_refused_on_every_way_in(shared, char, name):
    sub = shared.stream("/pub")
    event = f"a{char}id: 1"
    error = f"event type must not contain {name}"
    assert shared.ctl({"cmd": "publish", "service": "/pub", "data": "x", "event": event}) == {
        "ok": False, "error": error}
    if char == "\0":    # the only one of the three a text line can carry
        assert shared.ctl(f"publish /pub -e a{char}b x") == f"error: {error}"
    auth = b"Authorization: Bearer pubtoken\r\n"
    body = json.dumps({"data": "x", "event": event}).encode()
    as_json = (b"POST /pub HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth +
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    form = b"data=x&event=a%" + b"%02X" % ord(char) + b"b"
    as_form = (b"POST /pub HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n" + auth +
               b"Content-Length: %d\r\n\r\n" % len(form) + form)
    for raw in (as_json, as_form):
        status, _, reply = request_from(shared.port, raw)
        assert status == 400 and error.encode() in reply, reply
    ok = shared.publish("/pub", "clean")
    assert [(e.type, e.data) for e in sub.wait_events(1)] == [("message", "clean")], ok
    sub.close()


def post(body, ctype):
    return (b"POST /pub HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype + b"\r\n"
            b"Authorization: Bearer pubtoken\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def test_a_publisher_cannot_set_an_id_on_any_way_in(shared):
    """Only the daemon makes ids (SPEC 4); one a publisher names is refused, not ignored."""
    sub = shared.stream("/pub")
    forged = "99999999999999-0\nevent: x"
    ans = shared.ctl({"cmd": "publish", "service": "/pub", "data": "x", "id": forged})
    assert ans["ok"] is False and "id" in ans["error"], ans
    for raw in (post(json.dumps({"data": "x", "id": forged}).encode(), b"application/json"),
                post(b"data=x&id=99999999999999-0", b"application/x-www-form-urlencoded")):
        status, _, reply = request_from(shared.port, raw)
        assert status == 400 and b"id" in reply, reply
    ok = shared.publish("/pub", "clean")
    [event] = sub.wait_events(1)
    assert (event.id, event.data) == (ok["id"], "clean")
    assert not event.id.startswith("99999999999999")
    sub.close()


# -- secrets in the log -------------------------------------------------------------------------

def test_token_values_a_client_sends_never_reach_the_log_even_at_debug(daemon):
    d = daemon("[/priv]\ntoken = SECRETVALUE123\n[/pub]\npublish_token = PUBSECRET321\n",
               args=["--log-level", "debug"])
    ok = d.stream("/priv?access_token=SECRETVALUE123&client=c1")
    assert ok.status == 200
    both = d.stream("/?service=/priv&service=/pub&x=1&access_token=SECRETVALUE123")
    assert both.status == 200
    assert status_of(d.port, "/priv?client=c2", source="127.0.0.1") == 401
    wrong = d.stream("/priv", headers=["Authorization: Bearer OTHERSECRET456"])
    assert wrong.status == 401
    bearer = d.stream("/priv?client=c3", headers=["Authorization: Bearer SECRETVALUE123"])
    assert bearer.status == 200
    assert request_from(d.port, get("/nope?access_token=THIRDSECRET789"))[0] == 404
    raw = (b"POST /pub?access_token=FOURTHSECRET000 HTTP/1.1\r\nHost: x\r\n"
           b"Authorization: Bearer PUBSECRET321\r\nContent-Length: 2\r\n"
           b"Connection: close\r\n\r\nhi")
    assert request_from(d.port, raw)[0] == 200
    ans = d.ctl({"cmd": "kick", "service": "/priv", "client": "c1"})
    assert ans == {"ok": True, "closed": 1}
    d.wait_log(r"stream c1 closed")
    assert d.stop() == 0
    d.wait_log(r"\bstopped$")
    log = "\n".join(d.log)
    assert "access_token=***" in log          # the stream lines were written, redacted
    for secret in ("SECRETVALUE123", "OTHERSECRET456", "THIRDSECRET789", "FOURTHSECRET000",
                   "PUBSECRET321"):
        assert secret not in log, secret


# -- clients that pipeline (issue 12.6) ---------------------------------------------------

BIG = """
import ssed


class Big(ssed.Service):
    def on_admin(self, args):
        return "x" * int(args[0])
"""


def test_a_pipelining_client_that_reads_gets_every_answer_in_order(daemon, tmp_path):
    """200 requests in one write whose answers come to 100 MB: more than any cap a daemon
    could queue, so it must answer as the client reads, not all at once (it used to close
    the connection past 64 MiB)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "bigplug.py").write_text(BIG)
    d = start_in(daemon, conf, "[/s]\n[/big]\nclass = bigplug:Big\n")
    sub = d.stream("/s")
    admin = json.dumps({"cmd": "admin", "service": "/big", "args": ["1000000"]})
    lines = [admin if i % 2 else f"publish /s m{i}" for i in range(200)]
    with d.control_conn() as c:
        sender = threading.Thread(target=c.send_line, args=("\n".join(lines),), daemon=True)
        sender.start()
        answers = [c.read_line() for _ in lines]
        sender.join(TIMEOUT)
    ids = []
    for i, answer in enumerate(answers):
        if i % 2:
            assert json.loads(answer) == {"ok": True, "result": "x" * 1000000}, i
        else:
            assert answer.startswith("ok id="), (i, answer[:200])
            ids.append(answer.split()[1].removeprefix("id="))
    assert [e.data for e in sub.wait_events(100)] == [f"m{i}" for i in range(0, 200, 2)]
    assert [e.id for e in sub.events[:100]] == ids
    held = [line for line in d.log if "control (" in line and "cmd=admin" not in line]
    assert len(held) <= 1 and all("wait unread" in line for line in held), held


def flood(path, data, sent):
    """Connect and send `data` without ever reading; stops when the daemon stops reading."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(1.0)
    try:
        sock.sendall(data)
    except TimeoutError:
        pass
    sent.append(sock)


def test_clients_that_pipeline_without_reading_leave_others_fast_and_log_once_each(shared):
    """Four clients send 2 MiB of `help` each and never read (it used to log one line per
    request left, 16,186 of them, and hold other clients' `stats` for seconds)."""
    before = len(shared.log)
    flooders = []
    threads = [threading.Thread(target=flood, args=(shared.control, b"help\n" * 419430,
                                                    flooders), daemon=True)
               for _ in range(4)]
    for t in threads:
        t.start()
    slowest = 0.0
    with shared.control_conn() as c:
        for _ in range(10):
            start = time.monotonic()
            assert c.request({"cmd": "stats"})["ok"]
            slowest = max(slowest, time.monotonic() - start)
        for t in threads:
            t.join(TIMEOUT)
        assert len(flooders) == 4
        start = time.monotonic()
        assert c.request({"cmd": "stats"})["ok"]      # with all four held back
        slowest = max(slowest, time.monotonic() - start)
    assert slowest < 1.0, f"stats took {slowest:.3f} s beside the flood"
    for sock in flooders:
        sock.close()
    assert shared.ctl({"cmd": "stats"})["ok"]
    logged = [line for line in shared.log[before:] if "control (" in line]
    assert len(logged) <= 4, logged[:10]
    assert all("wait unread" in line for line in logged), logged
