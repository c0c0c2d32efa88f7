"""`make cluster-demo`: a throwaway Redis and the three nodes of conf/cluster-{1,2,3}.ini.

Redis runs on a free port of 127.0.0.1 (never 6379, so a system Redis is left alone), in a
temporary directory, without persistence. Each node runs a copy of its conf/cluster-N.ini
in that directory with three lines changed: `redis` (that port), `control` (a socket in the
directory) and, with --ports, `listen`. The script prints how to watch and publish, then
waits; Ctrl-C (or SIGTERM) stops the nodes, then Redis, and removes the directory. Every
wait is bounded, and nothing it started outlives it, even when it is killed (-9 included:
the children get SIGTERM when it dies).

    python3 conf/cluster-demo.py [--ports 8081,8082,8083]
"""
import argparse
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NODES = 3
START_TIMEOUT = 15.0    # seconds for Redis, then each node, to be ready
STOP_TIMEOUT = 10.0     # seconds for a process to exit after SIGTERM (then SIGKILL)


class DemoError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """In the child: SIGTERM when this script dies, however it dies."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG


def start(argv, log):
    """A child in a session of its own: Ctrl-C reaches this script alone, which then stops
    the nodes before Redis."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def wait_for(ready, what, proc, log, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"{what} exited with status {proc.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.05)
    raise DemoError(f"{what} not ready within {timeout:g} s:\n{tail(log)}")


def tail(log, lines=15):
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def redis_pings(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def healthy(port):
    """/healthz answers 200 once the node has read what Redis holds (503 until then)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def node_config(n, redis_port, listen_port, directory):
    """conf/cluster-N.ini with its redis, control (and listen) lines pointed at the demo's."""
    with open(os.path.join(HERE, f"cluster-{n}.ini"), encoding="utf-8") as f:
        text = f.read()
    changes = {"redis": f"redis://127.0.0.1:{redis_port}/0",
               "control": os.path.join(directory, f"cluster-{n}.sock")}
    if listen_port is not None:
        changes["listen"] = f"127.0.0.1:{listen_port}"
    for key, value in changes.items():
        text, found = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text, count=1)
        if not found:
            raise DemoError(f"conf/cluster-{n}.ini has no `{key} =` line")
    port = int(re.search(r"(?m)^listen\s*=\s*\S+:(\d+)", text).group(1))
    path = os.path.join(directory, f"cluster-{n}.ini")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path, port


def instructions(redis_port, redis_pid, nodes, directory):
    """What to try, with this run's ports, sockets and pids. `nodes`: (port, socket, pid)."""
    ctl = "python3 -m ssed.ctl"
    one, two, three = nodes
    print(f"ssed cluster demo: Redis on 127.0.0.1:{redis_port} (pid {redis_pid}, in memory "
          "only), three nodes:")
    for n, (port, sock, pid) in enumerate(nodes, 1):
        print(f"  node {n}: http://127.0.0.1:{port}/  (pid {pid}, control {sock})")
    print(f"""
Watch alice's channel on node 1 and on node 3 (a terminal each):
  curl -N localhost:{one[0]}/user/alice
  curl -N localhost:{three[0]}/user/alice
Publish on node 2 (from the repository root): both get it, with the same id.
  {ctl} -s {two[1]} publish /user/alice "hello from node 2"
Resume on another node with the last id you saw: nothing is missed.
  curl -N -H 'Last-Event-ID: ID' localhost:{two[0]}/user/alice
/time ticks on every node; its source runs on one, the holder of its lease:
  curl -N localhost:{three[0]}/time
  {ctl} -s {one[1]} cluster
Trouble: `kill -9` a node's pid and the others go on (the lease moves within 10 s);
`kill -STOP {redis_pid}` and publishes are refused within 5 s while streams stay open,
`kill -CONT {redis_pid}` and they resume, in order.
Logs: {directory}/*.log. Ctrl-C stops it all.""", flush=True)


def watch(procs, names):
    """Until Ctrl-C: say when one of them exits (killed by hand, to see what the others do),
    and keep the rest running."""
    told = set()
    while len(told) < len(procs):
        for proc, name in zip(procs, names):
            if proc not in told and proc.poll() is not None:
                told.add(proc)
                print(f"{name} (pid {proc.pid}) exited with status {proc.returncode}",
                      flush=True)
        time.sleep(0.2)
    raise DemoError("every process has exited")


def stop(procs):
    """SIGTERM to the nodes (they give up their leases), then to Redis; every wait bounded,
    and a second Ctrl-C does not cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for group in (procs[:-1], procs[-1:]):
        for proc in group:
            if proc.poll() is None:
                proc.terminate()
        for proc in group:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)


def run(args, directory):
    redis = shutil.which("redis-server")
    if redis is None:
        raise DemoError("redis-server not found: install it (apt-get install redis-server)")
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [None] * NODES
    if len(ports) != NODES:
        raise DemoError(f"--ports takes {NODES} ports")
    redis_port = free_port()
    nodes, procs = [], []      # procs: the nodes, newest first, then Redis
    try:
        log = os.path.join(directory, "redis.log")
        procs.append(start([redis, "--port", str(redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", directory], log))
        wait_for(lambda: redis_pings(redis_port), "redis-server", procs[-1], log)
        for n, port in enumerate(ports, 1):
            config, port = node_config(n, redis_port, port, directory)
            log = os.path.join(directory, f"node-{n}.log")
            procs.insert(0, start([sys.executable, "-m", "ssed", "-c", config], log))
            wait_for(lambda: healthy(port), f"node {n}", procs[0], log)
            nodes.append((port, os.path.join(directory, f"cluster-{n}.sock"), procs[0].pid))
        instructions(redis_port, procs[-1].pid, nodes, directory)
        watch(procs, names=[f"node {n}" for n in range(NODES, 0, -1)] + ["redis-server"])
    finally:
        stop(procs)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", help="the nodes' HTTP ports, comma-separated "
                        "(default: the listen of each conf/cluster-N.ini)")
    args = parser.parse_args()
    # Ctrl-C (even where a shell started this with SIGINT ignored) and SIGTERM alike.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    directory = tempfile.mkdtemp(prefix="ssed-cluster-demo.")
    try:
        run(args, directory)
    except KeyboardInterrupt:
        print("\nstopped: the nodes, then Redis", flush=True)
        return 0
    except DemoError as exc:
        print(f"cluster-demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
