"""The [cluster] section (SPEC 12), the `cluster` service key and `reuse_port`: every key and
every Redis URL form to exact values, every refusal to its exact `FILE:LINE: message`, a
password never in an error or a log line, and what a reload may not change."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, TIMEOUT, env
from ssed import config, values
from ssed.config import ConfigError
from ssed.log import redact
from ssed.values import RedisAddress

F = "/cfg/ssed.ini"     # nothing is opened: the base directory need not exist
SECRET = "s3cr3t-PW"    # a password that must appear in no error text


def ok(text):
    return config.parse(textwrap.dedent(text), F)


def errors(text):
    with pytest.raises(ConfigError) as info:
        config.parse(textwrap.dedent(text), F)
    return info.value.errors


def cluster(*lines):
    return "[cluster]\n" + "".join(line + "\n" for line in lines) + "[/a]\n"


# --- defaults ------------------------------------------------------------------------------------

def test_without_the_section_there_is_no_cluster_and_services_are_marked_clustered():
    c = ok("[/a]\n[/u/*]\n")
    assert c.cluster is None
    assert c.reuse_port is False
    assert c.services[0].cluster is True and c.templates[0].cluster is True


def test_the_section_with_only_redis_gives_every_default():
    c = ok(cluster("redis = redis://127.0.0.1:6379/0"))
    cl = c.cluster
    assert cl.redis == RedisAddress(host="127.0.0.1", port=6379, path=None, db=0, user=None,
                                    password=None)
    assert (cl.prefix, cl.node, cl.maxlen, cl.timeout, cl.lease) == ("ssed", None, 100000,
                                                                     5.0, 10.0)
    assert (cl.line, dict(cl.lines)) == (1, {"redis": 2})


def test_every_cluster_key_takes_its_value():
    cl = ok(cluster("redis = unix:///run/redis/redis.sock?db=3", "prefix = app-1.sse:x",
                    "node = web1:8081", "maxlen = 1", "timeout = 0.5", "lease = 2.5")).cluster
    assert cl.redis == RedisAddress(host=None, port=None, path="/run/redis/redis.sock", db=3)
    assert (cl.prefix, cl.node, cl.maxlen, cl.timeout, cl.lease) == ("app-1.sse:x", "web1:8081",
                                                                     1, 0.5, 2.5)


def test_cluster_configs_are_frozen_and_compare_by_settings():
    a = ok(cluster("redis = redis://h")).cluster
    b = ok("\n\n" + cluster("redis = redis://h:6379/0")).cluster
    assert a == b and a.line != b.line
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.prefix = "x"


@pytest.mark.parametrize("body, expected", [
    ("[/a]\n", True),
    ("[/a]\ncluster = false\n", False),
    ("[/a]\ncluster = no\n", False),
    ("[/a]\ncluster = true\n", True),
])
def test_service_cluster_key(body, expected):
    assert ok(body).services[0].cluster is expected
    assert ok(body.replace("[/a]", "[/a/*]")).templates[0].cluster is expected


@pytest.mark.parametrize("line, expected", [
    ("reuse_port = true", True), ("reuse_port = false", False), ("reuse_port = on", True)])
def test_reuse_port(line, expected):
    assert ok(f"[ssed]\n{line}\n[/a]\n").reuse_port is expected


def test_clustered_services_keep_no_journal_cluster_false_ones_do():
    c = ok("[ssed]\nstate_dir = /var/lib/ssed\n" + cluster("redis = redis://h")
           + "[/b]\ncluster = false\n[/c]\ncluster = false\njournal = c.j\n[/u/*]\n"
             "[/v/*]\ncluster = false\n")
    assert [(s.path, s.journal) for s in c.services + c.templates] == [
        ("/a", None), ("/b", "/var/lib/ssed/b.journal"), ("/c", "/cfg/c.j"), ("/u/*", None),
        ("/v/*", "/var/lib/ssed")]
    # Without [cluster] the same service keys journal as before.
    assert ok("[ssed]\nstate_dir = /s\n[/a]\n").services[0].journal == "/s/a.journal"


def test_a_class_service_keeps_its_own_keys_named_like_cluster_keys():
    s = ok("[/p]\nclass = m:C\ntimeout = 3\nprefix = x\n").services[0]
    assert dict(s.options) == {"timeout": "3", "prefix": "x"}


# --- Redis URLs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("redis://127.0.0.1", RedisAddress("127.0.0.1", 6379)),
    ("redis://127.0.0.1:6380", RedisAddress("127.0.0.1", 6380)),
    ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, db=2)),
    ("redis://localhost/15", RedisAddress("localhost", 6379, db=15)),
    ("redis://redis.example.com:1/", RedisAddress("redis.example.com", 1)),
    ("REDIS://h", RedisAddress("h", 6379)),
    ("redis://[::1]", RedisAddress("::1", 6379)),
    ("redis://[2001:db8::7]:6390/1", RedisAddress("2001:db8::7", 6390, db=1)),
    ("redis://:pw@h", RedisAddress("h", 6379, password="pw")),
    ("redis://alice:pw@h:7/3", RedisAddress("h", 7, db=3, user="alice", password="pw")),
    ("redis://alice:@h", RedisAddress("h", 6379, user="alice")),
    ("redis://a%3Ab:p%40s%3As%2Fw%25@h", RedisAddress("h", 6379, user="a:b",
                                                       password="p@s:s/w%")),
    ("redis://:p@ss/w?#@[::1]:6379/4", RedisAddress("::1", 6379, db=4, password="p@ss/w?#")),
    ("redis://:%C3%A9@h", RedisAddress("h", 6379, password="é")),
    ("unix:///run/redis.sock", RedisAddress(None, None, path="/run/redis.sock")),
    ("unix:///run/redis.sock?db=9", RedisAddress(None, None, path="/run/redis.sock", db=9)),
    ("unix:///run/my%20redis.sock", RedisAddress(None, None, path="/run/my redis.sock")),
    ("unix://:pw@/run/redis.sock?db=1", RedisAddress(None, None, path="/run/redis.sock", db=1,
                                                    password="pw")),
])
def test_redis_url_forms(url, expected):
    assert ok(cluster(f"redis = {url}")).cluster.redis == expected


@pytest.mark.parametrize("url, message", [
    ("rediss://h:6380", "rediss:// (Redis over TLS) is not supported: reach Redis on a private "
                        "network or its UNIX socket, or through a TLS tunnel (stunnel, spiped) "
                        "with redis:// to its local end"),
    ("http://h", "unknown scheme 'http': expected redis://[user:password@]host[:port][/db] or "
                 "unix:///path/redis.sock[?db=N]"),
    ("127.0.0.1:6379", "expected redis://[user:password@]host[:port][/db] or "
                       "unix:///path/redis.sock[?db=N], got '127.0.0.1:6379'"),
    ("redis://", "expected host[:port] after redis:// (IPv6 in brackets, as in "
                 "redis://[::1]:6379), got ''"),
    ("redis://:6379", "expected host[:port] after redis:// (IPv6 in brackets, as in "
                      "redis://[::1]:6379), got ':6379'"),
    ("redis://::1:6379", "expected host[:port] after redis:// (IPv6 in brackets, as in "
                         "redis://[::1]:6379), got '::1:6379'"),
    ("redis://h:", "expected host[:port] after redis:// (IPv6 in brackets, as in "
                   "redis://[::1]:6379), got 'h:'"),
    ("redis://h:0", "expected a port 1..65535 in the redis URL, got 0"),
    ("redis://h:65536", "expected a port 1..65535 in the redis URL, got 65536"),
    ("redis://h:123456", "expected host[:port] after redis:// (IPv6 in brackets, as in "
                         "redis://[::1]:6379), got 'h:123456'"),
    ("redis://bad_host", "bad host 'bad_host' in the redis URL"),
    ("redis://[::zz]", "bad host '::zz' in the redis URL"),
    ("redis://999.1.1.1", "bad host '999.1.1.1' in the redis URL"),
    ("redis://h/x", "expected a db number 0..2147483647 in the redis URL, got 'x'"),
    ("redis://h/-1", "expected a db number 0..2147483647 in the redis URL, got '-1'"),
    ("redis://h/2147483648", "expected a db number 0..2147483647 in the redis URL, "
                             "got '2147483648'"),
    ("redis://h/0/1", "expected a db number 0..2147483647 in the redis URL, got '0/1'"),
    ("redis://h?db=1", "no query or fragment in a redis:// URL (the db goes in the path: "
                       "redis://host:6379/1), got 'h?db=1'"),
    ("unix://run/redis.sock", "expected an absolute socket path, as in "
                              "unix:///run/redis/redis.sock, got 'run/redis.sock'"),
    ("unix:///r.sock?db=x", "expected a db number 0..2147483647 in the redis URL, got 'x'"),
    ("unix:///r.sock?db=", "expected a db number 0..2147483647 in the redis URL, "
                           "got '(empty)'"),
    ("unix:///r.sock?db=1&db=2", "unknown or repeated parameter 'db' in the unix:// URL "
                                 "(only ?db=N)"),
    ("unix:///r.sock?timeout=1", "unknown or repeated parameter 'timeout' in the unix:// URL "
                                 "(only ?db=N)"),
    ("unix:///" + "x" * 107, "a UNIX socket path holds at most 107 bytes and no NUL"),
    ("redis://h x", "expected one URL without spaces, got 'redis://h x'"),
])
def test_redis_url_refusals_name_file_line_and_key(url, message):
    assert errors(cluster(f"redis = {url}")) == [f"{F}:2: redis: {message}"]


@pytest.mark.parametrize("url, message", [
    (f"redis://{SECRET}@h", "user info without ':' before '@' (not shown): write "
                            "redis://:PASSWORD@host, or redis://USER:PASSWORD@host"),
    (f"redis://:{SECRET}%zz@h", "the password has a '%' not followed by two hex digits (value "
                                "not shown): write a literal % as %25"),
    (f"redis://u%zz:{SECRET}@h", "the user has a '%' not followed by two hex digits (value "
                                 "not shown): write a literal % as %25"),
    (f"redis://:{SECRET}%ff@h", "the password is not UTF-8 once percent-decoded (value not "
                                "shown)"),
    (f"redis://:{SECRET} x@h", "expected one URL without spaces, got a value with an '@' "
                               "(not shown: it may hold a password)"),
    (f"{SECRET}@h:6379", "expected redis://[user:password@]host[:port][/db] or "
                         "unix:///path/redis.sock[?db=N], got a value with an '@' (not shown: "
                         "it may hold a password)"),
    (f"redis://:{SECRET}@h:0", "expected a port 1..65535 in the redis URL, got 0"),
    (f"redis://:{SECRET}@h/x", "expected a db number 0..2147483647 in the redis URL, got 'x'"),
    (f"redis://:{SECRET}/x@h:99999", "expected a port 1..65535 in the redis URL, got 99999"),
    (f"rediss://:{SECRET}@h", "rediss:// (Redis over TLS) is not supported: reach Redis on a "
                              "private network or its UNIX socket, or through a TLS tunnel "
                              "(stunnel, spiped) with redis:// to its local end"),
])
def test_a_password_is_never_in_an_error(url, message):
    found = errors(cluster(f"redis = {url}"))
    assert found == [f"{F}:2: redis: {message}"]
    assert SECRET not in "\n".join(found)


def test_a_malformed_redis_line_is_not_quoted():
    found = errors(f"[cluster]\nredis redis://:{SECRET}@h\nredis = redis://h\n[/a]\n")
    assert found == [f"{F}:2: expected [section] or key = value, got 'redis ... (value not "
                     "shown)'"]


def test_a_redis_address_shows_no_password():
    address = values.redis_url(f"redis://alice:{SECRET}@h:7/3")
    assert address.password == SECRET
    assert str(address) == "redis://alice@h:7/3"
    assert SECRET not in repr(address) and SECRET not in repr(
        ok(cluster(f"redis = redis://:{SECRET}@h")))
    assert str(values.redis_url("redis://[::1]")) == "redis://[::1]:6379/0"
    assert str(values.redis_url("unix:///r.sock?db=2")) == "unix:///r.sock?db=2"


@pytest.mark.parametrize("line, shown", [
    (f"connecting to redis://alice:{SECRET}@h:6379/0 now", "redis://alice:***@h:6379/0 now"),
    (f"url=redis://:{SECRET}@h", "url=redis://:***@h"),
    (f"REDIS://{SECRET}@h", "REDIS://***@h"),
    (f"rediss://u:{SECRET}@h", "rediss://u:***@h"),
    (f"redis://:a@{SECRET}@h/0", "redis://:***@h/0"),
    ("redis://h:6379/0 and mail@example.com", "redis://h:6379/0 and mail@example.com"),
])
def test_the_log_redacts_a_redis_url_password(line, shown):
    assert redact(line).endswith(shown) and SECRET not in redact(line)


# --- other refusals ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("[cluster]\nprefix = x\n[/a]\n", ["1: [cluster] without redis: add redis = "
                                       "redis://HOST[:PORT][/DB] (or unix:///PATH/redis.sock)"]),
    ("[cluster]\n[/a]\n", ["1: [cluster] without redis: add redis = redis://HOST[:PORT][/DB] "
                           "(or unix:///PATH/redis.sock)"]),
    (cluster("redis ="), ["2: redis: empty: expected redis://HOST[:PORT][/DB] "
                          "(or unix:///PATH/redis.sock)"]),
    (cluster("redis = redis://h", "prefix = {ssed}"),
     ["3: prefix: expected 1-64 of A-Z a-z 0-9 _ . : -, got '{ssed}'"]),
    (cluster("redis = redis://h", "prefix = a b"),
     ["3: prefix: expected 1-64 of A-Z a-z 0-9 _ . : -, got 'a b'"]),
    (cluster("redis = redis://h", "prefix ="),
     ["3: prefix: expected 1-64 of A-Z a-z 0-9 _ . : -, got ''"]),
    (cluster("redis = redis://h", "prefix = " + "p" * 65),
     [f"3: prefix: expected 1-64 of A-Z a-z 0-9 _ . : -, got '{'p' * 65}'"]),
    (cluster("redis = redis://h", "node = web 1"),
     ["3: node: expected a name of visible ASCII characters without spaces (at most 255), "
      "got 'web 1'"]),
    (cluster("redis = redis://h", "maxlen = 0"), ["3: maxlen: expected an integer >= 1, got '0'"]),
    (cluster("redis = redis://h", "maxlen = 1e5"),
     ["3: maxlen: expected an integer >= 1, got '1e5'"]),
    (cluster("redis = redis://h", "timeout = 0"),
     ["3: timeout: expected a number > 0, got '0'"]),
    (cluster("redis = redis://h", "lease = -1"), ["3: lease: expected a number > 0, got '-1'"]),
    (cluster("redis = redis://h", "leese = 3"),
     ["3: unknown key 'leese' (did you mean 'lease'?)"]),
    (cluster("redis = redis://h", "history = 3"),
     ["3: key 'history' belongs in [ssed] or a service section"]),
    (cluster("redis = redis://h", "cluster = false"),
     ["3: key 'cluster' belongs in a service section"]),
    (cluster("redis = redis://h", "redis = redis://g"),
     ["3: duplicate key 'redis' (first set at line 2)"]),
    ("[ssed]\nredis = redis://h\ncluster = true\n[/a]\n",
     ["2: key 'redis' belongs in [cluster]", "3: key 'cluster' belongs in a service section"]),
    ("[/a]\ntimeout = 3\n", ["2: key 'timeout' belongs in [cluster]"]),
    ("[/a]\ncluster = maybe\n",
     ["2: cluster: expected true or false (or yes/no, on/off, 1/0), got 'maybe'"]),
    ("[ssed]\nreuse_port = 2\n[/a]\n",
     ["2: reuse_port: expected true or false (or yes/no, on/off, 1/0), got '2'"]),
    ("[cluster]\nredis = redis://h\n[cluster]\nredis = redis://g\nlease = 0\n[/a]\n",
     ["3: duplicate section [cluster] (first at line 1)", "5: lease: expected a number > 0, "
                                                          "got '0'"]),
    ("[ssed]\nstate_dir = /s\n" + cluster("redis = redis://h") + "journal = a.j\n",
     ["6: journal: a clustered service keeps its history in Redis; set cluster = false to "
      "journal it on this node"]),
])
def test_bad_cluster_configs(text, expected):
    assert errors(text) == [f"{F}:{e}" for e in expected]


# --- reload ----------------------------------------------------------------------------------

BASE = cluster("redis = redis://h", "lease = 10", "node = n1")


@pytest.mark.parametrize("new, expected", [
    (BASE, []),
    (BASE.replace("redis://h", "redis://:pw@g:1/2").replace("10", "3"),
     ["changed [cluster]: redis, lease"]),
    (BASE.replace("[cluster]", "[cluster]\nprefix = other"), ["changed [cluster]: prefix"]),
    ("[/a]\n", ["removed [cluster]"]),
    (BASE + "cluster = false\n", ["changed /a: cluster"]),
    ("[ssed]\nreuse_port = true\n" + BASE, ["changed [ssed]: reuse_port"]),
])
def test_diff_names_cluster_changes_in_their_own_section(new, expected):
    assert config.diff(ok(BASE), ok(new)) == expected
    assert all("pw" not in line for line in config.diff(ok(BASE), ok(new)))


def test_diff_of_an_added_cluster():
    assert config.diff(ok("[/a]\n"), ok(BASE)) == ["added [cluster]"]


def test_restart_only_keeps_the_old_cluster_and_reuse_port_and_says_so():
    old = ok(BASE)
    new = ok("[ssed]\nreuse_port = yes\n" + BASE.replace("redis://h", "redis://g")
             + "history = 7\n")
    kept, warnings = config.restart_only(old, new)
    assert kept.cluster == old.cluster and kept.reuse_port is False
    assert kept.services == new.services            # the rest is the new config's
    assert warnings == [
        "[cluster] changes apply at restart: this node keeps its [cluster] settings until then",
        "[ssed] reuse_port changes apply at restart: the listeners keep reuse_port = false "
        "until then"]
    assert config.restart_only(old, ok(BASE)) == (ok(BASE), [])
    assert config.restart_only(ok("[/a]\n"), old)[0].cluster is None


def test_reuse_port_with_a_cluster_needs_a_node_name_of_its_own():
    # hostname:port, the default name, would be the same for every node sharing the port.
    assert errors("[ssed]\nreuse_port = true\n[cluster]\nredis = redis://h\n[/a]\n") == [
        f"{F}:3: [cluster] with reuse_port = true needs node = NAME, a name of its own for "
        "each node sharing the port"]
    assert ok("[ssed]\nreuse_port = true\n[cluster]\nredis = redis://h\nnode = a\n[/a]\n")


def test_keys_table_documents_the_cluster_section():
    text = config.keys_markdown()
    for name in ("redis", "prefix", "node", "maxlen", "timeout", "lease"):
        assert f"| `{name}` | [cluster] | " in text
    assert "| `cluster` | service, template | `true` |" in text
    assert "| `reuse_port` | [ssed] | `false` |" in text


# --- the shipped examples --------------------------------------------------------------------

EXAMPLES = [os.path.join(ROOT, "conf", f"cluster-{n}.ini") for n in (1, 2, 3)]


def test_the_example_cluster_is_three_nodes_one_redis_every_service_clustered():
    nodes = [config.load(path) for path in EXAMPLES]
    assert [c.listen for c in nodes] == [(("127.0.0.1", 8080 + n),) for n in (1, 2, 3)]
    assert [c.control for c in nodes] == [os.path.join(ROOT, f"cluster-{n}.sock")
                                          for n in (1, 2, 3)]
    assert {c.cluster for c in nodes} == {nodes[0].cluster}        # one cluster
    assert nodes[0].cluster.redis == RedisAddress("127.0.0.1", 6379, db=0)
    for c in nodes:
        assert [(s.path, s.source, s.cluster) for s in c.services] == [("/time", "time", True)]
        assert [(t.path, t.cluster) for t in c.templates] == [("/user/*", True)]


@pytest.mark.parametrize("path", EXAMPLES)
def test_check_passes_on_each_example_without_a_redis(path):
    done = subprocess.run([sys.executable, "-m", "ssed", "--check", "-c", path], env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", ""), done
