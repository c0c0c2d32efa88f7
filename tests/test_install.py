"""`make install PREFIX=... DESTDIR=...` (SPEC section 1): the package, the `ssed` and `ssectl`
scripts, the systemd units and /etc/ssed/ssed.ini, laid out under DESTDIR; the installed
scripts work with a clean environment. Every subprocess is bounded by a timeout.
"""
import glob
import os
import queue
import signal
import stat
import subprocess
import threading

import pytest

from conftest import ROOT, TIMEOUT, Daemon, raw_request, reap

CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def make_install(destdir, prefix, *extra):
    done = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={destdir}",
                           f"PREFIX={prefix}", *extra], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_install_lays_out_package_scripts_units_and_config(tmp_path):
    dest = tmp_path / "dest"
    make_install(dest, "/usr")
    lib = dest / "usr" / "lib" / "ssed" / "ssed"
    package = sorted(os.path.basename(p) for pattern in ("*.py", "*.ini", "*.html")
                     for p in glob.glob(os.path.join(ROOT, "ssed", pattern)))
    assert sorted(os.listdir(lib)) == package
    for name in package:
        assert (lib / name).read_bytes() == open(os.path.join(ROOT, "ssed", name), "rb").read()
    for script, module in (("ssed", "ssed"), ("ssectl", "ssed.ctl")):
        path = dest / "usr" / "bin" / script
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        text = path.read_text()
        assert text.startswith("#!/bin/sh\n")
        assert "PYTHONPATH=/usr/lib/ssed" in text and f" -m {module} " in text
    units = dest / "usr" / "lib" / "systemd" / "system"
    service = (units / "ssed.service").read_text()
    assert "ExecStart=/usr/bin/ssed -c /etc/ssed/ssed.ini\n" in service
    assert "@BINDIR@" not in service and "@DOCDIR@" not in service
    assert "Documentation=file:///usr/share/doc/ssed/README.md\n" in service
    assert (dest / "usr" / "share" / "doc" / "ssed" / "README.md").read_bytes() == open(
        os.path.join(ROOT, "README.md"), "rb").read()
    template = (units / "ssed@.service").read_text()
    assert template == open(os.path.join(ROOT, "systemd", "ssed@.service")).read().replace(
        "@BINDIR@", "/usr/bin").replace("@DOCDIR@", "/usr/share/doc/ssed")
    assert "ExecStart=/usr/bin/ssed -c /etc/ssed/cluster-%i.ini\n" in template
    assert (units / "ssed.socket").read_text() == open(
        os.path.join(ROOT, "systemd", "ssed.socket")).read()
    assert (dest / "etc" / "ssed" / "ssed.ini").read_text() == open(
        os.path.join(ROOT, "conf", "ssed-system.ini")).read()
    # Nothing outside DESTDIR's usr/ and etc/.
    assert sorted(os.listdir(dest)) == ["etc", "usr"]


def test_install_again_keeps_an_edited_config(tmp_path):
    dest = tmp_path / "dest"
    make_install(dest, "/usr")
    ini = dest / "etc" / "ssed" / "ssed.ini"
    ini.write_text("; edited by the admin\n[ssed]\n")
    make_install(dest, "/usr")
    assert ini.read_text() == "; edited by the admin\n[ssed]\n"


@pytest.fixture(scope="module")
def runnable(tmp_path_factory):
    """Installed under DESTDIR with a PREFIX that also exists as a real path (a symlink into
    DESTDIR), so the installed scripts find their package where they were told it is."""
    base = tmp_path_factory.mktemp("run")
    prefix = base / "usr"
    make_install(base / "root", prefix)
    os.symlink(f"{base / 'root'}{prefix}", prefix)
    return prefix, base / "root" / "etc" / "ssed" / "ssed.ini"


def run(path, *args):
    return subprocess.run([str(path), *args], env=CLEAN_ENV, cwd="/", capture_output=True,
                          text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


def test_installed_ssed_checks_the_installed_config_with_a_clean_env(runnable):
    prefix, ini = runnable
    done = run(prefix / "bin" / "ssed", "--check", "-c", str(ini))
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", ""), done
    done = run(prefix / "bin" / "ssed", "--help")
    assert done.returncode == 0 and "usage: ssed" in done.stdout


def test_installed_ssectl_runs_with_a_clean_env(runnable):
    prefix, _ = runnable
    done = run(prefix / "bin" / "ssectl", "--help")
    assert done.returncode == 0 and "usage: ssectl" in done.stdout, done
    # No daemon at that socket: exit 3, one line.
    done = run(prefix / "bin" / "ssectl", "-s", "/nonexistent/ssed.sock", "list")
    assert done.returncode == 3 and len(done.stderr.splitlines()) == 1, done


def test_installed_scripts_keep_the_users_pythonpath(runnable, tmp_path):
    """A plugin found only through the caller's PYTHONPATH (not beside the config) loads:
    the wrapper puts its own package first and keeps what the user had after it."""
    prefix, _ = runnable
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "plugmod.py").write_text("from ssed import Service\n\nclass X(Service):\n"
                                        "    pass\n")
    ini = tmp_path / "conf" / "ssed.ini"
    ini.parent.mkdir()
    ini.write_text("[ssed]\nlisten = 127.0.0.1:0\n\n[/p]\nclass = plugmod:X\n")
    done = subprocess.run([str(prefix / "bin" / "ssed"), "--check", "-c", str(ini)],
                          env={**CLEAN_ENV, "PYTHONPATH": str(plugins)}, cwd="/",
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", ""), done
    # Without it the plugin is not found: the check above did depend on PYTHONPATH.
    assert run(prefix / "bin" / "ssed", "--check", "-c", str(ini)).returncode == 1
    for script in ("ssed", "ssectl"):
        text = (prefix / "bin" / script).read_text()
        assert f"PYTHONPATH={prefix / 'lib' / 'ssed'}${{PYTHONPATH:+:$PYTHONPATH}} exec " in text


class Installed(Daemon):
    """The installed `ssed` script, started with a clean environment."""

    def __init__(self, tmp_path, script, body):
        self.dir = tmp_path
        self.control = str(tmp_path / "ssed.sock")
        self.ini = tmp_path / "ssed.ini"
        self.ini.write_text(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n{body}")
        self.lines, self.log, self.port = queue.Queue(), [], None
        self.proc = subprocess.Popen([str(script), "-c", str(self.ini)], env=CLEAN_ENV,
                                     cwd="/", stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._pump, daemon=True).start()
        self.wait_log("ready", on_line=self._port)


def test_installed_daemon_serves_streams_and_the_index_page(runnable, tmp_path):
    prefix, _ = runnable
    d = Installed(tmp_path, prefix / "bin" / "ssed", "[/chat]\n")
    try:
        s = d.stream("/chat")
        assert d.publish("/chat", "from the installed copy")["delivered"] == 1
        assert s.wait_events(1)[0].data == "from the installed copy"
        page = raw_request(d.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert page.startswith(b"HTTP/1.1 200") and b"/chat" in page
        assert d.stop(signal.SIGTERM) == 0
    finally:
        reap(d.proc)
