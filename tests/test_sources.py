"""The built-in sources (SPEC section 3) against the daemon subprocess: time, messages, quotes
(command and file), command and file. Every wait is bounded: stream reads with timeouts and
`wait_log`. Scripts that a source runs report each run on stderr (which the daemon's children
share with it), so `wait_log` can count ticks that publish nothing.
"""
import datetime
import json
import os
import re
import time

from confdir import run_ssed, start_in, write_ini
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
                                                                                   tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "prices.txt", "ACME 12.5\nFOO 3\nBAR -0.25\n")
    script(conf / "quotes.sh", 'echo "quotes-run" >&2\ncat prices.txt\n')
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
        d.wait_log("quotes-run")
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
                                                                                 tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    script(conf / "slow.sh", 'echo $$ >> pids\necho "slow-start $$" >&2\nexec sleep 30\n')
    d = start_in(daemon, conf, """
        [/slow]
        source = command
        command = ./slow.sh
        interval = 0.2
    """)
    pids = []
    for _ in range(3):
        pid = int(d.wait_log(r"^slow-start \d+$").split()[1])
        # One at a time: when a run starts, every earlier one is already gone.
        assert not any(alive(p) for p in pids), pids
        pids.append(pid)
        killed = d.wait_log(r"/slow.*killed after 0\.2 s")
        assert "warning" in killed or "error" in killed
        wait_gone(pid)
    assert pids == [int(p) for p in (conf / "pids").read_text().split()][:3]
    assert d.ctl({"cmd": "list"})["ok"]


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
    from ssed import conns, sources
    assert conns.MAX_CHILD_OUTPUT == MAX_SOURCE_EVENT == 1 << 20
    assert not hasattr(sources, "MAX_OUTPUT")
