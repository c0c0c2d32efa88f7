"""What native TLS costs the daemon (SPEC 14): deliveries per CPU-second over TLS against
plain TCP at each N (1,000 and 10,000 subscribers by default), in the same run; the server
CPU of a connect (TLS: handshake, request, stream) and so the microseconds a handshake adds;
and KiB per connection (PSS).

    python3 bench/tls.py [--n 1000,10000] [--events 200,50] [--key ec|rsa] [--size 100]

For each N, plain then TLS, each with a fresh daemon pinned to CPU 0 (`listen =
127.0.0.1:0`, with or without `tls_cert`): one load process pinned to CPU 1 connects N
streams one after the other (blocking; TLS 1.3, no certificate check on the client, ALPN
http/1.1), the daemon's PSS and CPU are read before and after; then E events of `--size`
bytes are published one at a time, each once every stream has the one before (closed loop:
one write per delivery, so TLS and plain do the same writes and no fan-out merges events),
and the daemon's CPU over that phase is divided among the N x E deliveries. The daemon's
certificate is a fresh self-signed one (`--key ec`: ECDSA P-256, what Let's Encrypt issues by
default; `rsa`: RSA-2048) made with the openssl CLI. Only the standard library.
"""
import argparse
import multiprocessing
import os
import resource
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from procstat import cpu_s, pss_kib  # noqa: E402

SERVER_CPU, LOAD_CPU = 0, 1


def make_pair(directory, key):
    new = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec"
           else ["-newkey", "rsa:2048"])
    subprocess.run(["openssl", "req", "-x509", *new, "-nodes", "-keyout", "key.pem", "-out",
                    "cert.pem", "-days", "2", "-subj", "/CN=localhost"], cwd=directory,
                   check=True, capture_output=True)


class Daemon:
    def __init__(self, directory, n, tls):
        ini = os.path.join(directory, "tls.ini" if tls else "plain.ini")
        with open(ini, "w") as f:
            f.write(f"[ssed]\nlisten = 127.0.0.1:0\ncontrol = {ini}.sock\nretry = 0\n"
                    f"max_clients = {n + 100}\nmax_clients_per_ip = {n + 100}\n"
                    "history = 0\nindex = false\nheader_timeout = 60\n"
                    + ("tls_cert = cert.pem\ntls_key = key.pem\n" if tls else "")
                    + "[/b]\n")

        def pin():
            os.sched_setaffinity(0, {SERVER_CPU})
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self.control = ini + ".sock"
        self.proc = subprocess.Popen([sys.executable, "-m", "ssed", "-c", ini],
                                     stderr=subprocess.PIPE, cwd=ROOT, preexec_fn=pin,
                                     env={**os.environ, "PYTHONPATH": ROOT})
        self.port = None
        for raw in self.proc.stderr:
            line = raw.decode()
            if "listening on 127.0.0.1:" in line:
                self.port = int(line.rsplit(":", 1)[1])
            if " ready" in line:
                break
        self.ctl = socket.socket(socket.AF_UNIX)
        self.ctl.connect(self.control)
        self.ctl_file = self.ctl.makefile("rb")

    def publish(self, data):
        self.ctl.sendall(b'{"cmd":"publish","service":"/b","data":"%s"}\n' % data)
        return self.ctl_file.readline()

    def cpu(self):
        return cpu_s([self.proc.pid])

    def pss(self):
        return pss_kib([self.proc.pid])[0]

    def stop(self):
        self.ctl.close()
        self.proc.terminate()
        self.proc.wait(30)


def load(pipe):
    """The load process: connect, then count events until told the target, per event."""
    os.sched_setaffinity(0, {LOAD_CPU})
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    socks = []
    while True:
        msg = pipe.recv()
        if msg[0] == "connect":
            _, port, n, tls = msg
            socks = [_stream(port, ctx if tls else None) for _ in range(n)]
            pipe.send("connected")
        elif msg[0] == "read":
            _count(pipe, socks, msg[1])
        elif msg[0] == "close":
            for s in socks:
                s.close()
            socks = []
            pipe.send("closed")
        else:
            return


def _stream(port, ctx):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if ctx is not None:
        sock = ctx.wrap_socket(sock)
    sock.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise SystemExit("stream closed before its head")
        head += data
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    sock.setblocking(False)
    return sock


def _count(pipe, socks, events):
    """Read every stream; after each event has reached all of them, say so."""
    sel = selectors.DefaultSelector()
    seen, tail = {}, {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ, s)
        seen[s] = 0
        tail[s] = b"\n"     # (the head ended with a line end)
    need = len(socks)
    for k in range(1, events + 1):
        done = sum(1 for v in seen.values() if v >= k)
        while done < need:
            for key, _ in sel.select(30):
                s = key.data
                while True:
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, ssl.SSLWantReadError):
                        break
                    if not data:
                        raise SystemExit("a stream closed")
                    before = seen[s]
                    data = tail[s] + data      # an event's start may straddle two reads
                    seen[s] += data.count(b"\ndata: ")
                    tail[s] = data[-6:]
                    if before < k <= seen[s]:
                        done += 1
                    if not isinstance(s, ssl.SSLSocket) or not s.pending():
                        break
        pipe.send(k)
    sel.close()


def phase(directory, n, events, size, tls, pipe):
    d = Daemon(directory, n, tls)
    try:
        time.sleep(0.5)
        pss0, cpu0 = d.pss(), d.cpu()
        pipe.send(("connect", d.port, n, tls))
        assert pipe.recv() == "connected"
        cpu1 = d.cpu()
        time.sleep(2.0)
        pss1 = d.pss()
        pipe.send(("read", events))
        payload = b"x" * size
        cpu2 = d.cpu()
        start = time.monotonic()
        for k in range(1, events + 1):
            d.publish(payload)
            assert pipe.recv() == k
        wall = time.monotonic() - start
        cpu3 = d.cpu()
        pipe.send(("close",))
        assert pipe.recv() == "closed"
    finally:
        d.stop()
    return {"connect_us": (cpu1 - cpu0) / n * 1e6, "kib_per_conn": (pss1 - pss0) / n,
            "deliv_per_cpu_s": n * events / max(cpu3 - cpu2, 0.01), "cpu_s": cpu3 - cpu2,
            "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1000,10000")
    ap.add_argument("--events", default="200,50", help="events published at each N")
    ap.add_argument("--size", type=int, default=100, help="bytes of each event's data")
    ap.add_argument("--key", choices=("ec", "rsa"), default="ec")
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    events = [int(x) for x in args.events.split(",")]
    events += events[-1:] * (len(ns) - len(events))
    os.sched_setaffinity(0, {LOAD_CPU})
    directory = tempfile.mkdtemp(prefix="ssed-tls-bench-")
    make_pair(directory, args.key)
    parent, child = multiprocessing.Pipe()
    worker = multiprocessing.Process(target=load, args=(child,))
    worker.start()
    rows = []
    try:
        for n, e in zip(ns, events):
            plain = phase(directory, n, e, args.size, False, parent)
            over = phase(directory, n, e, args.size, True, parent)
            rows.append((n, e, plain, over))
    finally:
        parent.send(("quit",))
        worker.join(10)
    print(f"\nTLS vs plain, {args.size}-byte events, certificate {args.key} "
          f"({'ECDSA P-256' if args.key == 'ec' else 'RSA-2048'}), TLS 1.3, "
          f"{ssl.OPENSSL_VERSION}, Python {sys.version.split()[0]}\n")
    print("| N | events | k deliv / CPU-s plain | TLS | TLS/plain | connect us plain | TLS "
          "| handshake us (diff) | KiB/conn plain | TLS |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, e, p, t in rows:
        print(f"| {n:,} | {e} | {p['deliv_per_cpu_s'] / 1000:.0f} | "
              f"{t['deliv_per_cpu_s'] / 1000:.0f} | "
              f"{t['deliv_per_cpu_s'] / p['deliv_per_cpu_s']:.2f} | {p['connect_us']:.0f} | "
              f"{t['connect_us']:.0f} | {t['connect_us'] - p['connect_us']:.0f} | "
              f"{p['kib_per_conn']:.1f} | {t['kib_per_conn']:.1f} |")


if __name__ == "__main__":
    main()
