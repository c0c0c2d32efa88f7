#!/usr/bin/env python3
"""Fan-out benchmark of ssed, standard library only. For each scenario (N subscribers, R
events/s for D seconds) it starts the daemon on a generated config with every feature on
(history, keepalive, retry, CORS, metrics counters, limits raised to fit N), pinned to CPU 0;
worker processes pinned to CPU 1 open the N streams (bench/streams.py); the driver, also on
CPU 1, publishes `seq=<n> t=<time_ns>` through the control socket on an open-loop schedule
(event n is sent at start + (n-1)/R whatever the answers do) and, right after some publishes,
sends `stats` on a second control connection and times the answer (how long the loop is busy
with a broadcast). Then it waits for stragglers (bounded) and reports deliveries/s, lost,
duplicated, out of order, p50/p99/max latency (publish stamp -> read), the daemon's CPU
seconds per 1,000 deliveries and per connection setup, and PSS per connection.

A markdown table goes to stdout with the conditions; each run is appended to
bench/results/history.jsonl and compared with the last recorded run of the same scenario.

    python3 bench/load.py                    # quick set (make bench), a few minutes
    python3 bench/load.py --full             # the whole matrix, twice (make bench-full)
    python3 bench/load.py --scenarios n1000-r100,n19000-r2 [--duration 10] [--repeat 1]
    python3 bench/load.py --n 1000,5000 --rates 10,50   # ad-hoc scenarios n<N>-r<R>
    python3 bench/load.py --profile DIR      # also write the daemon's cProfile per run to DIR
Options: --workers W (load processes, default 1 per load CPU), --closed-loop (wait for each
answer before the next publish, like the reference harness), --grace S (straggler wait, 5),
--no-record (do not append to the history), --history FILE.
"""
import argparse
import multiprocessing
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402
import report  # noqa: E402
import streams  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_CPU, LOAD_CPUS = 0, (1,)
SCENARIOS = {            # name: (N, R events/s, what it is for)
    "n1000-r10": (1000, 10, "matrix"),
    "n1000-r100": (1000, 100, "1,000 subscribers x 100 events/s: nothing lost"),
    "n10000-r10": (10000, 10, "matrix"),
    "n10000-r100": (10000, 100, "matrix (over capacity: 1M deliveries/s offered)"),
    "n19000-r2": (19000, 2, "19,000 subscribers: memory, connect, control answer during a broadcast"),
}
QUICK = ("n1000-r10", "n1000-r100", "n10000-r10", "n19000-r2")
FULL = tuple(SCENARIOS)
INI = """[ssed]
listen = 127.0.0.1:{port}
control = ctl.sock
keepalive = 15
retry = 3000
history = 100
max_clients = {limit}
max_clients_per_ip = {limit}
send_buffer = 1048576
shutdown_timeout = 1
cors_origins = *
status_allow = 127.0.0.0/8 ::1
index = true

[/bench]
source = none
history = 100
"""


def wait_ready(notify, daemon, name):
    """Until `daemon` says READY=1 on the `notify` socket (20 s at most: then it is stopped
    and its log's tail raised); the socket is closed either way."""
    notify.settimeout(20)
    try:
        while b"READY=1" not in notify.recv(4096):
            pass
    except socket.timeout:
        daemon.stop()
        raise RuntimeError(f"{name} not ready in 20 s: {daemon.log_tail()}") from None
    finally:
        notify.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`python3 -m ssed` (or bench/bare.py) in a temp dir, pinned to the server CPU; ready on
    READY=1."""

    def __init__(self, tmp, n, profile=None, target="ssed", root=ROOT, extra=""):
        """`extra`: more [ssed] lines (bench/proxied.py: trusted_proxies)."""
        self.port = free_port()
        self.ini = os.path.join(tmp, "bench.ini")
        self.ctl_path = os.path.join(tmp, "ctl.sock")
        with open(self.ini, "w") as f:
            f.write(INI.format(port=self.port, limit=n + 100).replace("\n\n[/", f"\n{extra}\n[/", 1))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"ssed-bench-load-{os.getpid()}-{self.port}"
        notify.bind("\0" + name)
        env = dict(os.environ, PYTHONPATH=root, NOTIFY_SOCKET="@" + name)
        env.pop("JOURNAL_STREAM", None)
        prof = [sys.executable, "-m", "cProfile", "-o", profile] if profile else [sys.executable]
        self.log_path = os.path.join(tmp, "ssed.log")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def pin():
            os.sched_setaffinity(0, {SERVER_CPU})
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        with open(self.log_path, "wb") as log:
            what = (["-m", "ssed", "-c", self.ini, "--log-level", "warning"] if target == "ssed" else
                    [os.path.join(ROOT, "bench", "bare.py"), "--port", str(self.port), "--control", self.ctl_path])
            self.proc = subprocess.Popen([*prof, *what],
                                         cwd=root, env=env, preexec_fn=pin, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        wait_ready(notify, self, "ssed")

    def log_tail(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-500:].decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Control:
    """One control connection: JSON lines out, answer lines in (read when the caller says)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(10)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line)

    def lines(self):
        """Whatever whole answer lines have arrived (one recv; the socket is readable)."""
        data = self.sock.recv(1 << 16)
        if not data:
            raise RuntimeError("control socket closed")
        self.buf += data
        *whole, self.buf = self.buf.split(b"\n")
        return whole

    def ask(self, line):
        self.send(line)
        while True:
            for answer in self.lines():
                return report.json_loads(answer)


class Publisher:
    """Open-loop: publish n is due at start + (n-1)/R; answers are read whenever they come.
    After some publishes, `stats` goes out on the probe connection and its answer is timed."""

    def __init__(self, ctl_path, rate, duration, probe_every, closed_loop):
        self.pub, self.probe = Control(ctl_path), Control(ctl_path)
        self.rate, self.duration = rate, duration
        self.total = max(1, round(rate * duration))
        self.probe_every, self.closed_loop = probe_every, closed_loop
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.pub.sock, selectors.EVENT_READ, self._answers)
        self.sel.register(self.probe.sock, selectors.EVENT_READ, self._probe_answer)
        self.sent_at, self.rtts, self.probe_ms = [], [], []
        self.answered = self.errors = 0
        self.first_error = None
        self.probe_t = None

    def _answers(self):
        now = time.perf_counter()
        for line in self.pub.lines():
            if b'"ok": true' not in line and b'"ok":true' not in line:
                self.errors += 1
                self.first_error = self.first_error or line[:200].decode(errors="replace")
            self.rtts.append(now - self.sent_at[self.answered])
            self.answered += 1

    def _probe_answer(self):
        for _ in self.probe.lines():
            self.probe_ms.append((time.perf_counter() - self.probe_t) * 1e3)
            self.probe_t = None

    def pump(self, timeout):
        for key, _ in self.sel.select(max(0.0, timeout)):
            key.data()

    def run(self):
        self.first_ns = time.time_ns()
        start = time.monotonic()
        give_up = start + 1.2 * self.duration + 1
        lag = 0.0
        seq = 0
        while seq < self.total:
            due = start + seq / self.rate
            now = time.monotonic()
            while now < due:
                self.pump(due - now)
                now = time.monotonic()
            if now > give_up:
                break
            lag = max(lag, now - due)
            seq += 1
            self.sent_at.append(time.perf_counter())
            self.pub.send(b'{"cmd":"publish","service":"/bench","data":"seq=%d t=%d"}\n'
                          % (seq, time.time_ns()))
            if self.probe_t is None and seq % self.probe_every == 0:
                self.probe_t = time.perf_counter()
                self.probe.send(b'{"cmd":"stats"}\n')
            while self.closed_loop and self.answered < seq:
                self.pump(10)
        self.elapsed = time.monotonic() - start
        self.published, self.lag_ms = seq, lag * 1e3
        return seq

    def wait_answers(self, timeout):
        deadline = time.monotonic() + timeout
        while (self.answered < self.published or self.probe_t is not None) and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())
        self.last_answer = time.monotonic()

    def summary(self):
        return {"published": self.published, "answered": self.answered, "errors": self.errors,
                "first_error": self.first_error,
                "rate": round(self.published / (self.elapsed + 1 / self.rate), 1),
                "lag_ms": round(self.lag_ms, 1),
                "answer_ms": report.percentiles([x * 1e3 for x in self.rtts]),
                "stats_ms": report.percentiles(self.probe_ms), "stats_probes": len(self.probe_ms)}


def snapshot(rev):
    """The ssed package as committed at `rev`, extracted once into a temp dir (with .rev)."""
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", rev], capture_output=True,
                         text=True, check=True).stdout.strip()
    where = os.path.join(tempfile.gettempdir(), f"ssed-bench-snap-{sha}")
    if not os.path.exists(os.path.join(where, ".rev")):
        os.makedirs(where, exist_ok=True)
        tar = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", sha, "ssed"],
                             capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", where], input=tar, check=True)
        with open(os.path.join(where, ".rev"), "w") as f:
            f.write(sha + "\n")
    return where


def start_workers(count):
    ctx = multiprocessing.get_context("fork")
    workers = []
    for i in range(count):
        here, there = ctx.Pipe()
        p = ctx.Process(target=streams.worker_main, args=(there, {LOAD_CPUS[i % len(LOAD_CPUS)]}),
                        daemon=True)
        p.start()
        there.close()
        workers.append((p, here))
    return workers


def stop_workers(workers):
    """Wait a little for each load worker to end (they were told to, or failed); kill the
    ones still alive."""
    for p, _ in workers:
        p.join(5)
        if p.is_alive():
            p.kill()


def gather(workers, timeout, kind):
    out = []
    for _, pipe in workers:
        if not pipe.poll(timeout):
            raise RuntimeError(f"a load worker gave no {kind!r} answer in {timeout:.0f} s")
        msg = pipe.recv()
        if msg[0] != kind:
            raise RuntimeError(f"load worker said {msg[0]!r}, expected {kind!r}")
        out.append(msg[1])
    return out


def run_scenario(name, n, rate, duration, args):
    """One run: returns the record (raw figures) that goes into the history."""
    rec = {"scenario": name if args.target == "ssed" else f"{name}-{args.target}", "n": n, "rate": rate, "duration": duration, "workers": args.workers,
           "mode": "closed-loop" if args.closed_loop else "open-loop", **report.conditions(args.ssed_root)}
    print(f"  {name}: N={n} R={rate:g}/s D={duration:g}s ...", end="", flush=True, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ssed-bench-") as tmp:
        profile = os.path.join(args.profile, f"{name}-{time.strftime('%H%M%S')}.prof") if args.profile else None
        daemon = Daemon(tmp, n, profile, args.target, args.ssed_root)
        workers = []
        try:
            workers = start_workers(args.workers)
            time.sleep(0.5)                    # let the daemon's start-up settle before measuring
            pids = procstat.tree(daemon.proc.pid)
            cpu0, pss0 = procstat.cpu_s(pids), procstat.pss_kib(pids)
            shares = [n // args.workers + (i < n % args.workers) for i in range(args.workers)]
            connect_timeout = 30 + n / 200
            for (_, pipe), share in zip(workers, shares, strict=True):
                pipe.send(("connect", "127.0.0.1", daemon.port, "/bench", share, 256, connect_timeout))
            conns = gather(workers, connect_timeout + 10, "connected")
            rec["connected"] = sum(c["connected"] for c in conns)
            rec["connect_failed"] = sum(c["failed"] for c in conns)
            rec["connect_s"] = max(c["connect_s"] for c in conns)
            time.sleep(args.settle)            # settle (as the reference does) before memory
            pids = procstat.tree(daemon.proc.pid)
            cpu1, pss1 = procstat.cpu_s(pids), procstat.pss_kib(pids)
            pub = Publisher(daemon.ctl_path, rate, duration,
                            probe_every=max(1, round(rate / 10)), closed_loop=args.closed_loop)
            before = pub.probe.ask(b'{"cmd":"stats"}\n')
            ticks1, t1 = procstat.cpu_ticks(), time.monotonic()
            for _, pipe in workers:
                pipe.send(("run",))
            published = pub.run()
            pub.wait_answers(max(args.grace, 10.0))
            for _, pipe in workers:
                pipe.send(("end", published, args.grace))
            results = gather(workers, args.grace + 30, "result")
            wall = time.monotonic() - t1
            cpu2, ticks2 = procstat.cpu_s(pids), procstat.cpu_ticks()
            after = pub.probe.ask(b'{"cmd":"stats"}\n')
            rec.update(report.figures(rec, results, pub, before, after, {
                "cpu_connect_s": cpu1 - cpu0, "cpu_run_s": cpu2 - cpu1, "wall_s": wall,
                "pss_kib": [pss0, pss1]}, procstat.noise(ticks1, ticks2, cpu2 - cpu1, wall,
                                                         SERVER_CPU, LOAD_CPUS)))
        except (RuntimeError, OSError) as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            stop_workers(workers)
            daemon.stop()
    print(" " + report.one_line(rec), file=sys.stderr)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="every scenario, --repeat 2 unless given")
    ap.add_argument("--scenarios", help=f"comma-separated, from {', '.join(SCENARIOS)}")
    ap.add_argument("--n", help="ad-hoc scenarios: comma-separated subscriber counts (with --rates)")
    ap.add_argument("--rates", default="10,100", help="ad-hoc scenarios: comma-separated events/s")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of publishing per run")
    ap.add_argument("--repeat", type=int, help="runs of each scenario (default 1, --full 2)")
    ap.add_argument("--grace", type=float, default=5.0, help="seconds to wait for stragglers")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between connecting and measuring")
    ap.add_argument("--workers", type=int, default=len(LOAD_CPUS), help="load processes")
    ap.add_argument("--closed-loop", action="store_true", help="wait for each publish's answer")
    ap.add_argument("--target", choices=["ssed", "bare"], default="ssed",
                    help="bare: bench/bare.py, the bare-loop ceiling (scenario names get -bare)")
    ap.add_argument("--profile", metavar="DIR", help="run the daemon under cProfile, .prof files here")
    ap.add_argument("--ssed-root", default=ROOT, help="run the ssed package found in this directory")
    ap.add_argument("--snapshot", metavar="REV", help="run ssed as committed at REV (git archive into "
                    "a temp dir, kept for the reference harness's SSED_ROOT): one build for every run")
    ap.add_argument("--history", default=os.path.join(ROOT, "bench", "results", "history.jsonl"))
    ap.add_argument("--no-record", action="store_true", help="do not append to the history")
    args = ap.parse_args(argv)
    if args.n:
        plan = [(f"n{n}-r{r:g}", int(n), r) for n in args.n.split(",") for r in map(float, args.rates.split(","))]
    else:
        names = args.scenarios.split(",") if args.scenarios else (FULL if args.full else QUICK)
        unknown = [x for x in names if x not in SCENARIOS]
        if unknown:
            ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        plan = [(x, *SCENARIOS[x][:2]) for x in names]
    if not {SERVER_CPU, *LOAD_CPUS} <= os.sched_getaffinity(0):
        print(f"needs CPUs {SERVER_CPU} and {LOAD_CPUS} (daemon and load are pinned apart)", file=sys.stderr)
        return 1
    os.sched_setaffinity(0, set(LOAD_CPUS))           # the driver stays off the daemon's CPU
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        args.profile = os.path.abspath(args.profile)
    if args.snapshot:
        args.ssed_root = snapshot(args.snapshot)
        print(f"ssed from {args.ssed_root} (SSED_ROOT for the reference harness)", file=sys.stderr)
    repeat = args.repeat or (2 if args.full else 1)
    records = []
    for _ in range(repeat):
        for name, n, rate in plan:
            if n + 64 > hard * args.workers or n + 150 > hard:
                records.append({"scenario": name, "n": n, "rate": rate, "duration": args.duration,
                                "error": f"skipped: N={n} does not fit RLIMIT_NOFILE={hard}"})
                continue
            records.append(run_scenario(name, n, rate, args.duration, args))
    previous = report.load_history(args.history)
    print(report.markdown(records, previous))
    if not args.no_record:
        report.append_history(args.history, records)
        print(f"\n(appended {len(records)} run(s) to {os.path.relpath(args.history)})", file=sys.stderr)
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
