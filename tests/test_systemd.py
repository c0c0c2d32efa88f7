"""systemd (SPEC section 7): the units pass `systemd-analyze verify` and carry the options the
issue asks for; the daemon speaks the notify protocol (READY, RELOADING + MONOTONIC_USEC,
WATCHDOG only while the loop turns, STOPPING, STATUS) to a datagram socket of the test's own;
socket activation through `systemd-socket-activate`; log lines under journald.

Every wait is bounded: datagram receives with timeouts, `wait_log`, stream reads. The systemd
tools are required under CI=true (`.ci/run` installs them) and skipped with a reason elsewhere.
"""
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from conftest import ROOT, TIMEOUT, ControlClient, Daemon, env, reap
from ports import free_port

CHAT = textwrap.dedent("""
    [/chat]
    source = none
""")


def tool(name):
    """The path of a systemd tool: a loud failure under CI (which installs it), else a skip."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing under CI: .ci/run must install Debian's systemd "
                        "package", pytrace=False)
        pytest.skip(f"{name} is not installed (Debian package: systemd)")
    return path



# -- the units -------------------------------------------------------------------------------------

def read_unit(path):
    """{section: {key: [values]}} of a unit file (keys may repeat)."""
    sections, current = {}, None
    for line in open(path).read().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`make install` under a temporary root whose PREFIX is also a real path, so that the
    installed unit's ExecStart names a file that exists: the unit is verified as installed."""
    base = tmp_path_factory.mktemp("inst")
    prefix = base / "usr"
    done = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={base / 'root'}",
                           f"PREFIX={prefix}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    os.symlink(f"{base / 'root'}{prefix}", prefix)
    return prefix


def test_installed_units_pass_systemd_analyze_verify(installed):
    analyze = tool("systemd-analyze")
    units = installed / "lib" / "systemd" / "system"
    service, sock = units / "ssed.service", units / "ssed.socket"
    exec_start = read_unit(service)["Service"]["ExecStart"][0]
    assert exec_start == f"{installed}/bin/ssed -c /etc/ssed/ssed.ini"
    assert os.access(exec_start.split()[0], os.X_OK)
    # Documentation= names the README that make install put beside the program.
    [doc] = read_unit(service)["Unit"]["Documentation"]
    assert doc == f"file://{installed}/share/doc/ssed/README.md"
    assert open(doc.removeprefix("file://")).read() == open(os.path.join(ROOT, "README.md")).read()
    done = subprocess.run([analyze, "verify", str(service), str(sock)], capture_output=True,
                          text=True, timeout=60)
    # Unknown keys or bad values are only warnings to verify: demand silence, not just rc 0.
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done


def test_installed_template_unit_passes_systemd_analyze_verify(installed):
    """verify takes a template as it is (it checks an instance of it, `ssed@i`): a key it
    does not know or an ExecStart that is not there makes it speak."""
    analyze = tool("systemd-analyze")
    template = installed / "lib" / "systemd" / "system" / "ssed@.service"
    unit = read_unit(template)
    assert unit["Service"]["ExecStart"] == [f"{installed}/bin/ssed -c /etc/ssed/cluster-%i.ini"]
    assert unit["Unit"]["Documentation"] == [f"file://{installed}/share/doc/ssed/README.md"]
    done = subprocess.run([analyze, "verify", str(template)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done


def test_template_unit_mirrors_the_service_unit_with_a_directory_per_instance():
    """Each node of ssed@.service runs its own cluster-%i.ini with its own /run directory
    (its control socket) and state directory; the rest, hardening included, is ssed.service's
    own. The directories are not shared: systemd removes a RuntimeDirectory when its unit
    stops, which would take the other instances' sockets with it."""
    plain = read_unit(os.path.join(ROOT, "systemd", "ssed.service"))
    template = read_unit(os.path.join(ROOT, "systemd", "ssed@.service"))
    own = {"ExecStart": ["@BINDIR@/ssed -c /etc/ssed/cluster-%i.ini"],
           "RuntimeDirectory": ["ssed-cluster-%i"], "StateDirectory": ["ssed-cluster-%i"]}
    assert template["Service"] == plain["Service"] | own
    assert template["Install"] == plain["Install"]
    assert "%i" in template["Unit"]["Description"][0]
    assert template["Unit"]["Documentation"] == plain["Unit"]["Documentation"]
    assert template["Unit"]["After"] == ["network.target redis-server.service"]


def test_service_unit_has_notify_reload_watchdog_directories_and_hardening():
    unit = read_unit(os.path.join(ROOT, "systemd", "ssed.service"))
    svc = {k: v[-1] for k, v in unit["Service"].items()}
    assert svc["Type"] == "notify"
    assert svc["ExecStart"].endswith("/ssed -c /etc/ssed/ssed.ini")
    assert re.fullmatch(r"/(usr/)?bin/kill (-HUP|-s HUP) \$MAINPID", svc["ExecReload"])
    assert float(svc["WatchdogSec"].rstrip("s")) > 0
    assert svc["RuntimeDirectory"] == "ssed"        # /run/ssed, for control.sock
    assert svc["StateDirectory"] == "ssed"          # /var/lib/ssed, for the journals
    assert svc["DynamicUser"] == "yes"
    assert svc["ProtectSystem"] == "strict"
    assert svc["NoNewPrivileges"] == "yes"
    assert svc["PrivateTmp"] == "yes"
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert int(svc["LimitNOFILE"]) >= 65536
    # SPEC 13: the upgraded process's MAINPID= is heard; restart keeps streams in the store
    assert svc["NotifyAccess"] == "all"
    assert int(svc["FileDescriptorStoreMax"]) >= 10000
    assert svc["RuntimeDirectoryPreserve"] == "restart"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_socket_unit_listens_on_the_default_address():
    unit = read_unit(os.path.join(ROOT, "systemd", "ssed.socket"))
    assert unit["Socket"]["ListenStream"] == ["127.0.0.1:8080"]
    # As the daemon's own listeners: Nagle stays on (no TCP_NODELAY; README, Performance).
    assert unit["Socket"].get("NoDelay", ["false"])[-1] in ("false", "no")
    assert unit["Install"]["WantedBy"] == ["sockets.target"]


def test_system_config_puts_the_control_socket_in_run_and_the_journals_in_var_lib():
    path = os.path.join(ROOT, "conf", "ssed-system.ini")
    keys = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", open(path).read(), re.M))
    assert keys["control"] == "/run/ssed/control.sock"
    assert keys["state_dir"] == "/var/lib/ssed"
    done = subprocess.run([sys.executable, "-m", "ssed", "--check", "-c", path], env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done


# -- the notify protocol ---------------------------------------------------------------------------

class Notify:
    """A datagram socket standing in for systemd's; `name` is what NOTIFY_SOCKET says."""

    def __init__(self, abstract=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.name = f"@ssed-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + self.name[1:])
        else:
            self.dir = tempfile.mkdtemp(prefix="ssed-n")      # sun_path holds 108 bytes
            self.name = os.path.join(self.dir, "notify")
            self.sock.bind(self.name)
        self.seen = []

    def close(self):
        self.sock.close()
        if not self.name.startswith("@"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def recv(self, timeout):
        """The next datagram as {field: value}, or None if none came within `timeout`."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        fields = dict(line.partition("=")[::2] for line in data.decode().split("\n"))
        self.seen.append((time.monotonic(), fields))
        return fields

    def wait(self, field, timeout=TIMEOUT):
        """The first datagram with `field`; the ones before it are kept in `seen`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            got = self.recv(left) if left > 0 else None
            if got is None:
                raise AssertionError(f"no {field} within {timeout} s; got "
                                     f"{[f for _, f in self.seen]}")
            if field in got:
                return got

    def drain(self):
        while self.recv(0.001) is not None:
            pass


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


def notified(daemon, notify, body=CHAT, watchdog_usec=None, **kw):
    extra = {"NOTIFY_SOCKET": notify.name}
    if watchdog_usec:
        extra["WATCHDOG_USEC"] = str(watchdog_usec)
    return daemon(body, env=extra, **kw)


def test_ready_with_status_comes_once_it_listens(daemon, notify):
    d = notified(daemon, notify)
    ready = notify.wait("READY")
    assert ready["READY"] == "1"
    assert re.fullmatch(r"0 clients on 1 services, 0 events published", ready["STATUS"]), ready
    # Ready means serving: the port answers at once.
    assert d.stream("/chat").status == 200
    # Without WATCHDOG_USEC there are no pings (only STATUS updates).
    assert all("WATCHDOG" not in f for _, f in notify.seen)


def test_ready_also_reaches_a_notify_socket_named_by_path(daemon):
    n = Notify(abstract=False)
    try:
        notified(daemon, n)
        assert n.wait("READY")["READY"] == "1"
    finally:
        n.close()


@pytest.mark.parametrize("how", ["SIGHUP", "reload command"])
def test_reload_is_wrapped_in_reloading_with_monotonic_usec_then_ready(daemon, notify, how):
    d = notified(daemon, notify)
    notify.wait("READY")
    streams = [d.stream("/chat") for _ in range(2)]
    d.publish("/chat", "one")
    [s.wait_events(1) for s in streams]
    d.ini.write_text(d.ini.read_text() + "\n[/new]\n")
    before = time.monotonic_ns() // 1000
    if how == "SIGHUP":
        d.proc.send_signal(signal.SIGHUP)
    else:
        assert d.ctl({"cmd": "reload"})["changes"] == ["added /new"]
    reloading = notify.wait("RELOADING")
    after = time.monotonic_ns() // 1000
    assert reloading["RELOADING"] == "1"
    # CLOCK_MONOTONIC is one clock for the whole machine: the daemon's stamp lies between ours.
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    ready = notify.wait("READY")
    assert ready["STATUS"] == "2 clients on 2 services, 1 events published"
    d.wait_log(r"reloaded: added /new")


def test_a_refused_reload_still_ends_with_ready(daemon, notify):
    d = notified(daemon, notify)
    notify.wait("READY")
    d.ini.write_text(d.ini.read_text() + "\n[/new]\nsource = bogus\n")
    assert d.ctl({"cmd": "reload"})["ok"] is False
    notify.wait("RELOADING")
    # systemd holds the unit in "reloading" until READY=1: it must come even after a refusal.
    assert notify.wait("READY")["READY"] == "1"


def test_watchdog_pings_at_half_the_interval_while_the_loop_turns(daemon, notify):
    notified(daemon, notify, watchdog_usec=400_000)
    notify.wait("READY")
    start = time.monotonic()
    pings = []
    while time.monotonic() - start < 1.2:
        got = notify.recv(1.0)
        assert got is not None, "no datagram for 1 s with a 0.2 s watchdog period"
        if "WATCHDOG" in got:
            assert got["WATCHDOG"] == "1"
            pings.append(notify.seen[-1][0])
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    # Every 0.2 s: about 6 in 1.2 s; a gap near the full 0.4 s would let systemd kill us.
    assert 4 <= len(pings) <= 8, gaps
    assert all(0.1 < gap < 0.35 for gap in gaps), gaps


def test_watchdog_stops_while_the_daemon_is_stuck_and_resumes_after(daemon, notify):
    d = notified(daemon, notify, watchdog_usec=400_000)
    notify.wait("READY")
    notify.wait("WATCHDOG")
    d.proc.send_signal(signal.SIGSTOP)
    try:
        _, status = os.waitpid(d.proc.pid, os.WUNTRACED)     # returns once it is stopped
        assert os.WIFSTOPPED(status)
        notify.drain()          # what it sent before the stop landed
        # A stuck loop must not ping: systemd's watchdog would then restart it.
        assert notify.recv(1.0) is None
    finally:
        d.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    assert notify.wait("WATCHDOG", timeout=1.0)["WATCHDOG"] == "1"
    assert time.monotonic() - resumed < 0.5
    assert d.stream("/chat").status == 200


def test_sigterm_sends_stopping_then_exits_0(daemon, notify):
    d = notified(daemon, notify, watchdog_usec=400_000)
    notify.wait("READY")
    d.proc.send_signal(signal.SIGTERM)
    assert notify.wait("STOPPING")["STOPPING"] == "1"
    assert d.proc.wait(TIMEOUT) == 0


# -- socket activation -----------------------------------------------------------------------------

def listening_tcp_ports(pid):
    """The ports of the TCP sockets in LISTEN state that process `pid` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m[1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


class Activated(Daemon):
    """`systemd-socket-activate -l ADDR... [--fdname=...] python3 -m ssed -c INI`. The tool
    execs the daemon on the first connection, in the same process."""

    def __init__(self, tmp_path, body, addresses, names=None, listen="127.0.0.1:0",
                 control="ssed.sock"):
        self.dir = tmp_path
        self.control = str(tmp_path / control)
        self.ini = tmp_path / "ssed.ini"
        self.ini.write_text(f"[ssed]\nlisten = {listen}\ncontrol = {control}\n"
                            f"{textwrap.dedent(body)}")
        self.lines, self.log, self.port = queue.Queue(), [], None
        cmd = [tool("systemd-socket-activate"), *(f"--listen={a}" for a in addresses),
               *([f"--fdname={':'.join(names)}"] if names else []),
               f"--setenv=PYTHONPATH={ROOT}",           # it passes on little of its env
               sys.executable, "-m", "ssed", "-c", str(self.ini)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env(), cwd=str(tmp_path))
        threading.Thread(target=self._pump, daemon=True).start()
        for address in addresses:
            self.wait_log(r"Listening on " + re.escape(address))


@pytest.fixture
def activated(tmp_path):
    started = []

    def start(*args, **kw):
        started.append(Activated(tmp_path, *args, **kw))
        return started[-1]

    yield start
    for d in started:
        reap(d.proc)


def test_activated_daemon_serves_on_the_passed_socket_and_binds_nothing(activated):
    port, configured = free_port(), free_port()
    d = activated(CHAT, [f"127.0.0.1:{port}"], names=["http"],
                  listen=f"127.0.0.1:{configured}")
    d.port = port
    s = d.stream("/chat")       # the first connection makes the tool exec the daemon
    assert s.status == 200
    d.wait_log(r"socket activation: 1 listeners from systemd")
    d.wait_log(r"ready: 1 services")
    assert d.publish("/chat", "via systemd")["delivered"] == 1
    assert s.wait_events(1)[0].data == "via systemd"
    assert listening_tcp_ports(d.proc.pid) == {port}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", configured), timeout=TIMEOUT).close()
    assert [line.split(" info ")[1] for line in d.log if " info listening on " in line] == [
        f"listening on 127.0.0.1:{port}"], "\n".join(d.log)
    # A reload that changes `listen` leaves the passed sockets alone.
    d.ini.write_text(d.ini.read_text().replace(str(configured), str(free_port())))
    assert d.ctl({"cmd": "reload"})["ok"] is True
    assert listening_tcp_ports(d.proc.pid) == {port}
    assert d.publish("/chat", "still")["delivered"] == 1
    assert d.stop() == 0


def test_a_passed_unix_socket_named_control_is_the_control_socket(activated):
    port = free_port()
    short = tempfile.mkdtemp(prefix="ssed-a")
    ctl_path = os.path.join(short, "ctl.sock")
    try:
        d = activated(CHAT, [f"127.0.0.1:{port}", ctl_path], names=["http", "control"],
                      control="own.sock")
        d.port = port
        with ControlClient(ctl_path) as c:      # this connection starts the daemon
            assert c.request({"cmd": "list"})["services"][0]["path"] == "/chat"
        d.wait_log(r"socket activation: 1 listeners, the control socket from systemd")
        assert d.stream("/chat").status == 200
        assert not os.path.exists(d.control), "bound its own control socket too"
        assert d.stop() == 0
        # The socket belongs to systemd (the socket unit keeps it across restarts).
        assert os.path.exists(ctl_path)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_a_passed_control_socket_at_the_configured_path_is_not_removed_on_exit(activated):
    port = free_port()
    short = tempfile.mkdtemp(prefix="ssed-a")
    try:
        d = activated(CHAT, [f"127.0.0.1:{port}", os.path.join(short, "ssed.sock")],
                      names=["http", "control"], control=os.path.join(short, "ssed.sock"))
        with ControlClient(d.control) as c:
            assert c.request({"cmd": "list"})["ok"] is True
        assert d.stop() == 0
        # Under systemd the socket unit keeps listening on this inode for the next start:
        # unlinking the path would leave `ssectl` nothing to connect to.
        assert os.path.exists(d.control)
    finally:
        shutil.rmtree(short, ignore_errors=True)


# A launcher that puts `fd` (or nothing: -1) at descriptor 3 and execs the daemon in the same
# process with LISTEN_PID/LISTEN_FDS=1, as systemd does; what it is handed is up to the test.
LAUNCH = """if True:
    import os, sys
    fd = int(sys.argv[1])
    if fd >= 0:
        os.dup2(fd, 3)
    else:
        try:
            os.close(3)
        except OSError:
            pass
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
    os.execv(sys.executable, [sys.executable, "-m", "ssed", *sys.argv[2:]])
"""


def launch_with_fd3(tmp_path, fd=-1):
    ini = tmp_path / "ssed.ini"
    ini.write_text(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n{CHAT}")
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(fd), "-c", str(ini)],
                            env=env(), cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            pass_fds=(fd,) if fd >= 0 else ())
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        reap(proc)
    return proc.returncode, err


def refused_activation(tmp_path, fd, why):
    code, err = launch_with_fd3(tmp_path, fd)
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("ssed: socket activation: fd 3 "), err
    assert why in err and "Traceback" not in err, err


def test_a_closed_fd_3_is_refused_with_one_line(tmp_path):
    refused_activation(tmp_path, -1, "is not open")


def test_a_passed_fd_that_is_not_a_socket_is_refused_with_one_line(tmp_path):
    with open(tmp_path / "plain.txt", "w") as f:
        refused_activation(tmp_path, f.fileno(), "is not a socket")


def test_a_passed_udp_socket_is_refused_with_one_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        refused_activation(tmp_path, udp.fileno(), "is a datagram socket")


def test_a_passed_stream_socket_that_does_not_listen_is_refused_with_one_line(tmp_path):
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        refused_activation(tmp_path, tcp.fileno(), "not listening")


def test_a_passed_listening_socket_is_served(tmp_path):
    """The launcher itself is sound: a real listener at fd 3 serves streams."""
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        ini = tmp_path / "ssed.ini"
        ini.write_text(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n{CHAT}")
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(tcp.fileno()), "-c",
                                 str(ini)], env=env(), cwd=str(tmp_path),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, pass_fds=(tcp.fileno(),))
        try:
            with socket.create_connection(tcp.getsockname(), timeout=TIMEOUT) as s:
                s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 200 ")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(TIMEOUT) == 0
        finally:
            reap(proc)


# -- logs under journald ---------------------------------------------------------------------------

def run_with_stderr_file(tmp_path, notify, journal_stream, body=CHAT):
    """Start the daemon with stderr to a file; JOURNAL_STREAM as given (None: the file's own
    device:inode). Readiness from READY=1, since the log is not a pipe here."""
    ini = tmp_path / "ssed.ini"
    ini.write_text(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n{body}")
    err_path = tmp_path / "stderr.log"
    err = open(err_path, "wb")
    st = os.fstat(err.fileno())
    e = env()
    e["NOTIFY_SOCKET"] = notify.name
    e["JOURNAL_STREAM"] = journal_stream or f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen([sys.executable, "-m", "ssed", "-c", str(ini)], env=e,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                            cwd=str(tmp_path))
    err.close()
    return proc, err_path, str(tmp_path / "ssed.sock")


def test_under_journald_lines_have_priority_prefixes_no_timestamps_and_escapes(tmp_path,
                                                                               notify):
    proc, err_path, control = run_with_stderr_file(tmp_path, notify, None)
    try:
        notify.wait("READY")
        with ControlClient(control) as c:
            c.request({"cmd": "kick", "service": "/chat", "client": "a\x1b[2Jb\rc\x07"})
            (tmp_path / "ssed.ini").write_text((tmp_path / "ssed.ini").read_text()
                                               + "\n[/x]\nbad\x1bkey = 1\n")
            assert c.request({"cmd": "reload"})["ok"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        reap(proc)
    text = err_path.read_text()
    lines = text.splitlines()
    assert lines and all(re.match(r"<[0-7]>\S", line) for line in lines), text
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), text
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", text), repr(text)
    assert any(line.startswith("<6>ready: 1 services") for line in lines), text
    kick = next(line for line in lines if "cmd=kick" in line)
    assert kick.startswith("<6>") and "a\\x1b[2Jb\\x0dc\\x07" in kick
    refused = next(line for line in lines if "reload refused" in line)
    # A multi-line message (the error list) is still one line, and at error priority.
    assert refused.startswith("<3>") and "\\x0a" in refused and "bad\\x1bkey" in refused
    assert lines[-1] == "<6>stopped"


def test_a_journal_stream_naming_another_file_keeps_timestamps(tmp_path, notify):
    other = os.stat(os.__file__)
    proc, err_path, _ = run_with_stderr_file(tmp_path, notify,
                                             f"{other.st_dev}:{other.st_ino}")
    try:
        notify.wait("READY")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        reap(proc)
    lines = err_path.read_text().splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S* (info|warning|"
                                  r"error|debug) ", line) for line in lines), lines
