"""The built-in sources (SPEC section 3) against the daemon subprocess: time, messages, quotes
(command and file), command and file. Every wait is bounded: stream reads with timeouts and
`wait_log`. Scripts that a source runs report each run on a FIFO the test reads with a
timeout (`reports`), so that it can count ticks that publish nothing.
"""
import datetime
import json
import os
import re
import resource
import select
import socket
import time

import pytest

from conftest import TIMEOUT
from confdir import run_ssed, start_in, write_ini
from ssed.children import SHOWN_STDERR, shown
from ssed.limits import MAX_MESSAGES_FILE, MAX_SOURCE_EVENT

# A new stream gets only live events; to see a source's first ticks (published as the daemon
# starts), streams ask for the replay of everything held.
ALL = "lastEventId=0-0"


def write(path, text, mode=None):
    """Replace `path` atomically, so a source never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def script(path, body):
    write(path, "#!/bin/sh\n" + body, 0o755)


def id_ms(event_id):
    ms, _, seq = event_id.partition("-")
    return int(ms)


def alive(pid):
    """True while `pid` runs (a zombie nobody reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        os.sched_yield()


class Reports:
    """A FIFO a script writes a line to on each run (`echo ... > "$REPORTS"`), read here with a
    timeout. The test holds a writer open too, so that a read between runs waits, not EOF."""

    def __init__(self, path):
        os.mkfifo(path)
        self.path = str(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.writer = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self.buf = b""

    def line(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.fd], [], [], left)[0], "no report in time"
            self.buf += os.read(self.fd, 4096)
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def close(self):
        os.close(self.fd)
        os.close(self.writer)


@pytest.fixture
def reports(tmp_path):
    r = Reports(tmp_path / "reports")
    yield r
    r.close()


# -- time ------------------------------------------------------------------------------------

def test_time_iso_is_local_time_with_the_utc_offset_and_uses_event_type(daemon, monkeypatch):
    monkeypatch.setenv("TZ", "XYZ-05:30")      # POSIX TZ: local time is UTC+05:30
    d = daemon("""
        [/time]
        source = time
        interval = 0.2
        format = iso
        event = clock
    """)
    events = d.stream("/time?" + ALL).wait_events(2)
    local = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    for ev in events:
        assert ev.type == "clock"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30", ev.data), ev.data
        when = datetime.datetime.fromisoformat(ev.data)
        assert when.utcoffset() == local.utcoffset(None)
        assert abs(when.timestamp() - time.time()) < 5
        assert abs(when.timestamp() - id_ms(ev.id) / 1000) < 1.5


def test_time_unix_publishes_whole_seconds_of_the_event_time(daemon):
    d = daemon("""
        [/t]
        source = time
        interval = 0.05
        format = unix
    """)
    events = d.stream("/t?" + ALL).wait_events(3)
    values = [int(ev.data) for ev in events]
    assert all(re.fullmatch(r"\d+", ev.data) for ev in events)
    assert values == sorted(values)
    for ev, value in zip(events, values):
        assert ev.type == "message"                 # no `event =`: no event: line
        assert value == id_ms(ev.id) // 1000
        assert abs(value - time.time()) < 5


def test_time_strftime_pattern_is_applied_in_local_time(daemon, monkeypatch):
    monkeypatch.setenv("TZ", "XYZ+03")         # POSIX TZ: local time is UTC-03:00
    d = daemon("""
        [/t]
        source = time
        interval = 0.2
        format = at %H:%M:%S on %Y-%m-%d (%z) 100%%
    """)
    ev = d.stream("/t").wait_events(1)[0]
    m = re.fullmatch(r"at (\d\d:\d\d:\d\d) on (\d{4}-\d\d-\d\d) \(-0300\) 100%", ev.data)
    assert m, ev.data
    when = datetime.datetime.strptime(f"{m[2]} {m[1]} -0300", "%Y-%m-%d %H:%M:%S %z")
    assert abs(when.timestamp() - id_ms(ev.id) / 1000) < 1.5


def test_time_ticks_at_the_configured_interval(daemon):
    d = daemon("""
        [/t]
        source = time
        interval = 0.2
        format = unix
    """)
    s = d.stream("/t")
    start = time.monotonic()
    events = s.wait_events(6, timeout=3)     # 1 s apart would time out
    ids = [id_ms(ev.id) for ev in events]
    gaps = [b - a for a, b in zip(ids, ids[1:])]
    assert all(120 <= gap <= 450 for gap in gaps), gaps
    # Not faster either: six events span five intervals.
    assert 5 * 0.15 <= (ids[-1] - ids[0]) / 1000 <= 5 * 0.4
    assert time.monotonic() - start < 3


# -- messages ----------------------------------------------------------------------------------

def test_messages_from_file_go_round_robin_and_skip_blank_lines(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "messages.txt").write_text("one\n\ntwo words\n   \nthree\n")
    d = start_in(daemon, conf, """
        [/news]
        source = messages
        file = messages.txt
        interval = 0.05
        event = news
    """)
    events = d.stream("/news?" + ALL).wait_events(6)
    assert [ev.data for ev in events] == ["one", "two words", "three"] * 2
    assert {ev.type for ev in events} == {"news"}


def test_messages_value_with_continuation_lines_goes_round_robin(daemon):
    d = daemon("""
        [/m]
        source = messages
        interval = 0.05
        messages = first
            second one

            third ; a comment
    """)
    events = d.stream("/m?" + ALL).wait_events(5)
    assert [ev.data for ev in events] == ["first", "second one", "third", "first", "second one"]


# -- quotes --------------------------------------------------------------------------------------

def test_quotes_command_publishes_all_then_only_changed_and_nothing_when_unchanged(daemon,
                                                                                   tmp_path,
                                                                                   reports):
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "prices.txt", "ACME 12.5\nFOO 3\nBAR -0.25\n")
    script(conf / "quotes.sh", f'echo "quotes-run" > {reports.path}\ncat prices.txt\n')
    d = start_in(daemon, conf, """
        [/quotes]
        source = quotes
        command = ./quotes.sh
        interval = 0.05
        event = quote
    """)
    s = d.stream("/quotes?" + ALL)
    first = s.wait_events(1)[0]
    assert first.type == "quote"
    assert json.loads(first.data) == {"ACME": 12.5, "FOO": 3, "BAR": -0.25}
    assert all(isinstance(v, (int, float)) for v in json.loads(first.data).values())
    # Three more runs with the same prices: the second one's output was handled before the
    # third started (one command at a time), and it published nothing (checked below).
    for _ in range(3):
        assert reports.line() == "quotes-run"
    write(conf / "prices.txt", "ACME 13\nFOO 3\nBAR -0.25\nNEW 7.125\n")
    second = s.wait_events(2)[1]
    assert json.loads(second.data) == {"ACME": 13, "NEW": 7.125}
    write(conf / "prices.txt", "ACME 13\nFOO 2.5\nBAR -0.25\nNEW 7.125\n")
    assert json.loads(s.wait_events(3)[2].data) == {"FOO": 2.5}


def test_quotes_file_publishes_all_then_only_changed_quotes(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "prices.txt", "ACME 12.5\nFOO 3\n")
    d = start_in(daemon, conf, """
        [/q]
        source = quotes
        file = prices.txt
        interval = 0.05
        event = quote

        [/beat]
        source = time
        interval = 0.05
        format = unix
        event = beat
    """)
    # One stream for both services: the /beat events show that /q's timer ran meanwhile.
    s = d.stream("/?service=/q&service=/beat&" + ALL)
    s.wait_events(1)
    s.wait_type("beat", 4)
    write(conf / "prices.txt", "ACME 12.5\nFOO 4\n")
    s.wait_type("quote", 2)
    quotes = [json.loads(ev.data) for ev in s.events if ev.type == "quote"]
    assert quotes == [{"ACME": 12.5, "FOO": 3}, {"FOO": 4}]


# -- command -----------------------------------------------------------------------------------

def test_command_publishes_its_output_less_one_final_newline(daemon, tmp_path):
    d = daemon("""
        [/cmd]
        source = command
        command = printf 'hello\\nworld\\n\\n'
        interval = 0.2
        event = out
    """)
    ev = d.stream("/cmd?" + ALL).wait_events(1)[0]
    assert ev.type == "out"
    assert ev.data == "hello\nworld\n"


def test_command_that_fails_is_logged_and_the_next_tick_still_runs(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    script(conf / "flaky.sh", 'n=$(cat count 2>/dev/null || echo 0)\nn=$((n + 1))\n'
                              'echo $n > count\n[ $n -eq 1 ] && exit 3\necho "run $n"\n')
    d = start_in(daemon, conf, """
        [/flaky]
        source = command
        command = ./flaky.sh
        interval = 0.1
    """)
    line = d.wait_log(r"/flaky.*exit status 3")
    assert "warning" in line or "error" in line
    events = d.stream("/flaky?" + ALL).wait_events(2)
    assert [ev.data for ev in events] == ["run 2", "run 3"]
    assert d.proc.poll() is None


def test_command_running_longer_than_interval_is_killed_logged_and_never_doubled(daemon,
                                                                                 tmp_path,
                                                                                 reports):
    conf = tmp_path / "conf"
    conf.mkdir()
    script(conf / "slow.sh", f'echo $$ >> pids\necho "slow-start $$" > {reports.path}\n'
                             'exec sleep 30\n')
    d = start_in(daemon, conf, """
        [/slow]
        source = command
        command = ./slow.sh
        interval = 0.2
    """)
    pids = []
    for _ in range(3):
        pid = int(reports.line().split()[1])
        # One at a time: when a run starts, every earlier one is already gone.
        assert not any(alive(p) for p in pids), pids
        pids.append(pid)
        wait_gone(pid)
    assert pids == [int(p) for p in (conf / "pids").read_text().split()][:3]
    assert d.ctl({"cmd": "list"})["ok"]
    # Killed on every tick, logged once: the start of the episode.
    [killed] = [line for line in d.log if "killed after" in line]
    assert re.search(r" warning /slow: command failing: killed after 0\.2 s \(logged once", killed)


@pytest.mark.parametrize("source, good", [("command", "all well"), ("quotes", "ACME 1")])
def test_a_failing_command_logs_one_line_per_episode_and_one_when_it_recovers(daemon, tmp_path,
                                                                             reports, source,
                                                                             good):
    conf = tmp_path / "conf"
    conf.mkdir()
    # Runs 1-5 fail (exit 3, a word on stderr); later runs succeed.
    script(conf / "flaky.sh", 'n=$(cat count 2>/dev/null || echo 0)\nn=$((n + 1))\n'
                              f'echo $n > count\necho "run $n" > {reports.path}\n'
                              f'[ $n -le 5 ] && {{ echo "boom $n" >&2; exit 3; }}\necho "{good}"\n')
    d = start_in(daemon, conf, f"""
        [/flaky]
        source = {source}
        command = ./flaky.sh
        interval = 0.1
    """)
    s = d.stream("/flaky?" + ALL)
    assert [reports.line() for _ in range(6)] == [f"run {n}" for n in range(1, 7)]
    s.wait_events(1)
    recovered = d.wait_log(r"/flaky: command recovered after 5 failures since \S+ \(\d+ s\)$")
    # Its stderr with the service's name, once (then held back: a count comes a minute on);
    # the failure once; the recovery. (Later runs are no concern: a loaded machine may make
    # one overrun its interval.)
    lines = [line for line in d.log[:d.log.index(recovered) + 1] if "/flaky" in line]
    assert len(lines) == 3, lines
    assert lines[0].endswith(" warning /flaky: command stderr: boom 1"), lines
    assert lines[1].endswith(" warning /flaky: command failing: exit status 3 (logged once "
                             "until it recovers)"), lines


def test_quotes_lines_that_are_no_quotes_are_logged_once_a_minute_and_none_at_all_is_a_failure(
        daemon, reports):
    d = daemon(f"""
        [/some]
        source = quotes
        command = echo run > {reports.path}; echo 'ACME 1'; echo 'not a quote'
        interval = 0.05

        [/none]
        source = quotes
        command = echo 'not a quote'; echo 'nor this'
        interval = 0.05
    """)
    for _ in range(5):
        assert reports.line() == "run"
    d.wait_log(r"/none: command failing: no line of the form 'SYMBOL PRICE' \(the first: "
               r"'not a quote'\)")
    assert d.stream("/some?" + ALL).wait_events(1)[0].data == '{"ACME":1}'
    some = [line for line in d.log if "/some" in line]
    assert len(some) == 1 and some[0].endswith(
        " warning /some: ignored 1 line(s) not of the form 'SYMBOL PRICE': 'not a quote'"), some
    assert len([line for line in d.log if "/none" in line]) == 1, d.log


def test_json_command_with_non_json_output_is_one_clear_line_not_a_traceback_a_tick(daemon,
                                                                                   tmp_path,
                                                                                   reports):
    d = daemon(f"""
        [/j]
        source = command
        command = echo run > {reports.path}; echo 'not json'
        interval = 0.05
        json = true
    """)
    for _ in range(5):
        assert reports.line() == "run"
    assert d.ctl({"cmd": "list"})["ok"]
    lines = [line for line in d.log if "/j" in line or "Traceback" in line]
    assert len(lines) == 1, lines
    assert re.search(r" warning /j: command failing: publish refused: /j takes JSON data only: "
                     r".*\(logged once until it recovers\)$", lines[0]), lines


def test_a_commands_stderr_is_escaped_prefixed_with_the_service_and_rate_limited(daemon,
                                                                               reports):
    forged = "2026-01-01T00:00:00.000+00:00 error forged line"
    d = daemon(f"""
        [/noisy]
        source = command
        command = printf '{forged}\\n\\033[31mred\\a\\n' >&2; echo run > {reports.path}; echo ok
        interval = 0.05
    """)
    events = d.stream("/noisy?" + ALL).wait_events(2)       # it succeeds: stderr is no failure
    assert [ev.data for ev in events] == ["ok", "ok"]
    for _ in range(5):
        assert reports.line() == "run"
    assert d.ctl({"cmd": "list"})["ok"]
    assert not any(line.startswith(forged) or "\x1b" in line or "\a" in line for line in d.log)
    [line] = [line for line in d.log if "forged" in line]      # once, not once a tick
    assert line.endswith(" warning /noisy: command stderr: " + forged
                         + "\\x0a\\x1b[31mred\\x07"), line


def test_stderr_is_shown_as_one_escaped_line_cut_when_long():
    assert shown(b"  oops\n") == "oops"
    assert shown(b"a\nb\r\n\x1b]0;title\x07\xff") == "a\\x0ab\\x0d\\x0a\\x1b]0;title\\x07\ufffd"
    long = b"x" * (SHOWN_STDERR + 500)
    assert shown(long) == "x" * SHOWN_STDERR + f"... ({len(long)} bytes in all)"


def test_a_command_is_done_when_its_shell_exits_even_if_a_background_job_holds_its_pipe(
        daemon):
    # The background `sleep` inherits stdout: waiting for EOF waited for it (published
    # nothing, and "killed after" every tick). It goes with the run's process group.
    d = daemon("""
        [/bg]
        source = command
        command = sleep 1000 & echo "hi $!"
        interval = 0.3
    """)
    events = d.stream("/bg?" + ALL).wait_events(2)
    pids = []
    for ev in events:
        word, pid = ev.data.split()
        assert word == "hi"
        pids.append(int(pid))
    for pid in pids:
        wait_gone(pid)
    assert not any("killed after" in line or "/bg" in line for line in d.log), d.log


def test_out_of_descriptors_a_command_that_cannot_start_logs_one_line_not_two_a_tick(daemon,
                                                                                   reports):
    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    d = daemon(f"""
        [/cmd]
        source = command
        command = echo run > {reports.path}; echo hi
        interval = 0.2
    """, preexec_fn=low_nofile)
    assert reports.line() == "run"
    held = [socket.create_connection(("127.0.0.1", d.port), timeout=TIMEOUT) for _ in range(80)]
    try:
        d.wait_log(r"accept failed \(Too many open files\)")
        d.wait_log(r"/cmd: command failing: cannot start it: Too many open files")
        # Five ticks out of descriptors (well within header_timeout, which would free
        # some): nothing more about /cmd.
        assert select.select(held, [], [], 1.0)[0] == []
        assert [line for line in d.log if "/cmd" in line or "cannot run" in line] == [
            next(line for line in d.log if "command failing" in line)], d.log
    finally:
        for sock in held:
            sock.close()
    d.wait_log(r"/cmd: command recovered after \d+ failures")
    assert reports.line() == "run"


# -- file ----------------------------------------------------------------------------------------

def test_file_publishes_at_start_and_on_change_but_not_when_unchanged(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "status.txt", "all good\n")
    d = start_in(daemon, conf, """
        [/status]
        source = file
        file = status.txt
        interval = 0.05
        event = status

        [/beat]
        source = time
        interval = 0.05
        format = unix
        event = beat
    """)
    s = d.stream("/?service=/status&service=/beat&" + ALL)
    s.wait_events(1)
    s.wait_type("beat", 4)
    write(conf / "status.txt", "degraded\nsince noon\n")
    s.wait_type("status", 2)
    assert [ev.data for ev in s.events if ev.type == "status"] == [
        "all good", "degraded\nsince noon"]


def held_id(d, path):
    """The last held event id of `path`, once it has one (polled with a bound)."""
    end = time.monotonic() + TIMEOUT
    while True:
        found = {s["path"]: s["last_id"] for s in d.ctl({"cmd": "list"})["services"]}
        if found.get(path):
            return found[path]
        assert time.monotonic() < end, f"{path} published nothing"
        time.sleep(0.02)


def test_a_new_subscriber_to_a_file_gets_its_content_at_once_and_a_resuming_one_no_copy(
        daemon, tmp_path):
    """The content is the service's state: a new subscriber gets the last held event at once
    (as a replay would give it), then the priming id, not a wait for the next change."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "status.txt", "all good\n")
    d = start_in(daemon, conf, "[/status]\nsource = file\nfile = status.txt\ninterval = 60\n")
    last = held_id(d, "/status")
    s = d.stream("/status")
    first = s.wait_events(1)[0]
    assert (first.id, first.data) == (last, "all good")
    s.wait_bytes(b"data: all good\n\nid: ")     # then the bare priming id
    prime = re.search(rb"data: all good\n\nid: (\d+)-(\d+)\n\n", bytes(s.body))
    assert prime and (int(prime[1]), int(prime[2])) > tuple(map(int, last.split("-")))
    resumed = d.stream(f"/status?lastEventId={last}")
    resumed.wait_bytes(b"\n\nid: ")
    assert b"all good" not in resumed.body


def test_a_new_subscriber_to_quotes_gets_every_quote_known_at_once(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "prices.txt", "ACME 12.5\nFOO 3\n")
    d = start_in(daemon, conf, "[/q]\nsource = quotes\nfile = prices.txt\ninterval = 0.05\n"
                               "event = quote\n")
    first = held_id(d, "/q")
    write(conf / "prices.txt", "ACME 12.5\nFOO 4\n")
    end = time.monotonic() + TIMEOUT
    while held_id(d, "/q") == first:
        assert time.monotonic() < end, "the change was never published"
        time.sleep(0.02)
    s = d.stream("/q")
    snapshot = s.wait_events(1)[0]
    assert (snapshot.type, json.loads(snapshot.data)) == ("quote", {"ACME": 12.5, "FOO": 4})
    resumed = d.stream(f"/q?lastEventId={first}")       # resumes: the change, no snapshot
    change = resumed.wait_events(1)[0]
    assert json.loads(change.data) == {"FOO": 4}


def test_missing_file_is_logged_and_published_once_it_appears(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    d = start_in(daemon, conf, """
        [/late]
        source = file
        file = later.txt
        interval = 0.1
    """)
    # on_start looks at the file, so the line comes before "ready".
    [line] = [line for line in d.log if re.search(r"/late.*later\.txt", line)]
    assert re.search(r"(warning|error) .*No such file", line), line
    s = d.stream("/late")
    write(conf / "later.txt", "here now\n")
    assert s.wait_events(1)[0].data == "here now"


def test_relative_file_and_command_paths_resolve_against_the_config_directory(daemon,
                                                                             tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "lines.txt").write_text("from the config dir\n")
    (conf / "data.txt").write_text("read by the command\n")
    script(conf / "show.sh", "cat data.txt\n")
    d = start_in(daemon, conf, """
        [/m]
        source = messages
        file = lines.txt
        interval = 0.2

        [/c]
        source = command
        command = ./show.sh
        interval = 0.2

        [/f]
        source = file
        file = data.txt
        interval = 0.2
    """)
    assert not (d.dir / "lines.txt").exists()       # the daemon runs elsewhere
    assert d.stream("/m?" + ALL).wait_events(1)[0].data == "from the config dir"
    assert d.stream("/c?" + ALL).wait_events(1)[0].data == "read by the command"
    assert d.stream("/f?" + ALL).wait_events(1)[0].data == "read by the command"


# -- what a source reads: regular files only, never blocking, within the limits ----------------

def test_a_file_replaced_by_a_fifo_is_refused_and_the_loop_never_blocks(daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "status.txt", "first\n")
    d = start_in(daemon, conf, "[/status]\nsource = file\nfile = status.txt\ninterval = 0.05\n")
    s = d.stream("/status?" + ALL)
    assert s.wait_events(1)[0].data == "first"
    os.remove(conf / "status.txt")
    os.mkfifo(conf / "status.txt")      # no writer: a blocking open() would never return
    d.wait_log(r"warning /status: .*status\.txt is not a regular file \(a FIFO\); not read")
    started = time.monotonic()
    with d.control_conn() as c:
        c.sock.settimeout(2.0)
        assert c.request({"cmd": "stats"})["ok"]
    assert time.monotonic() - started < 2.0
    write(conf / "status.txt", "a file again\n")
    assert s.wait_events(2)[1].data == "a file again"
    assert d.stop() == 0


def test_a_messages_line_over_the_limit_is_skipped_with_a_warning_naming_file_and_line(
        daemon, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "m.txt").write_bytes(b"one\n" + b"x" * (MAX_SOURCE_EVENT + 1) + b"\r\ntwo\n")
    d = start_in(daemon, conf, "[/m]\nsource = messages\nfile = m.txt\ninterval = 0.05\n")
    # on_start reads the file, so the line comes before "ready".
    [line] = [line for line in d.log if "skipped" in line]
    assert re.search(rf"warning /m: .*/m\.txt:2: line of {MAX_SOURCE_EVENT + 1} bytes is over "
                     rf"{MAX_SOURCE_EVENT} bytes; skipped$", line), line
    events = d.stream("/m?" + ALL).wait_events(4)
    assert [ev.data for ev in events] == ["one", "two", "one", "two"]


def test_a_messages_file_over_the_limit_is_a_config_error(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    with open(conf / "big.txt", "wb") as f:
        f.truncate(MAX_MESSAGES_FILE + 1)       # sparse: no need to write 16 MiB
    ini = write_ini(conf, "[/m]\nsource = messages\nfile = big.txt\n")
    done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == (f"{ini}:7: file: {conf}/big.txt is over {MAX_MESSAGES_FILE} bytes "
                           f"({MAX_MESSAGES_FILE + 1}); not read\n")


def test_every_source_limit_is_one_figure_from_one_table():
    from ssed import children, sources
    assert children.MAX_CHILD_OUTPUT == MAX_SOURCE_EVENT == 1 << 20
    assert not hasattr(sources, "MAX_OUTPUT")
