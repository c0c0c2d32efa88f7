"""`reuse_port = true` (SPEC 12): several daemons share one port through SO_REUSEPORT, at
start and when a reload binds a new address; without it the second daemon fails with the one
clear "address in use" line. A reload never changes `reuse_port` or `[cluster]`: it warns and
keeps the running values. The daemons are subprocesses; every wait is bounded.
"""
import subprocess
import sys

from conftest import TIMEOUT, Daemon, env, reap
from ports import free_port

CHAT = "[/chat]\n"



def start(tmp_path, name, port, reuse_port):
    path = tmp_path / name
    path.mkdir()
    return Daemon(path, CHAT, listen=f"127.0.0.1:{port}",
                  top=f"reuse_port = {'true' if reuse_port else 'false'}\n")


def test_two_daemons_with_reuse_port_share_a_port_and_both_serve_streams(tmp_path):
    port = free_port()
    a = start(tmp_path, "a", port, True)
    try:
        b = start(tmp_path, "b", port, True)
        try:
            assert a.port == b.port == port
            # The kernel spreads connections over both by their address: with 24 streams,
            # all on one daemon has a chance of 2 in 2**24.
            streams = [a.stream("/chat") for _ in range(24)]
            assert all(s.status == 200 for s in streams)
            on_a = a.publish("/chat", "from a")["delivered"]
            on_b = b.publish("/chat", "from b")["delivered"]
            assert on_a > 0 and on_b > 0 and on_a + on_b == len(streams), (on_a, on_b)
            got = sorted(s.wait_events(1)[0].data for s in streams)
            assert got == ["from a"] * on_a + ["from b"] * on_b
            assert b.stop() == 0
        finally:
            reap(b.proc)
        assert a.stop() == 0
    finally:
        reap(a.proc)


def refused_start(tmp_path, port, reuse_port):
    """A daemon that should not start on `port`: its exit status and stderr lines."""
    path = tmp_path / "second"
    path.mkdir()
    ini = path / "ssed.ini"
    ini.write_text(f"[ssed]\nlisten = 127.0.0.1:{port}\ncontrol = ssed.sock\n"
                   f"reuse_port = {'true' if reuse_port else 'false'}\n{CHAT}")
    done = subprocess.run([sys.executable, "-m", "ssed", "-c", str(ini)], env=env(), cwd=path,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT)
    return done.returncode, done.stderr.splitlines()


def test_without_reuse_port_the_second_daemon_says_the_address_is_in_use(tmp_path):
    port = free_port()
    a = start(tmp_path, "a", port, False)
    try:
        assert refused_start(tmp_path, port, False) == (
            1, [f"ssed: cannot listen on 127.0.0.1:{port}: Address already in use"])
    finally:
        reap(a.proc)


def test_reuse_port_on_one_side_only_is_refused_too(tmp_path):
    """SO_REUSEPORT shares a port only among sockets that all set it."""
    port = free_port()
    a = start(tmp_path, "a", port, False)
    try:
        assert refused_start(tmp_path, port, True) == (
            1, [f"ssed: cannot listen on 127.0.0.1:{port}: Address already in use"])
    finally:
        reap(a.proc)


def test_a_reload_binds_a_new_address_with_reuse_port(daemon, tmp_path):
    port = free_port()
    holder = start(tmp_path, "holder", port, True)
    try:
        d = daemon(CHAT, top="reuse_port = true\n")
        d.ini.write_text(d.ini.read_text().replace("127.0.0.1:0", f"127.0.0.1:0 127.0.0.1:{port}"))
        answer = d.ctl({"cmd": "reload"})
        assert answer == {"ok": True, "changes": ["changed [ssed]: listen",
                                                  f"listening on 127.0.0.1:{port}"]}, answer
    finally:
        reap(holder.proc)


def test_a_reload_keeps_reuse_port_and_cluster_until_restart_and_warns(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat")
    d.ini.write_text(d.ini.read_text().replace("[/chat]", "reuse_port = true\n[cluster]\n"
                                               "redis = redis://:hidden-pw@127.0.0.1:1/0\n"
                                               "node = n1\n[/chat]"))
    answer = d.ctl({"cmd": "reload"})
    assert answer == {"ok": True, "changes": ["changed [ssed]: reuse_port", "added [cluster]"]}
    d.wait_log(r"warning \[cluster\] changes apply at restart: this node keeps its \[cluster\] "
               r"settings until then$")
    d.wait_log(r"warning \[ssed\] reuse_port changes apply at restart: the listeners keep "
               r"reuse_port = false until then$")
    # Still the old settings: the same change is reported (and warned) again.
    assert d.ctl({"cmd": "reload"})["changes"] == ["changed [ssed]: reuse_port",
                                                   "added [cluster]"]
    assert d.publish("/chat", "still here")["delivered"] == 1
    assert s.wait_events(1)[0].data == "still here"
    assert "hidden-pw" not in "\n".join(d.log)
    assert d.stop() == 0
