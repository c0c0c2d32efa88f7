#!/usr/bin/env python3
"""Journal benchmark: what durable history costs per published event. For each mode (no
journal, then `journal_sync = no | everysec | always`) a fresh daemon takes N publishes
through the control socket, one at a time (each waits for its answer, as a publisher that
wants the acknowledgement does); reports the wall time per publish (mean and p99, as the
publisher sees it) and the daemon's CPU per event (from /proc). Not a test: the figures
depend on the disk and the machine; compare the rows of one run.

    python3 bench/journal.py [--events 2000] [--size 100] [--history 100] [--rounds 3]
                             [--dir DIR (where the journals go; default: a temp dir)]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")
MODES = ("none", "no", "everysec", "always")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_daemon(tmp, mode, history):
    """The daemon on a config in `tmp`; ready when it says READY=1 on our notify socket."""
    journal = "" if mode == "none" else "journal = bench.journal\n"
    sync = "" if mode == "none" else f"journal_sync = {mode}\n"
    ini = os.path.join(tmp, "bench.ini")
    with open(ini, "w") as f:
        f.write(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = ctl.sock\nindex = false\n{sync}\n"
                f"[/bench]\nhistory = {history}\n{journal}")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"ssed-bench-{os.getpid()}-{mode}"
    notify.bind("\0" + name)
    env = dict(os.environ, PYTHONPATH=ROOT, NOTIFY_SOCKET="@" + name)
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen([sys.executable, "-m", "ssed", "-c", ini, "--log-level", "warning"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    notify.settimeout(10)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
    except socket.timeout:
        proc.kill()
        raise SystemExit(f"daemon ({mode}) did not start")
    finally:
        notify.close()
    return proc, os.path.join(tmp, "ctl.sock")


def run_mode(base, mode, events, size, history):
    tmp = tempfile.mkdtemp(prefix=f"journal-{mode}-", dir=base)
    proc, control = start_daemon(tmp, mode, history)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(control)
        rfile = sock.makefile("rb")
        payload = "x" * size
        lines = [json.dumps({"cmd": "publish", "service": "/bench",
                             "data": f"{n} {payload}"}).encode() + b"\n" for n in range(events)]
        latencies = []
        cpu0 = cpu_seconds(proc.pid)
        start = time.perf_counter()
        for line in lines:
            t = time.perf_counter()
            sock.sendall(line)
            answer = rfile.readline()
            latencies.append(time.perf_counter() - t)
            if not answer.startswith(b'{"ok":true'):
                raise SystemExit(f"publish refused: {answer!r}")
        wall = time.perf_counter() - start
        cpu = cpu_seconds(proc.pid) - cpu0
        rfile.close()
        sock.close()
        journal = os.path.join(tmp, "bench.journal")
        size_on_disk = os.path.getsize(journal) if os.path.exists(journal) else 0
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    latencies.sort()
    return {"mean_us": wall / events * 1e6,
            "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
            "cpu_us": cpu / events * 1e6, "journal_bytes": size_on_disk}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--size", type=int, default=100, help="bytes of data per event")
    ap.add_argument("--history", type=int, default=100, help="the service's history "
                    "(compaction rewrites the journal at twice this)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per mode; the median is shown")
    ap.add_argument("--dir", default=None, help="where the journals go (the disk measured)")
    args = ap.parse_args()
    base = args.dir or tempfile.gettempdir()
    fs = subprocess.run(["df", "-T", base], capture_output=True, text=True).stdout.split("\n")
    fs_type = fs[1].split()[1] if len(fs) > 1 and fs[1] else "?"
    results = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:          # interleaved, so that a busy moment hits every mode
            results[mode].append(run_mode(base, mode, args.events, args.size, args.history))
    print(f"{args.events} publishes of {args.size} bytes, one at a time through the control "
          f"socket, history {args.history}; journals on {fs_type} ({base}); median of "
          f"{args.rounds} rounds\n")
    print("| journal | mean us/publish | p99 us/publish | daemon CPU us/event | "
          "added per event |")
    print("|---|---|---|---|---|")
    baseline = statistics.median(r["mean_us"] for r in results["none"])
    for mode in MODES:
        mean = statistics.median(r["mean_us"] for r in results[mode])
        p99 = statistics.median(r["p99_us"] for r in results[mode])
        cpu = statistics.median(r["cpu_us"] for r in results[mode])
        label = "none" if mode == "none" else f"`journal_sync = {mode}`"
        added = "-" if mode == "none" else f"{mean - baseline:+.0f} us"
        print(f"| {label} | {mean:.0f} | {p99:.0f} | {cpu:.0f} | {added} |")


if __name__ == "__main__":
    main()
