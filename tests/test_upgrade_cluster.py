"""A node of a cluster (SPEC 12) upgraded (SPEC 13): the new process resumes reading the
cluster's event stream after the last id the old one read, so its subscribers get every
event exactly once, in order, those published on another node during the handover included.
Needs redis-server (tests/redisserver.py: skipped without it, failed under CI=true).
"""
import textwrap
import threading
import time

from conftest import TIMEOUT, ControlClient
from test_upgrade import _wait_for, successors  # noqa: F401  (a fixture)


def node_config(redis):
    return textwrap.dedent(f"""
        [cluster]
        redis = {redis.url}
        timeout = 2

        [/chat]
        source = none
    """)


def test_an_upgraded_node_resumes_after_the_last_id_it_read(daemon, redis, successors):  # noqa: F811
    a = daemon(node_config(redis))
    b = daemon(node_config(redis))
    for d in (a, b):
        d.wait_log("cluster: node .* reading")
    clients = [a.stream("/chat") for _ in range(3)]
    acked, stop = [], threading.Event()

    def publish():     # on node b, which is not upgraded: its events reach a through Redis
        n, conn = 0, None
        while not stop.is_set():
            try:
                conn = conn or ControlClient(b.control)
                answer = conn.request({"cmd": "publish", "service": "/chat", "data": f"e{n}"})
            except (OSError, AssertionError):
                conn = None
                continue
            if answer.get("ok"):
                acked.append((answer["id"], f"e{n}"))
                n += 1
            time.sleep(0.002)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        for _ in range(3):
            _wait_for(lambda: len(acked) >= 20)
            answer = a.ctl({"cmd": "upgrade"})
            assert answer["ok"], answer
            successors.append(answer["pid"])
            at = len(acked)
            _wait_for(lambda: len(acked) >= at + 20)
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert a.proc.wait(TIMEOUT) == 0
    want = [i for i, _ in acked]
    for c in clients:
        got = [e.id for e in c.wait_events(len(want))]
        assert got == want
    # Its own publishes go through Redis and come back once too.
    mine = a.publish("/chat", "from a")["id"]
    for c in clients:
        assert c.wait_events(len(want) + 1)[-1].id == mine
    info = a.ctl({"cmd": "cluster"})
    assert info["ok"] and info["up"], info
