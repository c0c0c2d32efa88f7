#!/usr/bin/env python3
"""What `auth = jwt` adds to a connect: CPU microseconds per connect of an in-process storm
(the loop accepting, reading, routing and opening N streams, as bench/connect.py's storm),
without auth, with HS256 and with RS256-2048 tokens, each client with a token of its own
(a reconnect storm of distinct users: no cache hit) and, for RS256, all with one token (the
verified-token cache). Runs alternate, `--rounds` times, so the figures are paired.

    python3 bench/jwtconnect.py [--n 2000] [--rounds 3] [--root DIR]

Needs `openssl` (the RSA key). Token signing happens before the clock starts.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = b"bench-secret-bench-secret-bench-secret-48b!!"
DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")   # SHA-256


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HS_HEADER = b64(b'{"alg":"HS256","typ":"JWT"}')
RS_HEADER = b64(b'{"alg":"RS256","typ":"JWT"}')


def claims(i):
    return {"sub": f"user{i}", "exp": int(time.time()) + 3600,
            "ssed": {"subscribe": ["/bench"]}}


def hs_token(i):
    signing = f"{HS_HEADER}.{b64(json.dumps(claims(i)).encode())}"
    return f"{signing}.{b64(hmac.new(SECRET, signing.encode(), hashlib.sha256).digest())}"


def rsa_key(tmp):
    """A 2048-bit key made by openssl: its PEM public key file, n and d."""
    private, public = os.path.join(tmp, "k.pem"), os.path.join(tmp, "pub.pem")
    subprocess.run(["openssl", "genrsa", "-out", private, "2048"], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", private, "-pubout", "-out", public], check=True,
                   capture_output=True)
    text = subprocess.run(["openssl", "rsa", "-in", private, "-text", "-noout"], check=True,
                          capture_output=True, text=True).stdout

    def number(name):
        block = re.search(rf"{name}:\s*\n((?:\s+[0-9a-f:]+\n)+)", text).group(1)
        return int(re.sub(r"[\s:]", "", block), 16)
    return public, number("modulus"), number("privateExponent")


def rs_token(i, n, d):
    signing = f"{RS_HEADER}.{b64(json.dumps(claims(i)).encode())}"
    digest = DIGEST_INFO + hashlib.sha256(signing.encode()).digest()
    k = (n.bit_length() + 7) // 8
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(digest)) + b"\x00" + digest
    return f"{signing}.{b64(pow(int.from_bytes(block, 'big'), d, n).to_bytes(k, 'big'))}"


def storm(root, ini, tokens, tmp):
    """CPU microseconds per connect to open len(tokens) streams (None: no token), counting
    only the loop's work: clients connect and send 500 at a time (not counted; more would
    overflow the listen backlog), then the loop serves them (counted)."""
    sys.path.insert(0, root)
    from ssed import config as configmod
    from ssed.hub import Hub
    from ssed.loop import Loop
    from ssed.systemd import Notifier

    def log(level, text):
        pass
    log.debug = False
    hub = Hub(configmod.parse(ini, os.path.join(tmp, "b.ini")), log, now=time.time())
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    loop = Loop(hub, [listener], None, log, lambda: [], Notifier({}))
    hub.start()
    loop.start()
    clients, spent = [], 0.0
    for first in range(0, len(tokens), 500):
        for tok in tokens[first:first + 500]:
            c = socket.create_connection(listener.getsockname())
            auth = f"Authorization: Bearer {tok}\r\n" if tok else ""
            c.send(f"GET /bench HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            clients.append(c)
        start = time.process_time()
        end = time.monotonic() + 60
        while hub.client_count < len(clients) and time.monotonic() < end:
            loop.turn(0.5)
        spent += time.process_time() - start
    if hub.client_count != len(tokens):
        sys.exit(f"served {hub.client_count} of {len(tokens)}")
    return spent * 1e6 / len(tokens)


def child(root, kind, n, tmp):
    """One storm in a fresh process, so that no cache or heap carries over: its figure."""
    out = subprocess.run([sys.executable, __file__, "--one", kind, "--n", str(n),
                          "--root", root, "--tmp", tmp], capture_output=True, text=True,
                         timeout=600)
    if out.returncode:
        sys.exit(f"{kind}: {out.stderr[-500:]}")
    return float(out.stdout.split()[-1])


def one(kind, n, root, tmp):
    base = ("[ssed]\nlisten = 127.0.0.1:0\nmax_clients = 100000\nmax_clients_per_ip = 100000\n"
            "index = false\nretry = 0\n")
    if kind == "none":
        ini, tokens = base + "[/bench]\n", [None] * n
    elif kind == "hs256":
        ini = base + f"jwt_key = hs256:{tmp}/secret\n[/bench]\nauth = jwt\n"
        tokens = [hs_token(i) for i in range(n)]
    else:
        with open(os.path.join(tmp, "rsa.json")) as f:
            key = json.load(f)
        ini = base + f"jwt_key = rs256:{tmp}/pub.pem\n[/bench]\nauth = jwt\n"
        distinct = kind == "rs256"
        tokens = [rs_token(i if distinct else 0, key["n"], key["d"]) for i in range(n)]
        if not distinct:
            tokens = [tokens[0]] * n
    print(f"{storm(root, ini, tokens, tmp):.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=ROOT)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one")
    ap.add_argument("--tmp")
    a = ap.parse_args()
    if a.one:
        return one(a.one, a.n, a.root, a.tmp)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "secret"), "wb") as f:
            f.write(SECRET)
        public, n, d = rsa_key(tmp)
        with open(os.path.join(tmp, "rsa.json"), "w") as f:
            json.dump({"n": n, "d": d}, f)
        kinds = ("none", "hs256", "rs256", "rs256-one-token")
        figures = {k: [] for k in kinds}
        for _ in range(a.rounds):
            for kind in kinds:
                figures[kind].append(child(a.root, kind, a.n, tmp))
    print(f"CPU us per connect, {a.n} connects a storm, {a.rounds} rounds alternating "
          f"(ssed in {a.root}):")
    for kind in kinds:
        runs = figures[kind]
        print(f"  {kind:16} median {statistics.median(runs):7.1f}   runs "
              + " ".join(f"{r:.1f}" for r in runs))


if __name__ == "__main__":
    main()
