"""The redis-server harness the cluster tests stand on (tests/redisserver.py).

A real redis-server each time: started and answering, error replies as values, killed and
restarted on the same port with its data (AOF, appendfsync always) or empty, paused so that
reads time out and resumed so that they are answered, a password, a UNIX socket, and never a
process left behind. Without redis-server these fail under CI=true and skip elsewhere.
"""
import os
import socket
import subprocess
import sys
import time

import pytest

from redisserver import MISSING, Client, RedisServer, require_redis
from ssed.resp import Error

HERE = os.path.dirname(os.path.abspath(__file__))


def gone(pid):
    """True once `pid` has exited (a zombie counts: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not gone(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.01)


def test_started_server_answers_commands_on_its_port(redis):
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"
    assert redis.call("SET", "k", "v") == "OK"
    assert redis.call("GET", "k") == b"v"
    assert redis.call("GET", "nothing") is None
    assert redis.call("DEBUG", "SLEEP", 0) == "OK"      # a slow Redis, for the cluster tests
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5):
        pass


def test_error_replies_come_back_as_values(redis):
    redis.call("SET", "k", "v")
    answer = redis.call("XADD", "k", "*", "a", "b")
    assert isinstance(answer, Error) and answer.code == "WRONGTYPE"


def test_a_client_pipelines_and_reads_in_order(redis):
    with redis.client() as c:
        for i in range(3):
            c.send("INCR", "n")
        assert [c.read() for _ in range(3)] == [1, 2, 3]


def test_stop_leaves_no_process_and_close_no_directory():
    server = RedisServer()
    server.start()
    pid = server.proc.pid
    server.stop()
    assert gone(pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5)
    server.close()
    assert not os.path.exists(server.dir)


def test_killed_server_restarts_on_the_same_port(redis):
    port, pid = redis.port, redis.proc.pid
    redis.kill()
    assert gone(pid)
    with pytest.raises(ConnectionRefusedError):
        redis.call("PING")
    redis.restart()
    assert redis.port == port and redis.proc.pid != pid
    assert redis.call("PING") == "PONG"


def test_aof_keeps_acknowledged_writes_across_a_kill(make_redis):
    server = make_redis(appendonly=True)
    assert server.call("CONFIG", "GET", "appendfsync") == [b"appendfsync", b"always"]
    entry = server.call("XADD", "s", "*", "d", "kept")
    server.kill()                            # no shutdown: what is kept was in the AOF already
    server.restart(keep_data=True)
    assert server.call("XRANGE", "s", "-", "+") == [[entry, [b"d", b"kept"]]]


def test_restart_empty_deletes_the_aof(make_redis):
    server = make_redis(appendonly=True)
    server.call("XADD", "s", "*", "d", "lost")
    server.restart(keep_data=False)
    assert server.call("XLEN", "s") == 0
    assert server.call("DBSIZE") == 0


def test_without_aof_a_restart_is_empty_either_way(redis):
    assert redis.call("CONFIG", "GET", "save") == [b"save", b""]
    redis.call("SET", "k", "v")
    redis.restart(keep_data=True)
    assert redis.call("GET", "k") is None
    assert not os.path.exists(os.path.join(redis.dir, "dump.rdb"))


def test_paused_server_times_reads_out_and_answers_once_resumed(redis):
    with redis.client() as c:
        assert c.call("PING") == "PONG"
        redis.pause()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            c.call("PING", timeout=0.3)
        assert time.monotonic() - start < 2
        with pytest.raises(TimeoutError):     # connecting works (the listen queue); no answer
            redis.call("PING", timeout=0.3)
        redis.resume()
        assert c.read() == "PONG"             # the PING sent while it was stopped
    assert redis.call("PING") == "PONG"


def test_paused_server_still_stops():
    server = RedisServer()
    try:
        server.start()
        pid = server.proc.pid
        server.pause()
    finally:
        start = time.monotonic()
        server.close()
    assert gone(pid)
    assert time.monotonic() - start < 5, "SIGTERM waited for the stopped process"


def test_password_is_required_and_sent(make_redis):
    server = make_redis(password="s3cr:t@/x")
    assert server.url == f"redis://:s3cr%3At%40%2Fx@127.0.0.1:{server.port}/0"
    assert server.call("PING") == "PONG"                     # AUTH first
    with Client(server.port) as bare:
        assert bare.call("PING").code == "NOAUTH"
    with pytest.raises(ConnectionError, match="WRONGPASS"):
        Client(server.port, password="wrong")


def test_unix_socket(make_redis):
    server = make_redis(unixsocket=True)
    assert server.unix_url == f"unix://{server.unixsocket}?db=0"
    with server.client(unix=True) as c:
        assert c.call("SET", "k", "over unix") == "OK"
    assert server.call("GET", "k") == b"over unix"


def test_a_start_that_fails_says_why(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = RedisServer(dir=tmp_path)
        server.port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="(?s)exited.*Address already in use"):
            server.start()
    assert not server.running()


def test_server_dies_with_the_process_that_started_it(tmp_path):
    """A test run killed outright (no fixture teardown) leaves no redis-server behind."""
    require_redis()
    script = ("import os, sys; sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]\n"
              "from redisserver import RedisServer\n"
              "s = RedisServer(dir=sys.argv[2]).start()\n"
              "print(s.proc.pid, flush=True)\n"
              "os.kill(os.getpid(), 9)\n")
    child = subprocess.run([sys.executable, "-c", script, HERE, str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    assert child.returncode == -9, child.stderr
    wait_gone(int(child.stdout))


def test_missing_redis_server_skips_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"redis-server not installed \(apt-get"):
        require_redis()
    assert MISSING == "redis-server not installed (apt-get install redis-server)"


def test_missing_redis_server_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server not installed"):
        require_redis()
