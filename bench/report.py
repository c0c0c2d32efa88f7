"""bench/load.py's figures: from the raw numbers of one run to the record kept in
bench/results/history.jsonl, the markdown tables, and the change against the last recorded run
of the same scenario."""
import datetime
import json
import os
import platform
import subprocess
import sys

BUCKET_MS = 0.01          # streams.BUCKET_NS in ms
P99_LIMIT_MS = 1000.0
CLIENT_BOUND_PCT = 85.0   # a load worker this busy may have been the limit
NOISY_PCT = 20.0          # others on the daemon's CPU above this: the run is marked NOISY

# (key, column title, format, which way is better) for the change table
COMPARED = (
    ("deliveries_per_s", "delivered/s", "{:,.0f}", "up"),
    ("p50_ms", "p50 ms", "{:.1f}", "down"),
    ("p99_ms", "p99 ms", "{:.1f}", "down"),
    ("srv_cpu_s_per_1k", "srv CPU s/1k deliv", "{:.4f}", "down"),
    ("kib_per_conn", "KiB/conn", "{:.2f}", "down"),
    ("connect_us", "connect us/conn", "{:.0f}", "down"),
    ("stats_max_ms", "stats answer max ms", "{:.1f}", "down"),
    ("lost", "lost", "{:,}", "down"),
)


def json_loads(b):
    return json.loads(b)


def percentiles(values):
    if not values:
        return None
    v = sorted(values)
    return {"p50": round(v[len(v) // 2], 3), "p99": round(v[min(len(v) - 1, int(0.99 * len(v)))], 3),
            "max": round(v[-1], 3)}


def hist_percentiles(hist):
    """p50/p99/max in ms from {10-us bucket: count} (upper edge of the bucket)."""
    total = sum(hist.values())
    if not total:
        return None, None, None
    out, cum, keys = [], 0, sorted(hist)
    goals = [0.5 * total, 0.99 * total]
    for b in keys:
        cum += hist[b]
        while goals and cum >= goals[0]:
            out.append(round((b + 1) * BUCKET_MS, 2))
            goals.pop(0)
    return out[0], out[1], round((keys[-1] + 1) * BUCKET_MS, 2)


def conditions(root):
    """CPU model, Python, kernel, git rev (of the measured tree), load average, date."""
    try:
        rev = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=20).stdout.strip() or None
    except OSError:
        rev = None
    if not rev and os.path.exists(os.path.join(root, ".rev")):      # a bench/load.py --snapshot
        with open(os.path.join(root, ".rev")) as f:
            rev = f.read().strip() + " (snapshot)"
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"time": datetime.datetime.now().isoformat(timespec="seconds"), "git_rev": rev,
            "cpu": f"{os.cpu_count()} x {cpu}", "python": platform.python_version(),
            "kernel": platform.release(), "loadavg": load}


def figures(rec, results, pub, before, after, server, noise):
    """The record's figures from the workers' results, the publisher, the daemon's stats and
    /proc readings."""
    hist = {}
    for r in results:
        for b, c in r["hist"].items():
            hist[b] = hist.get(b, 0) + c
    p50, p99, mx = hist_percentiles(hist)
    received = sum(r["received"] for r in results)
    last_ns = max(r["last_recv_ns"] for r in results)
    span = (last_ns - pub.first_ns) / 1e9 if last_ns else 0
    connected = rec.get("connected") or 1
    cpu = server["cpu_run_s"]
    ps = pub.summary()
    stats = ps["stats_ms"] or {}
    out = {
        "published": ps["published"], "received": received,
        "offered_per_s": rec["n"] * rec["rate"],
        "deliveries_per_s": round(received / span) if span > 0 else 0,
        "lost": sum(r["lost"] for r in results), "dup": sum(r["dups"] for r in results),
        "ooo": sum(r["ooo"] for r in results), "closed": sum(r["closed"] for r in results),
        "incomplete_streams": sum(r["incomplete"] for r in results),
        "p50_ms": p50, "p99_ms": p99, "max_ms": mx,
        "pub_rate": ps["rate"], "pub_lag_ms": ps["lag_ms"], "pub_errors": ps["errors"],
        "pub_first_error": ps["first_error"], "pub_unanswered": ps["published"] - ps["answered"],
        "publish_answer_ms": ps["answer_ms"],
        "stats_p50_ms": stats.get("p50"), "stats_max_ms": stats.get("max"),
        "stats_probes": ps["stats_probes"],
        "srv_cpu_run_s": round(cpu, 2), "srv_cpu_pct": round(100 * cpu / server["wall_s"], 1),
        "srv_cpu_s_per_1k": round(cpu / received * 1000, 5) if received else None,
        "k_deliv_per_cpu_s": round(received / cpu / 1000, 1) if cpu else None,
        "pss_kib": server["pss_kib"],
        "kib_per_conn": round((server["pss_kib"][1][0] - server["pss_kib"][0][0]) / connected, 2),
        "rss_kib_per_conn": round((server["pss_kib"][1][1] - server["pss_kib"][0][1]) / connected, 2),
        "connect_us": round(server["cpu_connect_s"] / connected * 1e6, 1),
        "client_cpu_pct": [round(100 * r["cpu_run_s"] / r["wall_run_s"], 1) if r["wall_run_s"] else None
                           for r in results],
        "client_reads": sum(r["reads"] for r in results),
        "client_us_per_deliv": round(sum(r["cpu_run_s"] for r in results) / received * 1e6, 2) if received else None,
        "daemon_delivered": after["events_delivered"] - before["events_delivered"],
        "daemon_dropped": after.get("dropped"), "run_wall_s": round(server["wall_s"], 2),
        **noise,
    }
    out["ok"], out["why"] = verdict(rec, out)
    return out


def verdict(rec, f):
    why = []
    if rec.get("connect_failed") or rec.get("connected", 0) < rec["n"]:
        why.append(f"{rec.get('connect_failed')} connect failures")
    for key in ("lost", "dup", "ooo", "closed", "pub_errors"):
        if f[key]:
            why.append(f"{f[key]:,} {key}")
    if f["p99_ms"] is None or f["p99_ms"] >= P99_LIMIT_MS:
        why.append(f"p99 {f['p99_ms']} ms")
    if f["pub_rate"] < 0.95 * rec["rate"]:
        why.append(f"publisher at {f['pub_rate']}/s")
    return not why, "; ".join(why)


def client_bound(r):
    return max(x or 0 for x in r.get("client_cpu_pct") or [0]) >= CLIENT_BOUND_PCT


def one_line(r):
    if "error" in r:
        return "ERROR " + r["error"]
    return (f"{r['deliveries_per_s']:,}/s p99 {r['p99_ms']} ms lost {r['lost']:,} "
            f"srv {r['srv_cpu_pct']}% cli {r['client_cpu_pct']}% {r['kib_per_conn']} KiB/conn "
            f"stats max {r['stats_max_ms']} ms {'ok' if r['ok'] else 'FAIL: ' + r['why']}")


def _fmt(v, spec="{}"):
    return "-" if v is None else spec.format(v)


def row(r):
    if "error" in r:
        return f"| {r['scenario']} | {r['n']} | {r['rate']:g} | " + " | ".join(["-"] * 18) + f" | {r['error'][:80]} |"
    flags = []
    if client_bound(r):
        flags.append("CLIENT-BOUND")
    if r["others_cpu0_pct"] > NOISY_PCT:
        flags.append("NOISY")
    cli = "/".join(f"{x:.0f}" for x in r["client_cpu_pct"] if x is not None) + "%"
    if r.get("client_us_per_deliv") is not None:
        cli += f" ({r['client_us_per_deliv']:.1f} us/deliv)"
    return (f"| {r['scenario']} | {r['n']} | {r['rate']:g} | {r['offered_per_s']:,.0f} "
            f"| {r['deliveries_per_s']:,} | {r['lost']:,} | {r['dup']:,} | {r['ooo']:,} "
            f"| {_fmt(r['p50_ms'], '{:.1f}')} | {_fmt(r['p99_ms'], '{:.1f}')} | {_fmt(r['max_ms'], '{:.1f}')} "
            f"| {r['pub_rate']:g} | {r['srv_cpu_pct']:.0f}% | {_fmt(r['srv_cpu_s_per_1k'], '{:.4f}')} "
            f"| {_fmt(r['k_deliv_per_cpu_s'], '{:.0f}')} | {r['kib_per_conn']:.2f} | {r['connect_us']:.0f} "
            f"| {_fmt(r['stats_p50_ms'], '{:.1f}')} / {_fmt(r['stats_max_ms'], '{:.1f}')} "
            f"| {cli} | {r['load_cpu_busy_pct']:.0f}% | {r['others_cpu0_pct']:.0f}% "
            f"| {r['steal_pct'].get('cpu0', 0):.0f}% "
            f"| {'yes' if r['ok'] else 'no: ' + r['why']}{' (' + ', '.join(flags) + ')' if flags else ''} |")


HEAD = ("| scenario | N | R/s | offered/s | delivered/s | lost | dup | out of order | p50 ms | p99 ms "
        "| max ms | pub rate/s | srv CPU | srv CPU s per 1k deliv | k deliv per srv CPU-s | KiB/conn (PSS) "
        "| connect us/conn | stats answer ms p50 / max | load worker CPU | CPU1 busy | others CPU0 "
        "| steal CPU0 | ok |\n|---|" + "---:|" * 21 + "---|")


def change(new, old):
    if new is None or old is None:
        return "-"
    if old == 0:
        return "=" if new == 0 else f"+{new:g}" if isinstance(new, (int, float)) else "-"
    pct = 100 * (new - old) / abs(old)
    return "=" if abs(pct) < 0.5 else f"{pct:+.0f}%"


def markdown(records, history):
    c = next((r for r in records if "cpu" in r), {})
    out = [f"Conditions: {c.get('cpu')}, Python {c.get('python')}, kernel {c.get('kernel')}, "
           f"ssed {c.get('git_rev')}, load average {' '.join(c.get('loadavg') or [])} at {c.get('time')}; "
           "daemon pinned to CPU 0, load workers and publisher to CPU 1.", "", HEAD]
    out += [row(r) for r in records]
    out += ["", "Change against the last recorded run of the same scenario:", "",
            "| scenario | previous run | " + " | ".join(t for _, t, _, _ in COMPARED) + " |",
            "|---|---|" + "---:|" * len(COMPARED)]
    for r in records:
        if "error" in r:
            continue
        old = next((h for h in reversed(history) if h.get("scenario") == r["scenario"] and "error" not in h), None)
        if old is None:
            out.append(f"| {r['scenario']} | none | " + " | ".join(
                fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt, _ in COMPARED) + " |")
            continue
        cells = [f"{fmt.format(r[k]) if r.get(k) is not None else '-'} ({change(r.get(k), old.get(k))})"
                 for k, _, fmt, _ in COMPARED]
        out.append(f"| {r['scenario']} | {old.get('time')} {old.get('git_rev')} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def load_history(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        print(f"{path}: a line that is not JSON skipped", file=sys.stderr)
    except FileNotFoundError:
        pass
    return out


def append_history(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
