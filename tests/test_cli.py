"""The command line (SPEC section 2): `--check`, exit codes, signals, where the config comes
from; and `ssectl` (section 6) against the real daemon. Everything runs as a subprocess and
every wait is bounded (subprocess timeouts, `wait_log`, stream reads).
"""
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

from conftest import TIMEOUT, Daemon, env, reap
from confdir import run_ssed, write_ini

CHAT = textwrap.dedent("""
    [/chat]
    source = none
""")


def ssectl(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "ssed.ctl", *args], input=stdin, env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


# -- --check -------------------------------------------------------------------------------------

def test_check_prints_ok_and_binds_nothing_while_another_daemon_holds_the_port(daemon,
                                                                                 tmp_path):
    d = daemon(CHAT)
    ini = write_ini(tmp_path / "conf", CHAT, )
    ini.write_text(ini.read_text().replace("127.0.0.1:0", f"127.0.0.1:{d.port}")
                   .replace("ssed.sock", "other.sock"))
    done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done
    assert not (tmp_path / "conf" / "other.sock").exists()
    # Checking the running daemon's own config leaves its port and control socket alone.
    done = run_ssed("-c", str(d.ini), "--check", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done
    s = d.stream("/chat")
    assert s.status == 200 and d.publish("/chat", "still serving")["delivered"] == 1


def test_check_prints_each_error_as_file_line_message_and_exits_1(tmp_path):
    ini = write_ini(tmp_path, """
        [/a]
        source = bogus

        [/b]
        interval = -1
        colour = blue

        [/healthz]
    """, top="retry = soon")
    lines = ini.read_text().split("\n")
    expected = sorted([lines.index("retry = soon") + 1, lines.index("source = bogus") + 1,
                       lines.index("interval = -1") + 1, lines.index("colour = blue") + 1,
                       lines.index("[/healthz]") + 1])
    done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
    assert done.returncode == 1
    out = done.stdout.splitlines()
    pattern = re.compile(re.escape(str(ini)) + r":(\d+): \S.*")
    assert all(pattern.fullmatch(line) for line in out), out
    assert sorted(int(pattern.fullmatch(line)[1]) for line in out) == expected
    assert "Traceback" not in done.stdout + done.stderr


def test_check_of_a_missing_file_exits_1_with_one_line(tmp_path):
    done = run_ssed("-c", str(tmp_path / "nope.ini"), "--check", cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stdout.splitlines()
    assert "nope.ini" in line


def test_check_finds_every_error_in_one_pass_missing_files_and_imports_included(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "quotes.d").mkdir()
    os.mkfifo(conf / "fifo")            # a plain open() of it would hang --check for ever
    ini = write_ini(conf, """
        [/news]
        source = messages
        file = nonexistent.txt

        [/quotes]
        source = quotes
        file = quotes.d

        [/pipe]
        source = file
        file = fifo

        [/late]
        source = file
        file = written-later.txt

        [/plugin]
        class = nosuchplugin:Chat

        [/clock]
        source = time
        format = %H:%Q
        command = date
    """)
    lines = ini.read_text().split("\n")
    at = {text: lines.index(text) + 1 for text in lines}
    done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
    assert done.returncode == 1, done
    assert done.stdout.splitlines() == [
        f"{ini}:{at['file = nonexistent.txt']}: file: cannot read {conf}/nonexistent.txt: "
        "No such file or directory",
        f"{ini}:{at['file = quotes.d']}: file: {conf}/quotes.d is not a regular file "
        "(a directory); not read",
        f"{ini}:{at['file = fifo']}: file: {conf}/fifo is not a regular file (a FIFO); not read",
        f"{ini}:{at['class = nosuchplugin:Chat']}: class nosuchplugin:Chat: cannot import "
        "nosuchplugin: ModuleNotFoundError(\"No module named 'nosuchplugin'\")",
        f"{ini}:{at['format = %H:%Q']}: format: unknown strftime directive '%Q' in '%H:%Q' "
        "(see `man strftime`)",
        f"{ini}:{at['command = date']}: key 'command' is not used by source 'time'",
    ]
    assert "Traceback" not in done.stdout + done.stderr


def test_check_of_a_config_without_services_says_why(tmp_path):
    for i, text in enumerate(["", "[ssed]\nlisten = 127.0.0.1:0\n"]):
        ini = tmp_path / f"{i}.ini"
        ini.write_text(text)
        done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
        assert done.returncode == 1, done
        assert done.stdout == (f"{ini}:1: no service sections (such as [/time]): nothing to "
                               "serve; is the file empty or only half written?\n")
        done = run_ssed("-c", str(ini), cwd=tmp_path)
        assert done.returncode == 1 and "no service sections" in done.stderr, done


# -- exit codes ----------------------------------------------------------------------------------

def test_port_in_use_exits_1_with_one_clear_line_and_no_traceback(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ini = write_ini(tmp_path, CHAT)
        ini.write_text(ini.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        done = run_ssed("-c", str(ini), cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert str(port) in line and "Traceback" not in done.stderr
    assert not (tmp_path / "ssed.sock").exists()


def test_bad_usage_exits_2(tmp_path):
    for args in (["--bogus"], ["--log-level", "loud"], ["-c"], ["stray"]):
        done = run_ssed(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done)
        assert "usage" in done.stderr.lower() and "Traceback" not in done.stderr


def test_a_bad_config_at_startup_exits_1_without_traceback(tmp_path):
    ini = write_ini(tmp_path, "[/a]\nsource = bogus\n")
    done = run_ssed("-c", str(ini), cwd=tmp_path)
    assert done.returncode == 1
    assert f"{ini}:6: " in done.stderr and "Traceback" not in done.stderr


# -- signals -------------------------------------------------------------------------------------

def test_sigterm_tells_streams_when_to_retry_and_exits_0(daemon):
    d = daemon(CHAT, top="retry = 100")
    s = d.stream("/chat")
    s.wait_bytes(b"\n\n")
    assert d.stop(signal.SIGTERM) == 0
    s.wait_closed()
    retries = [int(m) for m in re.findall(rb"^retry: (\d+)$", bytes(s.body), re.M)]
    assert retries[0] == 100 and len(retries) == 2
    assert 100 <= retries[1] <= 1000
    assert not os.path.exists(d.control)
    assert "Traceback" not in "\n".join(d.log)


def test_sigint_also_exits_0(daemon):
    d = daemon(CHAT)
    assert d.stop(signal.SIGINT) == 0


def test_sighup_reloads_the_config(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat")
    d.ini.write_text(d.ini.read_text() + "\n[/new]\nsource = none\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded: .*added /new")
    new = d.stream("/new")
    assert new.status == 200
    assert d.publish("/new", "hi")["delivered"] == 1 and new.wait_events(1)[0].data == "hi"
    assert d.publish("/chat", "kept")["delivered"] == 1 and s.wait_events(1)[0].data == "kept"


# -- tokens in the log -----------------------------------------------------------------------------

def line_of(ini, text):
    return ini.read_text().split("\n").index(text) + 1


def test_a_token_is_redacted_where_it_is_logged_not_wherever_its_text_occurs(daemon):
    # A token that is also an everyday word of the log: once it was replaced everywhere
    # ("SIGHUP: ***"), which garbled the line and told the reader the token.
    d = daemon("[/chat]\npublish_token = reloading\n"
               "[/priv]\ntoken = a-long-random-subscriber-token\n")
    warning = f"{d.ini}:{line_of(d.ini, 'publish_token = reloading')}: /chat: publish_token " \
              "is only 9 bytes long"
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded: no changes")
    assert any(line.endswith(" info SIGHUP: reloading") for line in d.log), d.log
    assert not any("***" in line for line in d.log), d.log
    d.wait_log(re.escape(warning))                   # warned again on reload
    # The warning names the service, the key and FILE:LINE, never the value; the long token
    # gets none.
    warnings = [line for line in d.log if " warning " in line]
    assert len(warnings) == 2 and not any("reloading" in w for w in warnings), warnings
    assert not any("/priv" in w for w in warnings)
    assert d.stop() == 0


def test_config_errors_never_quote_a_token_value(daemon, tmp_path):
    bad = "[/private]\ntoken = two words\n[/pub]\npublish_token HIDDENVALUE\n"
    ini = write_ini(tmp_path / "conf", bad)
    done = run_ssed("-c", str(ini), "--check", cwd=tmp_path)
    assert done.returncode == 1, done
    assert f"{ini}:{line_of(ini, 'token = two words')}: token: " in done.stdout, done.stdout
    assert f"{ini}:{line_of(ini, 'publish_token HIDDENVALUE')}: " in done.stdout, done.stdout
    assert "words" not in done.stdout and "HIDDENVALUE" not in done.stdout, done.stdout
    # The same errors when a reload is refused: in the log and in ssectl's answer.
    d = daemon(CHAT)
    d.ini.write_text(d.ini.read_text() + bad)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reload refused")
    answer = d.ctl({"cmd": "reload"})
    assert not answer["ok"] and len(answer["errors"]) == 2, answer
    for text in ["\n".join(d.log), json.dumps(answer)]:
        assert "words" not in text and "HIDDENVALUE" not in text, text
    assert d.stop() == 0


# -- where the config comes from -------------------------------------------------------------------

class EnvDaemon(Daemon):
    """The daemon started with no -c (so that $SSED_CONFIG or the default is used)."""

    def __init__(self, conf_dir, cwd, extra_env):
        self.dir = cwd
        self.ini = conf_dir / "ssed.ini"
        self.control = str(conf_dir / "ssed.sock")
        self.lines = queue.Queue()
        self.log = []
        e = env()
        e.update(extra_env)
        self.proc = subprocess.Popen([sys.executable, "-m", "ssed"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                                     cwd=str(cwd))
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = None
        self.wait_log("ready", on_line=self._port)


def test_ssed_config_names_the_config_when_there_is_no_c(tmp_path):
    conf = tmp_path / "conf"
    write_ini(conf, "[/from-env]\n")
    (tmp_path / "run").mkdir()
    d = EnvDaemon(conf, tmp_path / "run", {"SSED_CONFIG": str(conf / "ssed.ini")})
    try:
        s = d.stream("/from-env")
        assert s.status == 200
        assert d.publish("/from-env", "hi")["delivered"] == 1
        assert s.wait_events(1)[0].data == "hi"
        assert d.stop() == 0
    finally:
        reap(d.proc)


def test_c_wins_over_ssed_config_and_check_reads_ssed_config(tmp_path):
    good = write_ini(tmp_path / "good", CHAT)
    bad = write_ini(tmp_path / "bad", "[/x]\nsource = bogus\n")
    done = run_ssed("--check", cwd=tmp_path, extra_env={"SSED_CONFIG": str(bad)})
    assert done.returncode == 1 and done.stdout.startswith(f"{bad}:6: ")
    done = run_ssed("-c", str(good), "--check", cwd=tmp_path, extra_env={"SSED_CONFIG": str(bad)})
    assert (done.returncode, done.stdout) == (0, "ok\n")


def test_without_c_or_ssed_config_the_embedded_default_checks_ok(tmp_path):
    # Only --check: the default listens on 127.0.0.1:8080, which a test must not take.
    done = run_ssed("--check", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done
    assert list(tmp_path.iterdir()) == []


# -- ssectl against the daemon -------------------------------------------------------------------

def test_ssectl_publish_reaches_a_stream(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat")
    done = ssectl("-s", d.control, "publish", "/chat", "hello")
    assert done.returncode == 0, done
    m = re.fullmatch(r"id=(\d+-\d+) delivered=1\n", done.stdout)
    assert m, done.stdout
    done = ssectl("-s", d.control, "publish", "/chat", "-", "-e", "note", stdin="two\nlines\n")
    assert done.returncode == 0, done
    first, second = s.wait_events(2)
    assert (first.id, first.type, first.data) == (m[1], "message", "hello")
    assert (second.type, second.data) == ("note", "two\nlines")


def test_ssectl_publish_to_and_kick_of_a_client_with_no_stream_say_so(daemon):
    d = daemon(CHAT)
    s = d.stream("/chat?client=here")
    done = ssectl("-s", d.control, "publish", "/chat", "boo", "--client", "ghost")
    assert done.returncode == 0, done
    assert re.fullmatch(r"id=\d+-\d+ delivered=0 \(no such client now\)\n", done.stdout)
    done = ssectl("-s", d.control, "kick", "/chat", "ghost")
    assert (done.returncode, done.stdout) == (0, "closed=0 (no such client now)\n")
    done = ssectl("-s", d.control, "publish", "/chat", "hi", "--client", "here")
    assert re.fullmatch(r"id=\d+-\d+ delivered=1\n", done.stdout), done
    assert [e.data for e in s.wait_events(1)] == ["hi"]


def test_ssectl_list_and_stats_print_tables_for_people(daemon):
    d = daemon(CHAT + textwrap.dedent("""
        [/idle]
        source = none
    """))
    s = d.stream("/chat")
    published = d.publish("/chat", "x")
    s.wait_events(1)
    done = ssectl("-s", d.control, "list")
    assert done.returncode == 0, done
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["PATH", "SOURCE", "CLIENTS", "LAST_ID"]
    assert [row.split() for row in rows] == [["/chat", "none", "1", published["id"]],
                                             ["/idle", "none", "0", "-"]]
    done = ssectl("-s", d.control, "stats")
    assert done.returncode == 0, done
    stats = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert stats["clients"] == "1" and stats["events_published"] == "1"
    assert float(stats["uptime"]) >= 0 and int(stats["rss_bytes"]) > 0
    done = ssectl("-s", d.control, "--json", "stats")
    assert json.loads(done.stdout)["clients"] == 1


def test_ssectl_exits_1_when_the_daemon_says_no(daemon):
    d = daemon(CHAT)
    for args in (["publish", "/nope", "x"], ["kick", "/nope", "someone"], ["ban", "nonsense"],
                 ["admin", "/chat", "x"]):
        done = ssectl("-s", d.control, *args)
        assert done.returncode == 1, (args, done)
        [line] = done.stderr.splitlines()
        assert line.startswith("ssectl: ") and "Traceback" not in done.stderr
    assert "/nope" in ssectl("-s", d.control, "publish", "/nope", "x").stderr


def test_ssectl_listen_prints_count_events_and_exits_0(daemon):
    d = daemon("""
        [/tick]
        source = time
        interval = 0.05
        format = unix
        event = tick
    """)
    done = ssectl("listen", f"http://127.0.0.1:{d.port}/tick", "--count", "3")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    assert all(re.fullmatch(r"id=\d+-\d+ event=tick data=\d+", line) for line in lines), lines


def test_ssectl_listen_resumes_after_a_kick_with_last_event_id_without_loss(daemon):
    d = daemon(CHAT, top="retry = 300", args=["--log-level", "debug"])
    listen = subprocess.Popen(
        [sys.executable, "-m", "ssed.ctl", "listen",
         f"http://127.0.0.1:{d.port}/chat?client=L", "--count", "6"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        d.wait_log(r"stream L from")
        sent = [d.publish("/chat", f"e{i}")["id"] for i in (1, 2, 3)]
        assert d.ctl({"cmd": "kick", "service": "/chat", "client": "L"})["closed"] == 1
        sent += [d.publish("/chat", f"e{i}")["id"] for i in (4, 5)]
        d.wait_log(r"stream L from")
        [again] = d.ctl({"cmd": "clients", "service": "/chat"})["clients"]
        # e4 and e5 were published before the new stream opened: only replay can bring them.
        assert again["since"] * 1000 > int(sent[-1].split("-")[0])
        sent.append(d.publish("/chat", "e6")["id"])
        out, err = listen.communicate(timeout=TIMEOUT)
    finally:
        reap(listen)
    assert listen.returncode == 0, err
    assert out.splitlines() == [f"id={i} event=message data=e{n}"
                                for n, i in enumerate(sent, 1)]
    assert "reconnecting" in err


def test_ssectl_listen_count_leaves_out_session_events_so_a_replay_is_not_cut_off(daemon):
    """--count N counts the events a user publishes: the `session` greeting each new stream
    gets is printed but not counted, so the event replayed after a reconnect still comes."""
    d = daemon(CHAT + "session_event = true\n", top="retry = 300",
               args=["--log-level", "debug"])
    listen = subprocess.Popen(
        [sys.executable, "-m", "ssed.ctl", "listen",
         f"http://127.0.0.1:{d.port}/chat?client=L", "--count", "3"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        d.wait_log(r"stream L from")
        sent = [d.publish("/chat", "e1")["id"]]
        assert d.ctl({"cmd": "kick", "service": "/chat", "client": "L"})["closed"] == 1
        sent.append(d.publish("/chat", "e2")["id"])     # reaches L only by replay
        d.wait_log(r"stream L from")
        sent.append(d.publish("/chat", "e3")["id"])
        out, err = listen.communicate(timeout=TIMEOUT)
    finally:
        reap(listen)
    assert listen.returncode == 0, err
    session = "id={} event=session data=L"
    assert out.splitlines() == [session.format("-"), f"id={sent[0]} event=message data=e1",
                                session.format(sent[0]), f"id={sent[1]} event=message data=e2",
                                f"id={sent[2]} event=message data=e3"]


def test_ssectl_dash_c_reaches_the_daemon_when_its_config_is_broken(daemon):
    """The daemon judges the config: `ssectl -c` with a broken file still asks it, and a
    refused reload shows the daemon's FILE:LINE errors."""
    d = daemon(CHAT)
    d.ini.write_text(d.ini.read_text() + "bogus = 1\n[/x]\nsource = nope\n")
    done = ssectl("-c", str(d.ini), "reload")
    assert done.returncode == 1, done
    assert done.stderr.startswith("ssectl: config not valid, nothing changed: ")
    assert f"{d.ini}:" in done.stderr and "bogus" in done.stderr and "nope" in done.stderr
    done = ssectl("-c", str(d.ini), "list")
    assert done.returncode == 0 and "/chat" in done.stdout, done


def test_ssed_and_ssectl_print_the_one_version(tmp_path):
    """--version of both tools is ssed.__version__, and pyproject takes its version from
    there too (one place to bump)."""
    import tomllib
    import ssed
    project = tomllib.load(open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"),
                                "rb"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ssed.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", ssed.__version__)
    for module, name in (("ssed", "ssed"), ("ssed.ctl", "ssectl")):
        done = subprocess.run([sys.executable, "-m", module, "--version"], env=env(),
                              capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (
            0, f"{name} {ssed.__version__}\n", ""), done


def test_ssectl_help_lists_the_daemons_commands_and_quoting(daemon):
    d = daemon(CHAT)
    done = ssectl("-s", d.control, "help")
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert "ssectl --help" in lines[0]
    listed = [line.split()[0] for line in lines[1:] if line.startswith("  ")]
    assert listed[:3] == ["publish", "list", "clients"] and "help" in listed
    assert "  publish SERVICE [-e EVENT] [--client ID] DATA..." in lines
    assert any(line.startswith("Quoting: ") for line in lines)
    assert max(map(len, lines)) <= 100
    done = ssectl("-s", d.control, "help", "--json")
    assert json.loads(done.stdout)["commands"][0].startswith("publish ")
