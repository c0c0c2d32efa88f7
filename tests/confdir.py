"""Helpers for tests that need the config file in a directory of their own (plugins, relative
`file` and `command` paths), or the daemon run by hand (`--check`, `$SSED_CONFIG`, bad usage).

`start_in(daemon, conf_dir, body)` writes `conf_dir/ssed.ini` and starts it through the
`daemon` fixture, whose process then runs in another directory: a later `-c` wins, so the
fixture's own ini is ignored, and relative paths can only resolve against the config's
directory.
"""
import subprocess
import sys
import textwrap

from conftest import TIMEOUT, env


def write_ini(conf_dir, body, top=""):
    conf_dir.mkdir(parents=True, exist_ok=True)
    ini = conf_dir / "ssed.ini"
    ini.write_text(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ssed.sock\n"
                   f"{textwrap.dedent(top)}\n{textwrap.dedent(body)}")
    return ini


def start_in(daemon, conf_dir, body, top="", args=(), **kw):
    """`kw` goes to the Daemon (preexec_fn, env...)."""
    ini = write_ini(conf_dir, body, top)
    d = daemon("", args=["-c", str(ini), *args], **kw)
    d.ini = ini
    d.control = str(conf_dir / "ssed.sock")
    assert d.dir != conf_dir
    return d


def run_ssed(*args, cwd, extra_env=None, drop=("SSED_CONFIG",)):
    """`python3 -m ssed ARGS` to completion (bounded); the CompletedProcess (text)."""
    e = env()
    for name in drop:
        e.pop(name, None)
    e.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "ssed", *args], cwd=str(cwd), env=e,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
