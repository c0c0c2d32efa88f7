"""`make cluster-demo` (conf/cluster-demo.py): a throwaway redis-server and the three nodes of
conf/cluster-{1,2,3}.ini start, an event published on node 1 reaches a subscriber of node 3,
and Ctrl-C stops everything: no port left listening, no temporary directory left behind.
Every wait is bounded; a failed test still kills the script, and its children die with it
(PR_SET_PDEATHSIG)."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

from conftest import ROOT, TIMEOUT, ControlClient, StreamClient, env, reap
from ports import free_port
from redisserver import require_redis

SCRIPT = os.path.join(ROOT, "conf", "cluster-demo.py")
START = 60.0    # Redis and three nodes, one after the other, on a loaded machine


def read_until(proc, needle, timeout):
    """The script's stdout up to the line holding `needle`, bounded."""
    out, deadline = [], time.monotonic() + timeout
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while needle.encode() not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"no {needle!r} (status {proc.poll()}): {buf.decode()!r}\n"
                                 f"{proc.stderr.read().decode() if proc.poll() is not None else ''}")
        try:
            chunk = os.read(proc.stdout.fileno(), 65536)
        except BlockingIOError:
            time.sleep(0.05)
            continue
        buf += chunk
        out.append(chunk)
    return buf.decode()


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_makefile_runs_the_demo_script():
    done = subprocess.run(["make", "-n", "-s", "-C", ROOT, "cluster-demo"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and "conf/cluster-demo.py" in done.stdout, done


def test_demo_starts_three_nodes_shares_an_event_and_stops_clean():
    require_redis()
    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen([sys.executable, SCRIPT, "--ports", ",".join(map(str, ports))],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env(), cwd=ROOT,
                            start_new_session=True)
    try:
        text = read_until(proc, "Ctrl-C stops it all", START)
        redis_port = int(re.search(r"Redis on 127\.0\.0\.1:(\d+)", text).group(1))
        assert redis_port != 6379
        socks = dict(re.findall(r"node (\d): http://127\.0\.0\.1:\d+/  \(pid \d+, control (\S+)\)", text))
        assert sorted(socks) == ["1", "2", "3"]
        directory = os.path.dirname(socks["1"])
        assert f"curl -N localhost:{ports[0]}/user/alice" in text
        assert f"python3 -m ssed.ctl -s {socks['2']} publish /user/alice" in text

        stream = StreamClient(ports[2], "/user/alice")
        assert stream.status == 200
        with ControlClient(socks["1"]) as ctl:
            answer = ctl.request({"cmd": "publish", "service": "/user/alice",
                                  "data": "from node 1"})
            assert answer["ok"], answer
            [event] = stream.wait_events(1)
            assert (event.id, event.data) == (answer["id"], "from node 1")
            # Node 1 hears of the others from their heartbeats (a second apart).
            deadline = time.monotonic() + TIMEOUT
            while True:
                cluster = ctl.request({"cmd": "cluster"})
                if len(cluster["nodes"]) == 3 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert cluster["up"] and len(cluster["nodes"]) == 3, cluster

        os.killpg(proc.pid, signal.SIGINT)      # what Ctrl-C sends the foreground group
        assert proc.wait(TIMEOUT * 3) == 0, proc.stderr.read()
        stream.wait_closed()
        stream.close()
        assert all(refused(port) for port in [*ports, redis_port])
        assert not os.path.exists(directory)
    finally:
        if proc.poll() is None:     # a failed assertion: the orderly stop, then the hard one
            proc.terminate()
            try:
                proc.wait(TIMEOUT * 3)
            except subprocess.TimeoutExpired:
                reap(proc)
