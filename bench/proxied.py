#!/usr/bin/env python3
"""ssed behind nginx against ssed alone, same run: deliveries per CPU-second, the proxy's CPU
counted. Standard library only (and nginx: apt-get install nginx-light).

Each run is bench/load.py's (the same daemon config with every feature on, pinned to CPU 0;
the load worker on CPU 1 opening N streams; the open-loop publisher at R events/s through the
control socket), once with the streams straight to ssed ("direct") and once through nginx
("nginx"), alternated `--repeat` times. nginx runs the README's config ("Behind a proxy",
read from README.md: proxy_buffering off, HTTP/1.1 with keep-alive to ssed, X-Forwarded-For)
with one worker process, not pinned (the kernel puts it where there is room: a real server
has more cores than ssed uses), and ssed gets `trusted_proxies = 127.0.0.1/32`, so each
stream's request also has its X-Forwarded-For read. The figure: distinct events received by
the load / (ssed's CPU seconds + nginx's, master and worker), during publishing and grace.

    python3 bench/proxied.py                     # N = 1,000, R = 100/s, 10 s, twice each
    python3 bench/proxied.py --n 1000 --rate 100 --duration 10 --repeat 2
"""
import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402
import procstat  # noqa: E402
import report  # noqa: E402

ROOT = load.ROOT
README = os.path.join(ROOT, "README.md")


def nginx_site(upstream, port):
    """The README's nginx config, with ssed's and nginx's addresses."""
    text = open(README, encoding="utf-8").read()
    m = re.search(r"<!-- proxy-nginx:begin -->\n```\w*\n(.*?)```", text, re.S)
    if not m:
        raise RuntimeError("README.md has no proxy-nginx config block")
    return (m.group(1).replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream};")
            .replace("listen 80;", f"listen 127.0.0.1:{port} backlog=4096;"))


def unpin():
    """In nginx's child before exec: any CPU (the driver that starts it is pinned to CPU 1)."""
    os.sched_setaffinity(0, range(os.cpu_count()))


class Nginx:
    """nginx (master + one worker) in `tmp`, in front of ssed on `upstream`."""

    def __init__(self, tmp, upstream, n):
        binary = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin")
        if binary is None:
            raise RuntimeError("nginx not installed (apt-get install nginx-light)")
        self.port = load.free_port()
        self.dir = d = os.path.join(tmp, "nginx")
        os.makedirs(d)
        temp = "".join(f"    {k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi",
                                                                    "uwsgi", "scgi"))
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile {4 * n + 200};\n"
                    f"pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
                    f"events {{ worker_connections {4 * n + 100}; multi_accept on; }}\n"
                    f"http {{\n    access_log off;\n{temp}{nginx_site(upstream, self.port)}}}\n")
        self.proc = subprocess.Popen([binary, "-p", d, "-e", f"{d}/error.log", "-c", conf],
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=unpin)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode})")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("nginx not listening in 10 s") from None
                time.sleep(0.02)

    def errors(self, lines=5):
        """The last lines of its error log (a 502 says why there)."""
        try:
            with open(os.path.join(self.dir, "error.log"), errors="replace") as f:
                return [line.strip() for line in f.readlines()[-lines:]]
        except OSError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def run(mode, n, rate, duration, args):
    """One run, `mode` "direct" or "nginx": the record of its figures."""
    rec = {"scenario": f"proxied-{mode}-n{n}-r{rate:g}", "n": n, "rate": rate,
           "duration": duration, "workers": 1, "mode": "open-loop", **report.conditions(ROOT)}
    print(f"  {mode}: N={n} R={rate:g}/s D={duration:g}s ...", end="", flush=True, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ssed-bench-proxied-") as tmp:
        extra = "trusted_proxies = 127.0.0.1/32\n" if mode == "nginx" else ""
        daemon = load.Daemon(tmp, n, extra=extra)
        proxy, workers = None, []
        try:
            proxy = Nginx(tmp, daemon.port, n) if mode == "nginx" else None
            workers = load.start_workers(1)
            time.sleep(0.5)
            ssed_pids = procstat.tree(daemon.proc.pid)
            ngx_pids = procstat.tree(proxy.proc.pid) if proxy else []
            cpu0, pss0 = procstat.cpu_s(ssed_pids), procstat.pss_kib(ssed_pids)
            port = proxy.port if proxy else daemon.port
            workers[0][1].send(("connect", "127.0.0.1", port, "/bench", n, 256, 30 + n / 200))
            [conns] = load.gather(workers, 40 + n / 200, "connected")
            rec.update(connected=conns["connected"], connect_failed=conns["failed"],
                       connect_fail_reasons=conns["fail_reasons"], connect_s=conns["connect_s"])
            time.sleep(args.settle)
            cpu1, pss1 = procstat.cpu_s(ssed_pids), procstat.pss_kib(ssed_pids)
            ngx1 = procstat.cpu_s(ngx_pids)
            pub = load.Publisher(daemon.ctl_path, rate, duration, max(1, round(rate / 10)), False)
            before = pub.probe.ask(b'{"cmd":"stats"}\n')
            ticks1, t1 = procstat.cpu_ticks(), time.monotonic()
            workers[0][1].send(("run",))
            published = pub.run()
            pub.wait_answers(10.0)
            workers[0][1].send(("end", published, args.grace))
            results = load.gather(workers, args.grace + 30, "result")
            wall = time.monotonic() - t1
            cpu2, ngx2, ticks2 = procstat.cpu_s(ssed_pids), procstat.cpu_s(ngx_pids), procstat.cpu_ticks()
            after = pub.probe.ask(b'{"cmd":"stats"}\n')
            rec.update(report.figures(rec, results, pub, before, after, {
                "cpu_connect_s": cpu1 - cpu0, "cpu_run_s": cpu2 - cpu1, "wall_s": wall,
                "pss_kib": [pss0, pss1]}, procstat.noise(ticks1, ticks2, cpu2 - cpu1, wall,
                                                         load.SERVER_CPU, load.LOAD_CPUS)))
            nginx_cpu = ngx2 - ngx1
            total = (cpu2 - cpu1) + nginx_cpu
            rec.update(nginx_cpu_run_s=round(nginx_cpu, 2), total_cpu_run_s=round(total, 2),
                       k_deliv_per_total_cpu_s=round(rec["received"] / total / 1000, 1)
                       if total else None)
        except (RuntimeError, OSError) as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            load.stop_workers(workers)
            if proxy:
                proxy.stop()
                rec["nginx_errors"] = proxy.errors()
            daemon.stop()
    print(" " + report.one_line(rec), file=sys.stderr)
    if rec.get("connect_failed") or rec.get("nginx_errors"):
        print(f"    connect failures {rec.get('connect_fail_reasons')}; nginx's log: "
              f"{rec.get('nginx_errors')}", file=sys.stderr)
    return rec


def table(records):
    lines = ["| run | delivered/s | lost / dup / ooo | p50 / p99 ms | ssed CPU s | nginx CPU s "
             "| k deliv per CPU-s (ssed + nginx) | others CPU0 % | load CPU1 busy % |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['scenario']} | ERROR {r['error']} |||||||")
            continue
        lines.append(f"| {r['scenario']} | {r['deliveries_per_s']:,} | {r['lost']} / {r['dup']} / "
                     f"{r['ooo']} | {r['p50_ms']} / {r['p99_ms']} | {r['srv_cpu_run_s']} | "
                     f"{r['nginx_cpu_run_s']} | {r['k_deliv_per_total_cpu_s']} | "
                     f"{r['others_cpu0_pct']} | {r['load_cpu_busy_pct']} |")
    by = {}
    for r in records:
        if "error" not in r:
            by.setdefault(r["scenario"].split("-")[1], []).append(r["k_deliv_per_total_cpu_s"])
    if "direct" in by and "nginx" in by:
        d, x = sorted(by["direct"]), sorted(by["nginx"])
        lines.append(f"\nk deliveries per CPU-second: direct {d}, through nginx {x}: a delivery "
                     f"through nginx costs {d[len(d) // 2] / x[len(x) // 2]:.2f}x the CPU "
                     "(ssed + nginx) of one direct (medians).")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=2, help="direct and nginx runs, alternated")
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--history", default=os.path.join(ROOT, "bench", "results", "proxied.jsonl"),
                    help="where the raw records are appended")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    if not {load.SERVER_CPU, *load.LOAD_CPUS} <= os.sched_getaffinity(0):
        print("needs CPUs 0 and 1", file=sys.stderr)
        return 1
    os.sched_setaffinity(0, set(load.LOAD_CPUS))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    records = [run(mode, args.n, args.rate, args.duration, args)
               for _ in range(args.repeat) for mode in ("direct", "nginx")]
    print(table(records))
    if not args.no_record:
        report.append_history(args.history, records)
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
