#!/usr/bin/env python3
"""The cluster's figures (issue 15, SPEC 12), standard library only. Every run starts its own
redis-server (AOF, `appendfsync always`), ssed nodes on bench/load.py's config (every feature
on) and, for figure 5, nginx + nchan, and always stops them. Load: bench/clusterload.py
(bench/streams.py's workers, one per node's share, checking every event and each stream's
order; an open-loop publisher spreading `seq=<n> t=<ns>` over the nodes' control sockets).

  1  3 nodes + Redis vs one node, 3 x N subscribers (N = --n, 3,000), R events/s (--rate,
     100) spread over 3 control sockets for --duration s (60): lost, duplicated, identical
     order on every stream (and equal to Redis's), p50/p99 publish-to-client latency.
  2  CPU per delivery of one node in a cluster (nodes 2 and 3 publish, on the other CPU)
     against a single node, N subscribers, R events/s.
  3  two nodes sharing a port (`reuse_port`) vs one node, --sat-n (10,000) subscribers, a rate
     ladder (--sat-rates) on the same connections: deliveries/s with nothing lost and p99 < 1 s.
  4  Redis stopped for --outage s (5) in the middle of a 3-node run and started again on its
     port with its AOF: reconnects per second per node, Redis back -> first delivery, lost.
  5  nginx + nchan, Redis mode, 2 workers per instance, 3 instances with figure 1's load:
     deliveries per server CPU-second, and whether every stream saw one order.

    python3 bench/cluster.py                      # every figure (~15-20 min)
    python3 bench/cluster.py --figures 1,5 --duration 20 --repeat 2
Results: markdown on stdout; raw records appended to bench/results/cluster.jsonl.
"""
import argparse
import collections
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterload  # noqa: E402
import load  # noqa: E402
import procstat  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

ROOT = load.ROOT
CPU0, CPU1, BOTH = {0}, {1}, {0, 1}
EVENTS_KEY = "{bench}:events"


def start_workers(plan, cpus):
    ctx = multiprocessing.get_context("fork")
    out = []
    for _ in plan:
        here, there = ctx.Pipe()
        p = ctx.Process(target=clusterload.worker_main, args=(there, cpus), daemon=True)
        p.start()
        there.close()
        out.append((p, here))
    return out


def gather(workers, timeout, kind):
    return load.gather(workers, timeout, kind)


def run(setup, rates, duration, args, outage=None):
    """Connect, then one round per rate on the same streams; a record per round."""
    workers = start_workers(setup.plan, setup.load_cpus)
    records = []
    try:
        timeout = 30 + sum(n for _, n in setup.plan) / 200
        for (_, pipe), (port, n) in zip(workers, setup.plan, strict=True):
            pipe.send(("connect", "127.0.0.1", port, setup.path, n, 256, timeout))
        conns = gather(workers, timeout + 10, "connected")
        pids = [s.pids() for s in setup.servers]
        idle0, t0 = [procstat.cpu_s(p) for p in pids], time.monotonic()
        time.sleep(args.settle)
        idle = [(procstat.cpu_s(p) - c) / (time.monotonic() - t0) for p, c in zip(pids, idle0)]
        seq = 0
        for i, rate in enumerate(rates):
            rec = one_round(setup, workers, rate, duration, args, seq, keep=i < len(rates) - 1,
                            outage=outage)
            rec["connected"] = [c["connected"] for c in conns]
            rec["connect_failed"] = sum(c["failed"] for c in conns)
            for server, rate_idle in zip(rec["servers"], idle):
                # CPU per event published, beyond what the server uses idle (settle time)
                server["idle_cpu_pct"] = round(100 * rate_idle, 1)
                server["us_per_event"] = round(1e6 * (server["cpu_s"] - rate_idle * rec["wall_s"])
                                               / rec["published"], 1)
            seq = rec["last_seq"]
            records.append(rec)
            print(f"  {one_line(rec)}", file=sys.stderr, flush=True)
            if len(rates) > 1 and not passes(rec):
                break        # saturated: the next rates would start behind this one's backlog
    finally:
        for p, pipe in workers:
            try:
                pipe.send(("quit",))
            except OSError:
                pass
            p.join(5)
            if p.is_alive():
                p.kill()
    return records


def one_round(setup, workers, rate, duration, args, seq0, keep, outage):
    rec = {"label": setup.label, "rate": rate, "duration": duration,
           "subscribers": sum(n for _, n in setup.plan), **report.conditions(ROOT)}
    targets = [make() for make in setup.targets]
    pub = clusterload.Publisher(targets, rate, first_seq=seq0 + 1)
    delivered0 = [s.delivered() if hasattr(s, "delivered") else None for s in setup.servers]
    metrics0 = [s.metric("ssed_cluster_reconnects_total") if outage else None for s in setup.servers]
    pids = [s.pids() for s in setup.servers]
    cpu0, ticks0, t0 = [procstat.cpu_s(p) for p in pids], procstat.cpu_ticks(), time.monotonic()
    for _, pipe in workers:
        pipe.send(("run",))
    hook = Outage(setup.redis, *outage) if outage else None
    last = pub.run(duration, hook)
    if hook:
        hook.finish()
    pub.wait_answers(60)          # nchan answers late under load (30 s seen)
    for _, pipe in workers:
        pipe.send(("end", last, args.grace, pub.unacked(), keep))
    results = gather(workers, args.grace + 60, "result")
    wall = time.monotonic() - t0
    cpu1, ticks1 = [procstat.cpu_s(p) for p in pids], procstat.cpu_ticks()
    rec["last_seq"] = last
    rec["servers"] = [{"name": s.name, "cpu_s": round(b - a, 2),
                       "delivered": (s.delivered() - d0) if d0 is not None else None}
                      for s, a, b, d0 in zip(setup.servers, cpu0, cpu1, delivered0)]
    if setup.redis is not None and setup.label.startswith("ssed"):
        rec["redis_digest"] = str(clusterload.order_digest(
            [s for s in setup.redis.seq_order(EVENTS_KEY, setup.redis_from) if s <= last]))
    rec.update(figures(results, pub, seq0, wall, sum(cpu1) - sum(cpu0)))
    rec.update(procstat.noise(ticks0, ticks1, sum(cpu1) - sum(cpu0), wall, 0, (1,)))
    if hook:
        rec["outage"] = hook.figures(results, pub, setup, metrics0)
    pub.close()
    return rec


def figures(results, pub, seq0, wall, server_cpu):
    hist, digests = {}, collections.Counter()
    for r in results:
        for b, c in r["hist"].items():
            hist[b] = hist.get(b, 0) + c
        digests.update(r["digests"])
    p50, p99, mx = report.hist_percentiles(hist)
    received = sum(r["received"] for r in results)
    last_ns = max(r["last_recv_ns"] for r in results)
    span = (last_ns - pub.start_ns) / 1e9 if last_ns > pub.start_ns else 0
    published = pub.seq - seq0
    answers = report.percentiles([x * 1e3 for x in pub.rtt]) or {}
    return {
        "published": published, "acked": len(pub.acked), "refused": len(pub.refused),
        "unknown": len(pub.unknown), "first_refusal": next(iter(pub.refused.values()), None),
        "pub_rate": round(published / (pub.elapsed + 1 / pub.rate), 1),
        "pub_lag_ms": round(pub.lag_ms, 1), "answer_p99_ms": answers.get("p99"),
        "received": received, "deliveries_per_s": round(received / span) if span else 0,
        "lost": sum(r["lost"] for r in results), "dup": sum(r["dups"] for r in results),
        "ooo": sum(r["ooo"] for r in results),
        "unacked_seen": sum(r["unacked_seen"] for r in results),
        "streams": [r["streams"] for r in results], "closed": sum(r["closed"] for r in results),
        "incomplete": sum(r["incomplete"] for r in results),
        "orders": len(digests), "digest": digests.most_common(1)[0][0] if digests else None,
        "digest_counts": dict(digests),
        "p50_ms": p50, "p99_ms": p99, "max_ms": mx,
        "per_worker_p99_ms": [report.hist_percentiles(r["hist"])[1] for r in results],
        "srv_cpu_s": round(server_cpu, 2), "wall_s": round(wall, 2),
        "k_deliv_per_cpu_s": round(received / server_cpu / 1000, 1) if server_cpu else None,
        "client_cpu_pct": [round(100 * r["cpu_run_s"] / r["wall_run_s"], 1) if r["wall_run_s"]
                           else None for r in results],
        "timelines": [r["timeline"] for r in results],
    }


class Outage:
    """The publisher's hook: stop Redis at `at` s into the run, start it again (same port,
    its AOF) `length` s later. Runs in a thread, so the publisher keeps its schedule."""

    def __init__(self, redis, at, length):
        self.redis, self.at, self.length = redis, at, length
        self.thread = None
        self.down_ns = self.back_ns = None

    def __call__(self, elapsed):
        if self.thread is None and elapsed >= self.at:
            self.thread = threading.Thread(target=self._outage, daemon=True)
            self.thread.start()

    def _outage(self):
        self.redis.stop()
        self.down_ns = time.time_ns()
        time.sleep(self.length)            # the outage itself
        self.redis.start()
        self.back_ns, self.back_at = time.time_ns(), time.monotonic()      # PING answered

    def finish(self):
        if self.thread is not None:
            self.thread.join(30)

    def figures(self, results, pub, setup, metrics0):
        down_s = (self.back_ns - self.down_ns) / 1e9
        slot = self.back_ns // clusterload.TIMELINE_NS
        out = {"down_s": round(down_s, 2), "nodes": []}
        for i, (server, r) in enumerate(zip(setup.servers, results)):
            after = [int(k) for k, v in r["timeline"].items() if int(k) >= slot and v]
            first = (min(after) + 1) * clusterload.TIMELINE_NS - self.back_ns if after else None
            reconnects = server.metric("ssed_cluster_reconnects_total") - metrics0[i]
            acks = [t for s, (t, ok) in pub.answer_at.items()
                    if ok and t >= self.back_at and (s - pub.first) % len(setup.targets) == i]
            out["nodes"].append({"node": server.name, "reconnects": reconnects,
                                 "reconnects_per_s": round(reconnects / down_s, 2),
                                 "back_to_first_delivery_ms": round(first / 1e6) if first else None,
                                 "back_to_first_ack_ms": round((min(acks) - self.back_at) * 1e3)
                                 if acks else None})
        out["redis_connections_after_back"] = setup.redis.info_stat("total_connections_received")
        return out


def passes(r):
    """A saturation step passes: every stream stayed and got every acknowledged event, p99
    under 1 s, the publisher kept 95 % of its rate."""
    return (r["lost"] == 0 and r["dup"] == 0 and not r["closed"] and r["p99_ms"] is not None
            and r["p99_ms"] < 1000 and r["pub_rate"] >= 0.95 * r["rate"])


def saturation(records, label):
    ok = [r for r in records if r.get("label") == label and "error" not in r and passes(r)]
    return max(ok, key=lambda r: r["deliveries_per_s"]) if ok else None


def one_line(r):
    return (f"{r['label']} R={r['rate']:g}: {r['deliveries_per_s']:,}/s lost {r['lost']} dup "
            f"{r['dup']} orders {r['orders']} p50 {r['p50_ms']} p99 {r['p99_ms']} ms, "
            f"{r['k_deliv_per_cpu_s']}k/CPU-s, acked {r['acked']}/{r['published']}, "
            f"client {r['client_cpu_pct']} %, others CPU0 {r['others_cpu0_pct']} %")


# ---------------------------------------------------------------------- the figures

def measure(make, args, rates, duration, outage=None, probe=False):
    import contextlib
    with tempfile.TemporaryDirectory(prefix="ssed-bench-cluster-") as tmp, \
            contextlib.ExitStack() as stack:
        try:
            setup = make(stack, tmp, args)
            found = None
            if probe:        # first, on idle servers; the run's order check starts after it
                try:
                    found = clusterload.order_probe(setup, args.probe_events)
                except (RuntimeError, OSError) as exc:
                    found = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  order probe ({setup.label}): {found}", file=sys.stderr)
                if setup.redis is not None and setup.label.startswith("ssed"):
                    top = setup.redis.call("XREVRANGE", EVENTS_KEY, "+", "-", "COUNT", 1)
                    setup.redis_from = "(" + top[0][0].decode() if top else "-"
            records = run(setup, rates, duration, args, outage)
            if probe:
                records[-1]["order_probe"] = found
            return records
        except (RuntimeError, OSError) as exc:
            print(f"  {getattr(make, '__name__', make)}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return [{"label": getattr(make, "__name__", "?"), "error": f"{exc}"}]


def figure1(args):
    out = []
    for _ in range(args.repeat):
        out += measure(servers.ssed_single, args, [args.rate], args.duration)
        out += measure(servers.ssed_cluster, args, [args.rate], args.duration)
    return out


def figure2(args):
    def one_node_in_cluster(stack, tmp, args):
        return servers.ssed_cluster(stack, tmp, args, label="ssed-node-in-cluster",
                                    node_cpus=(CPU0, CPU1, CPU1), shares=[args.n, 0, 0])

    def one_single(stack, tmp, args):
        return servers.ssed_single(stack, tmp, args, workers=1, label="ssed-single-node")
    out = []
    for _ in range(args.repeat):
        out += measure(one_single, args, [args.rate], args.cpu_duration)
        out += measure(one_node_in_cluster, args, [args.rate], args.cpu_duration)
    return out


def figure3(args):
    rates = [float(r) for r in args.sat_rates.split(",")]
    return (measure(servers.sat_single, args, rates, args.sat_duration)
            + measure(servers.reuse_pair, args, rates, args.sat_duration))


def figure4(args):
    def outage_cluster(stack, tmp, args):
        return servers.ssed_cluster(stack, tmp, args, label="ssed-cluster-outage", n=args.outage_n)
    at = (args.outage_duration - args.outage) / 2
    return measure(outage_cluster, args, [args.rate], args.outage_duration,
                   outage=(at, args.outage))


def figure5(args, earlier):
    out = measure(servers.nchan_cluster, args, [args.rate], args.duration, probe=True)
    if not any(r.get("label") == "ssed-cluster" and "error" not in r for r in earlier):
        out += measure(servers.ssed_cluster, args, [args.rate], args.duration, probe=True)
    return out


# ---------------------------------------------------------------------- the report

def table(records):
    head = ("| run | R/s | subs | deliveries/s | lost | dup | orders (complete streams) | = Redis | p50 ms | "
            "p99 ms | server CPU s | k deliv / CPU-s | us / deliv | acked / published | "
            "client CPU % | others CPU0 % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['label']} | error: {r['error']} |")
            continue
        same = "" if "redis_digest" not in r else ("yes" if r["redis_digest"] == r["digest"]
                                                   and r["orders"] == 1 else "NO")
        us = round(r["srv_cpu_s"] / r["received"] * 1e6, 2) if r["received"] else None
        lines.append(
            f"| {r['label']} | {r['rate']:g} | {r['subscribers']:,} | {r['deliveries_per_s']:,} | "
            f"{r['lost']} | {r['dup']} | {r['orders']} ({sum(r['digest_counts'].values()):,}) | {same} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['srv_cpu_s']} | {r['k_deliv_per_cpu_s']} | {us} | "
            f"{r['acked']} / {r['published']} | {r['client_cpu_pct']} | {r['others_cpu0_pct']} |")
    return "\n".join(lines)


def node_lines(records):
    out = []
    for r in records:
        if "error" in r:
            continue
        parts = [f"{s['name']} {s['cpu_s']} CPU-s" + (f", {s['delivered']:,} deliv "
                 f"({s['cpu_s'] / s['delivered'] * 1e6:.2f} us each)" if s["delivered"] else "")
                 + (f", no subscribers: {s.get('us_per_event')} us per event published (beyond "
                    f"idle {s.get('idle_cpu_pct')} %)" if s["delivered"] == 0 else "")
                 for s in r["servers"]]
        out.append(f"- {r['label']} R={r['rate']:g}: " + "; ".join(parts))
        if "outage" in r:
            o = r["outage"]
            out.append(f"  - Redis down {o['down_s']} s: " + "; ".join(
                f"{x['node']}: {x['reconnects']:g} reconnects ({x['reconnects_per_s']}/s), "
                f"back -> first delivery <= {x['back_to_first_delivery_ms']} ms, first ack "
                f"{x['back_to_first_ack_ms']} ms" for x in o["nodes"])
                + f"; refused {r['refused']}, outcome unknown {r['unknown']} (seen by "
                  f"{r['unacked_seen']} stream-events), first refusal: {r['first_refusal']}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--figures", default="1,2,3,4,5")
    ap.add_argument("--n", type=int, default=3000, help="subscribers per node (figures 1, 2, 5)")
    ap.add_argument("--rate", type=float, default=100.0, help="events/s (figures 1, 2, 4, 5)")
    ap.add_argument("--duration", type=float, default=60.0, help="s of publishing (figures 1, 5)")
    ap.add_argument("--cpu-duration", type=float, default=20.0, help="s of publishing (figure 2)")
    ap.add_argument("--repeat", type=int, default=1, help="pairs of runs (figures 1, 2)")
    ap.add_argument("--sat-n", type=int, default=10000, help="subscribers (figure 3)")
    ap.add_argument("--sat-rates", default="10,20,40,80,160", help="the rate ladder (figure 3)")
    ap.add_argument("--sat-duration", type=float, default=8.0, help="s per rate (figure 3)")
    ap.add_argument("--outage", type=float, default=5.0, help="s of Redis down (figure 4)")
    ap.add_argument("--outage-n", type=int, default=1000, help="subscribers per node (figure 4)")
    ap.add_argument("--outage-duration", type=float, default=20.0, help="s of publishing (figure 4)")
    ap.add_argument("--probe-events", type=int, default=3000,
                    help="figure 5's order probe: events in one burst over the 3 servers")
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cluster.jsonl"))
    args = ap.parse_args(argv)
    if not BOTH <= os.sched_getaffinity(0):
        print("needs CPUs 0 and 1", file=sys.stderr)
        return 1
    os.sched_setaffinity(0, CPU1)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    todo = args.figures.split(",")
    results = {}
    for fig in todo:
        print(f"figure {fig} ...", file=sys.stderr, flush=True)
        recs = {"1": figure1, "2": figure2, "3": figure3, "4": figure4}.get(fig)
        results[fig] = recs(args) if recs else figure5(args, results.get("1", []))
    for fig, recs in results.items():
        print(f"\n### Figure {fig}\n\n{table(recs)}\n\n{node_lines(recs)}")
        if fig == "3":
            one, two = saturation(recs, "ssed-one-node"), saturation(recs, "ssed-reuse-port-x2")
            print("\nsaturation (best passing step): one node "
                  + (f"{one['deliveries_per_s']:,}/s at R={one['rate']:g}" if one else "none passed")
                  + "; two nodes (reuse_port) "
                  + (f"{two['deliveries_per_s']:,}/s at R={two['rate']:g}" if two else "none passed")
                  + (f"; ratio {two['deliveries_per_s'] / one['deliveries_per_s']:.2f}"
                     if one and two else ""))
    with open(args.out, "a") as f:
        for fig, recs in results.items():
            for r in recs:
                f.write(json.dumps({"figure": fig, **{k: v for k, v in r.items()
                                                      if k != "timelines"}}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
