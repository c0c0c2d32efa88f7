"""Live upgrade across code versions (SPEC 13): a daemon running an earlier commit of ssed
upgrades into the code of this tree, which is what a deployment does (the package on disk is
replaced, then `ssectl upgrade`). Every stream stays on its TCP connection, a slow reader's
queued bytes cross byte-exact, the id clock and the history go on.

The earlier code comes from this repository's history (`git archive`): REVISIONS pins one
commit per handover record the current code must still read. A change to the record that
breaks an old sender fails here, not on a user's server.
"""
import io
import os
import shutil
import socket
import subprocess
import tarfile

import pytest

from conftest import ROOT, TIMEOUT
from test_upgrade import CHAT, _key, alive, successors, upgrade  # noqa: F401,F811 (a fixture)
from ssed import sse

REVISIONS = {
    "548cc8e": "record version 1 (JSON), handed over in one part",
    "16fcd54": "record version 2 (pickle), in two parts: the first code that was to land",
}


def _archive(rev, into):
    """ssed/ as committed at `rev`, under `into`. Skipped, saying why, where the tree has
    no such history (a shallow clone, an unpacked archive): the earlier code is not there."""
    try:
        tar = subprocess.run(["git", "-C", ROOT, "archive", rev, "ssed"], capture_output=True,
                             timeout=TIMEOUT, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no git history to take ssed at {rev} from (a shallow clone?): {exc}")
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")


def _replace_code(root, package=os.path.join(ROOT, "ssed")):
    """What a deployment does: the package on disk becomes this tree's (no old .pyc left)."""
    shutil.rmtree(root / "ssed", ignore_errors=True)
    shutil.copytree(package, root / "ssed", ignore=shutil.ignore_patterns("__pycache__"))


def _slow_reader(port):
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(TIMEOUT)
    slow.connect(("127.0.0.1", port))
    slow.sendall(b"GET /chat?client=slow HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += slow.recv(1)
    return slow


def _read_until(sock, end):
    body = bytearray()
    while not body.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, f"EOF after {len(body)} bytes"
        body += chunk
    return bytes(body)


@pytest.mark.parametrize("rev", sorted(REVISIONS), ids=lambda r: f"{r}-{REVISIONS[r][:20]}")
def test_a_daemon_of_an_earlier_commit_upgrades_into_this_code(daemon, successors, tmp_path,
                                                              rev):
    code = tmp_path / "code"
    _archive(rev, code)
    d = daemon(CHAT, top="send_buffer = 33554432\nsend_timeout = 60\n",
               env={"PYTHONPATH": str(code)})
    streams = [d.stream(f"/chat?client=c{i}") for i in range(3)]
    slow = _slow_reader(d.port)
    frames, queued = [], 0
    while queued < 300_000:     # past what the kernel buffers: it waits in the old process
        assert len(frames) < 2000
        data = f"{len(frames):04d} " + "x" * 8000
        answer = d.publish("/chat", data)
        frames.append((answer["id"], data))
        slow_info = [c for c in d.ctl({"cmd": "clients", "service": "/chat"})["clients"]
                     if c["id"] == "slow"]
        queued = slow_info[0]["bytes_queued"]
    for s in streams:
        s.wait_events(len(frames))
    old = d.proc.pid
    _replace_code(code)
    answer = upgrade(d, successors)
    assert answer["pid"] != old and alive(answer["pid"]) and answer["streams"] == 4
    last = d.publish("/chat", "after the upgrade")
    assert _key(last["id"]) > _key(frames[-1][0])       # the id clock went across
    for s in streams:
        got = [(e.id, e.data) for e in s.wait_events(len(frames) + 1)]
        assert got == frames + [(last["id"], "after the upgrade")]
        assert len(s.events) == len(frames) + 1          # nothing twice
    body = _read_until(slow, sse.frame("after the upgrade", None, last["id"]))
    want = b"".join(sse.frame(data, None, id_) for id_, data in frames)
    assert body.endswith(want + sse.frame("after the upgrade", None, last["id"]))
    assert body.count(b"id: ") == len(frames) + 2       # the priming id, then each event's
    # The history went across too: a replay from before the upgrade.
    late = d.stream("/chat", headers=[f"Last-Event-ID: {frames[-3][0]}"])
    assert [e.id for e in late.wait_events(3)] == [frames[-2][0], frames[-1][0], last["id"]]
    slow.close()


def test_this_code_upgrading_into_an_older_one_that_cannot_read_it_rolls_back(
        daemon, successors, tmp_path):  # noqa: F811
    """Code on disk older than the running daemon (a downgrade by upgrade): its first part
    in batches (record version 3) is refused by its version, and the daemon serves on."""
    code = tmp_path / "code"
    code.mkdir()
    _replace_code(code, os.path.join(ROOT, "ssed"))
    d = daemon(CHAT, env={"PYTHONPATH": str(code)})
    s = d.stream("/chat")
    d.publish("/chat", "before")
    shutil.rmtree(code / "ssed")
    _archive("16fcd54", code)
    answer = upgrade(d, successors, expect_ok=False)
    assert not answer["ok"] and "version 3" in answer["stderr"], answer
    assert d.proc.poll() is None
    d.publish("/chat", "after")
    assert [e.data for e in s.wait_events(2)] == ["before", "after"]
