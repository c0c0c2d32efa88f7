"""A node of a cluster (SPEC 12) upgraded (SPEC 13): the new process resumes reading the
cluster's event stream after the last id the old one read, so its subscribers get every
event exactly once, in order, those published on another node during the handover included.
Needs redis-server (tests/redisserver.py: skipped without it, failed under CI=true).
"""
import textwrap

from conftest import TIMEOUT
from test_upgrade import Publisher, successors, upgrades_under  # noqa: F401  (a fixture)


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
    pub = Publisher(b.control, pause=0.002)     # on node b, not upgraded: via Redis to a
    upgrades_under(pub, a, successors, 3)
    acked = pub.acked
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
