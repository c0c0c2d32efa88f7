#!/usr/bin/env python3
"""The ceiling for ssed's design, for `bench/load.py --target bare`: a bare selectors loop that
speaks just enough of ssed's protocols for the benchmark (GET -> 200 event-stream head; control
socket lines `{"cmd":"publish",...}` and `{"cmd":"stats"}`, one answer line each) and fans out
one pre-encoded frame per event with one send() per client, buffering only what a socket does
not take. No history, limits, keepalive, metrics or logging: what is left is the cost of the
loop and the kernel. Also a check of the load client against a server that does nearly
nothing per delivery.

    python3 bench/bare.py --port P --control PATH      (READY=1 to $NOTIFY_SOCKET when up)
"""
import argparse
import json
import os
import selectors
import socket

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Connection: close\r\n\r\nretry: 3000\n\n")
R, W = selectors.EVENT_READ, selectors.EVENT_WRITE


def serve(port, control):
    sel = selectors.DefaultSelector()
    lsn = socket.create_server(("127.0.0.1", port), backlog=4096)
    lsn.setblocking(False)
    if os.path.exists(control):
        os.unlink(control)
    ctl = socket.socket(socket.AF_UNIX)
    ctl.bind(control)
    ctl.listen(16)
    ctl.setblocking(False)
    sel.register(lsn, R, "accept")
    sel.register(ctl, R, "accept-ctl")
    clients = {}              # socket -> pending bytes (b"" when none)
    heads = {}                # socket -> request bytes so far
    ctls = {}                 # control socket -> line buffer
    counters = {"events_published": 0, "events_delivered": 0, "clients": 0}
    notify = os.environ.get("NOTIFY_SOCKET")
    if notify:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
            n.connect("\0" + notify[1:] if notify.startswith("@") else notify)
            n.send(b"READY=1")

    def fanout(wire):
        for s, pending in clients.items():
            if pending:
                clients[s] = pending + wire
                continue
            try:
                k = s.send(wire)
            except BlockingIOError:
                k = 0
            except OSError:
                continue
            if k < len(wire):
                clients[s] = wire[k:]
                sel.modify(s, R | W, "stream")

    def command(line):
        req = json.loads(line)
        if req.get("cmd") == "publish":
            counters["events_published"] += 1
            seq = counters["events_published"]
            fanout(b"id: %d\ndata: %s\n\n" % (seq, req["data"].encode()))
            counters["events_delivered"] += len(clients)
            return {"ok": True, "id": str(seq), "delivered": len(clients)}
        if req.get("cmd") == "stats":
            return {"ok": True, **counters, "clients": len(clients)}
        return {"ok": False, "error": "unknown command"}

    while True:
        for key, mask in sel.select():
            s, kind = key.fileobj, key.data
            if kind == "accept":
                while True:
                    try:
                        c, _ = lsn.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    heads[c] = b""
                    sel.register(c, R, "head")
            elif kind == "accept-ctl":
                c, _ = ctl.accept()
                c.setblocking(False)
                ctls[c] = b""
                sel.register(c, R, "ctl")
            elif kind == "head":
                data = s.recv(8192)
                heads[s] += data
                if not data or b"\r\n\r\n" in heads[s]:
                    del heads[s]
                    if not data:
                        sel.unregister(s)
                        s.close()
                        continue
                    s.send(HEAD)
                    clients[s] = b""
                    sel.modify(s, R, "stream")
            elif kind == "stream":
                if mask & W and clients.get(s):
                    try:
                        k = s.send(clients[s])
                        clients[s] = clients[s][k:]
                    except BlockingIOError:
                        pass
                    except OSError:
                        clients[s] = b""
                    if not clients[s]:
                        sel.modify(s, R, "stream")
                if mask & R:
                    try:
                        data = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(s)
                        clients.pop(s, None)
                        s.close()
            elif kind == "ctl":
                data = s.recv(65536)
                if not data:
                    sel.unregister(s)
                    del ctls[s]
                    s.close()
                    continue
                *lines, ctls[s] = (ctls[s] + data).split(b"\n")
                s.sendall(b"".join(json.dumps(command(l)).encode() + b"\n" for l in lines if l.strip()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--control", required=True)
    a = ap.parse_args()
    try:
        serve(a.port, a.control)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
