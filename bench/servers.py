"""The servers bench/cluster.py starts and always stops: its own redis-server (AOF with
`appendfsync always`, as the README asks of a cluster's Redis), ssed nodes (clustered or not,
`reuse_port` or not) and nginx + nchan in its Redis mode. Each is pinned to the CPUs it is
given, and each knows its process tree (for CPU seconds from /proc)."""
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import clusterload
import load
import procstat

ROOT = load.ROOT
sys.path.insert(1, ROOT)
from ssed import resp  # noqa: E402  (RESP2 by hand: the bench's tiny Redis client)

CPU0, CPU1, BOTH = {0}, {1}, {0, 1}
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"


def _pinned(cpus):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def pre():
        if cpus:
            os.sched_setaffinity(0, cpus)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return pre


def _stop(proc, timeout=5):
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Redis:
    """redis-server on a free port of 127.0.0.1 in `dir`; stop() and start() again keep the
    port and the AOF (a Redis restart that loses nothing acknowledged)."""

    def __init__(self, dir, cpus):
        self.dir, self.cpus = dir, cpus
        self.port = load.free_port()
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout=10):
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log"),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_pinned(self.cpus))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode})")
            try:
                if self.call("PING", timeout=0.25) == "PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.01)     # not listening yet: nothing to wait on
        self.stop()
        raise RuntimeError(f"redis-server not answering PING in {timeout} s")

    def stop(self):
        if self.proc is not None:
            _stop(self.proc)

    def pids(self):
        return [self.proc.pid]

    def call(self, *args, timeout=10):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(resp.command(*args))
            parser = resp.Parser()
            while (reply := parser.get()) is resp.NEED:
                data = s.recv(1 << 20)
                if not data:
                    raise ConnectionError("redis closed the connection")
                parser.feed(data)
            return reply

    def info_stat(self, name):
        for line in self.call("INFO", "stats").decode().splitlines():
            if line.startswith(name + ":"):
                return int(line.split(":", 1)[1])
        return None

    def seq_order(self, key, start="-"):
        """The `seq` of every entry of stream `key` from `start`, in Redis's order."""
        out = []
        while True:
            batch = self.call("XRANGE", key, start, "+", "COUNT", 10000)
            for entry_id, fields in batch:
                data = dict(zip(fields[::2], fields[1::2])).get(b"d", b"")
                if data.startswith(b"seq="):
                    out.append(int(data.split()[0][4:]))
            if len(batch) < 10000:
                return out
            start = "(" + batch[-1][0].decode()


SSED_INI = load.INI.replace("listen = 127.0.0.1:{port}\ncontrol = ctl.sock\n",
                            "listen = 127.0.0.1:{port}\ncontrol = ctl.sock\nreuse_port = {reuse}\n")
CLUSTER_INI = """
[cluster]
redis = {redis}
prefix = bench
node = {name}
"""


class Node:
    """`python3 -m ssed` on bench/load.py's config (every feature on), in its own directory,
    pinned to `cpus`; clustered when given a Redis URL. Ready on READY=1 and, in a cluster,
    once `cluster` says up."""

    def __init__(self, tmp, name, port, cpus, n, redis_url=None, reuse_port=False, root=ROOT,
                 profile=None):
        self.name, self.port = name, port
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.ctl_path = os.path.join(self.dir, "ctl.sock")
        ini = os.path.join(self.dir, "node.ini")
        with open(ini, "w") as f:
            f.write(SSED_INI.format(port=port, limit=n + 100, reuse=str(reuse_port).lower()))
            if redis_url:
                f.write(CLUSTER_INI.format(redis=redis_url, name=name))
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        address = f"ssed-bench-cluster-{os.getpid()}-{name}-{port}"
        notify.bind("\0" + address)
        env = dict(os.environ, PYTHONPATH=root, NOTIFY_SOCKET="@" + address)
        env.pop("JOURNAL_STREAM", None)
        self.log_path = os.path.join(self.dir, "ssed.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []),
                 "-m", "ssed", "-c", ini, "--log-level", "warning"], cwd=root,
                env=env, preexec_fn=_pinned(cpus), stdin=subprocess.DEVNULL, stdout=log,
                stderr=log)
        load.wait_ready(notify, self, name)
        if redis_url:
            self.wait_up()

    def ask(self, cmd):
        control = load.Control(self.ctl_path)
        try:
            return control.ask(cmd)
        finally:
            control.sock.close()

    def wait_up(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ask(b'{"cmd":"cluster"}\n').get("up"):
                return
            time.sleep(0.05)     # the node's handshake with Redis: polled through `cluster`
        raise RuntimeError(f"{self.name}: cluster not up in {timeout} s: {self.log_tail()}")

    def metric(self, name):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def delivered(self):
        return self.ask(b'{"cmd":"stats"}\n')["events_delivered"]

    def log_tail(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-800:].decode(errors="replace")

    def pids(self):
        return procstat.tree(self.proc.pid)

    def stop(self):
        _stop(self.proc)


NGINX_CONF = """load_module {module};
user root;
daemon off;
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {conns}; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 10000000;     # the publisher's one keep-alive connection (default 1000)
  keepalive_timeout 300s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  nchan_shared_memory_size 128M;
  nchan_redis_url {redis};
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /sub {{
      nchan_subscriber eventsource;
      nchan_channel_id bench;
      nchan_use_redis on;
      nchan_subscriber_first_message newest;
    }}
    location = /pub {{
      nchan_publisher;
      nchan_channel_id bench;
      nchan_use_redis on;
      nchan_message_buffer_length 100;
      nchan_message_timeout 60s;
    }}
  }}
}}
"""


class Nchan:
    """nginx + nchan in its Redis mode (`nchan_redis_url`, `nchan_use_redis on`), `workers`
    worker processes, pinned to `cpus`; ready once /pub answers."""

    def __init__(self, tmp, name, cpus, redis_url, workers=2):
        if not shutil.which("nginx") or not os.path.exists(NCHAN_MODULE):
            raise RuntimeError("nginx or the nchan module is not installed "
                               "(sh ../shared/bench-ref/setup.sh)")
        self.name, self.port = name, load.free_port()
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(module=NCHAN_MODULE, dir=self.dir, port=self.port,
                                      nofile=nofile, conns=nofile - 10, workers=workers,
                                      redis=redis_url))
        self.log_path = os.path.join(self.dir, "error.log")
        self.proc = subprocess.Popen(
            ["nginx", "-p", self.dir, "-e", self.log_path, "-c", conf],
            preexec_fn=_pinned(cpus), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/pub", timeout=2) as r:
                    r.read()
                return
            except OSError as exc:
                if getattr(exc, "code", None):       # an HTTP answer: nginx serves
                    return
            time.sleep(0.05)     # not listening yet
        self.stop()
        raise RuntimeError(f"nginx not answering in 10 s: {self.log_tail()}")

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-800:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def pids(self):
        return procstat.tree(self.proc.pid)

    def stop(self):
        _stop(self.proc)


class Setup:
    """What one run measures: the servers (CPU read from each), the subscribers (one worker
    per (port, count)), the publish targets, and the Redis (if any)."""

    def __init__(self, label, servers_, plan, targets, load_cpus, redis=None, path="/bench"):
        self.label, self.servers, self.plan, self.path = label, servers_, plan, path
        self.targets, self.load_cpus, self.redis = targets, load_cpus, redis
        self.redis_from = "-"        # where the run's events start in Redis's stream


# ---------------------------------------------------------------------- the set-ups of bench/cluster.py

def ssed_cluster(stack, tmp, args, label="ssed-cluster", n=None, node_cpus=(CPU0, CPU0, CPU0),
                 shares=None):
    """Redis on CPU 1 with the load; one node per entry of node_cpus, each with its share of
    subscribers (default n each), publishes spread over every node."""
    n = n or args.n
    shares = shares or [n] * len(node_cpus)
    redis = Redis(tmp, CPU1).start()
    stack.callback(redis.stop)
    nodes = []
    for i, cpus in enumerate(node_cpus):
        node = Node(tmp, f"n{i + 1}", load.free_port(), cpus, max(shares[i], 100), redis.url)
        stack.callback(node.stop)
        nodes.append(node)
    plan = [(node.port, k) for node, k in zip(nodes, shares) if k]
    targets = [lambda node=node: clusterload.ControlTarget(node.ctl_path) for node in nodes]
    return Setup(label, nodes, plan, targets, CPU1, redis)


def ssed_single(stack, tmp, args, n=None, workers=3, label="ssed-single"):
    """One node on CPU 0 (no cluster) with `workers` x n subscribers and as many control
    connections publishing: the same load, without Redis."""
    n = n or args.n
    node = Node(tmp, "single", load.free_port(), CPU0, n * workers)
    stack.callback(node.stop)
    targets = [lambda: clusterload.ControlTarget(node.ctl_path)] * workers
    return Setup(label, [node], [(node.port, n)] * workers, targets, CPU1)


def nchan_cluster(stack, tmp, args):
    redis = Redis(tmp, CPU1).start()
    stack.callback(redis.stop)
    insts = []
    for i in range(3):
        inst = Nchan(tmp, f"nginx{i + 1}", CPU0, redis.url, workers=2)
        stack.callback(inst.stop)
        insts.append(inst)
    targets = [lambda inst=inst: clusterload.HttpTarget(inst.port) for inst in insts]
    return Setup("nchan-redis", insts, [(i.port, args.n) for i in insts], targets, CPU1, redis,
                 path="/sub")


def reuse_pair(stack, tmp, args):
    """Two clustered nodes on one port (reuse_port), one per CPU; Redis and the load float."""
    redis = Redis(tmp, BOTH).start()
    stack.callback(redis.stop)
    port, nodes = load.free_port(), []
    for i, cpus in enumerate((CPU0, CPU1)):
        node = Node(tmp, f"r{i + 1}", port, cpus, args.sat_n, redis.url, reuse_port=True)
        stack.callback(node.stop)
        nodes.append(node)
    half = args.sat_n // 2
    return Setup("ssed-reuse-port-x2", nodes, [(port, half), (port, args.sat_n - half)],
                 [lambda: clusterload.ControlTarget(nodes[0].ctl_path)], BOTH, redis)


def sat_single(stack, tmp, args):
    node = Node(tmp, "single", load.free_port(), CPU0, args.sat_n)
    stack.callback(node.stop)
    half = args.sat_n // 2
    return Setup("ssed-one-node", [node], [(node.port, half), (node.port, args.sat_n - half)],
                 [lambda: clusterload.ControlTarget(node.ctl_path)], CPU1)
