"""What /proc says about the daemon and the CPUs: CPU seconds of a process tree (children
included, reaped ones too), PSS/RSS, and per-CPU busy and steal ticks (to tell how much of the
daemon's CPU someone else took during a run)."""
import os

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree(pid):
    """pid and its live descendants."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parent[int(d)] = int(_stat(d)[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def cpu_s(pids):
    """utime + stime (+ cutime + cstime: children already reaped) summed over pids."""
    total = 0
    for pid in pids:
        try:
            f = _stat(pid)
            total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def pss_kib(pids):
    """(PSS, RSS) in KiB summed over pids, from smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return [pss, rss]


def cpu_ticks():
    """{"cpu0": (busy, steal), ...} from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:9]]
                out[line.split()[0]] = (v[0] + v[1] + v[2] + v[5] + v[6], v[7])
    return out


def noise(t1, t2, server_cpu_s, wall, server_cpu, load_cpus):
    """Others' share of the server's CPU, steal, and how busy the load CPUs were (percent)."""
    def busy(cpu):
        return (t2[f"cpu{cpu}"][0] - t1[f"cpu{cpu}"][0]) / TICK

    def steal(cpu):
        return round(100 * (t2[f"cpu{cpu}"][1] - t1[f"cpu{cpu}"][1]) / TICK / wall, 1)

    return {"others_cpu0_pct": round(max(0.0, 100 * (busy(server_cpu) - server_cpu_s) / wall), 1),
            "steal_pct": {f"cpu{c}": steal(c) for c in (server_cpu, *load_cpus)},
            "load_cpu_busy_pct": round(max(100 * busy(c) / wall for c in load_cpus), 1)}
