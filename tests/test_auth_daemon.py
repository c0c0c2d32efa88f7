"""JWT auth end to end (SPEC 11): the daemon as a subprocess with `auth = jwt`, tokens minted
by `ssectl token` and by hand: a stream opens as its `sub`, `publish --client` reaches it,
it is closed when its token expires and comes back with Last-Event-ID losing nothing, a
16 KiB head gets in, and no token ever reaches the log (debug level included).
"""
import re
import subprocess
import sys
import time

from conftest import TIMEOUT, env
from test_auth import mint

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


def jwt_daemon(daemon, tmp_path, extra=""):
    secret = tmp_path / "jwt.secret"
    secret.write_bytes(SECRET + b"\n")
    return daemon("[/user/alice]\nauth = jwt\nhistory = 50\n[/open]\n",
                  top=f"jwt_key = hs256:{secret}\njwt_cookie = sid\n{extra}",
                  args=("--log-level", "debug"))


def ssectl_token(d, *args):
    done = subprocess.run([sys.executable, "-m", "ssed.ctl", "-c", str(d.ini), "token", *args],
                          capture_output=True, text=True, env=env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_token_from_ssectl_opens_the_stream_as_its_sub_and_no_token_is_logged(daemon,
                                                                                 tmp_path):
    d = jwt_daemon(daemon, tmp_path)
    tok = ssectl_token(d, "--sub", "alice", "--subscribe", "/user/alice")
    s = d.stream(f"/user/alice?access_token={tok}")
    assert s.status == 200
    cookie = d.stream("/user/alice", [f"Cookie: sid={tok}"])
    assert cookie.status == 200
    answer = d.ctl({"cmd": "publish", "service": "/user/alice", "data": "hi", "client": "alice"})
    assert answer["delivered"] == 2
    assert s.wait_events(1)[0].data == "hi"
    refused = d.stream("/user/alice?access_token=" + tok[:-4] + "AAAA")
    assert refused.status == 401
    clients = d.ctl({"cmd": "clients", "service": "/user/alice"})["clients"]
    assert {c["id"] for c in clients} == {"alice"}
    d.wait_log(r"stream alice from")
    text = "\n".join(d.log)
    for piece in (tok, tok.split(".")[1], tok.split(".")[2]):
        assert piece not in text


def test_a_stream_is_closed_at_expiry_and_resumes_with_a_new_token_losing_nothing(daemon,
                                                                                  tmp_path):
    d = jwt_daemon(daemon, tmp_path, "jwt_leeway = 0\n")
    claims = {"sub": "alice", "ssed": {"subscribe": ["/user/alice"]}}
    s = d.stream("/user/alice", [f"Authorization: Bearer {mint(claims | {'exp': time.time() + 1.5})}"])
    assert s.status == 200
    first = d.ctl({"cmd": "publish", "service": "/user/alice", "data": "one"})["id"]
    assert s.wait_events(1)[0].id == first
    s.wait_closed(timeout=5)                             # exp, then within a second
    missed = d.ctl({"cmd": "publish", "service": "/user/alice", "data": "two"})["id"]
    fresh = mint(claims | {"exp": time.time() + 3600})
    again = d.stream("/user/alice", [f"Authorization: Bearer {fresh}", f"Last-Event-ID: {first}"])
    assert [(ev.id, ev.data) for ev in again.wait_events(1)] == [(missed, "two")]
    stats = d.ctl({"cmd": "stats"})
    assert stats["dropped"].get("expired") == 1


def test_a_head_of_up_to_16_kib_gets_in_and_over_it_is_431(daemon, tmp_path):
    d = jwt_daemon(daemon, tmp_path)
    tok = mint({"sub": "alice", "exp": time.time() + 60,
                "ssed": {"subscribe": ["/user/alice"]}, "pad": "x" * 5950})
    assert 8000 < len(tok) <= 8192
    s = d.stream("/user/alice", [f"Authorization: Bearer {tok}", "X-Pad: " + "y" * 6000])
    assert s.status == 200
    big = d.stream("/open", ["X-Pad: " + "y" * 17000])
    assert big.status == 431
    assert re.search(rb"over 16 KiB", bytes(big.body))
