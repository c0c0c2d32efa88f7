"""The nodes of the cluster (SPEC 12) as this node sees them: source leases (`SET NX PX` by
script: kept ¾ of `lease`, asked for every ¼) and heartbeats in `{PREFIX}:nodes`. Part of
cluster.py's Cluster (`cluster.nodes`); no socket."""
import json

from . import clustered, resp

# SET NX PX, or renew a lease this node holds: 1 when it holds it now.
LEASE = """\
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) return 1 end
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
RELEASE = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
HEARTBEAT = 1.0         # seconds between two node heartbeats (and lag readings)


class Nodes:
    def __init__(self, cluster, hub, log):
        self.cluster = cluster
        self.settings = cluster.settings
        self.node = cluster.node
        self.tag = cluster.tag
        self.nodes_key = f"{cluster.tag}:nodes"
        self.hub = hub
        self.log = log
        self.held = {}                  # path -> until when this node holds its lease
        self.next_lease = self.next_beat = 0.0
        self.beats = 0
        self.peers = {}                 # node -> (record, when this node saw it change)

    def leases(self, now):
        """Ask for (or renew) each source's lease every quarter of `lease`; Redis keeps a
        lease for three quarters of it, so that when its holder dies another node has it
        within `lease` (SPEC 12), and the holder may miss two renewals before it lapses."""
        lease = self.settings.lease
        self.next_lease = now + lease / 4
        for path in clustered.leased_paths(self.hub):
            command = resp.command("EVAL", LEASE, 1, f"{self.tag}:lease:{path}", self.node,
                                   int(lease * 750))
            self.cluster.writer.send(command,
                                     lambda reply, path=path: self._leased(path, reply, now), now)

    def _leased(self, path, reply, sent):
        if self.cluster.failed(reply):
            return
        if reply == 1:
            # Counted from when the renewal was sent, and a little short of the lease, so
            # that two nodes never both think they hold it.
            gained = not self.cluster.holds(path, self.hub.now)
            self.held[path] = sent + self.settings.lease * 0.75 * 0.9
            if gained:
                self.log("info", f"cluster: node {self.node} now runs the source of {path}")
                clustered.gained_lease(self.hub, path)
        elif self.held.pop(path, None) is not None:
            self.log("info", f"cluster: node {self.node} no longer runs the source of {path}")

    def heartbeat(self, now):
        self.next_beat = now + HEARTBEAT
        self.beats += 1
        record = json.dumps({"seen": round(self.hub.now, 3), "beat": self.beats,
                             "clients": self.hub.client_count,
                             "leases": sorted(p for p in self.held if self.cluster.holds(p, now))})
        cluster = self.cluster
        send = cluster.writer.send
        send(resp.command("HSET", self.nodes_key, self.node, record), cluster.checked, now)
        send(resp.command("HGETALL", self.nodes_key), self._nodes, now)
        send(resp.command("XREVRANGE", cluster.events_key, "+", "-", "COUNT", 1),
             cluster.newest_is, now)
        send(resp.command("GET", cluster.epoch_key), cluster.epoch_again, now)

    def _nodes(self, reply):
        if self.cluster.failed(reply):
            return
        now, seen = self.hub.now, {}
        for name, raw in zip(reply[::2], reply[1::2]):
            name = name.decode(errors="replace")
            old = self.peers.get(name)
            seen[name] = (raw, now if old is None or old[0] != raw else old[1])
        self.peers = seen

    def leave(self, now):
        """Shutting down: give up the leases this node holds, and leave the node list."""
        send = self.cluster.writer.send
        for path in list(self.held):
            send(resp.command("EVAL", RELEASE, 1, f"{self.tag}:lease:{path}", self.node),
                 self.cluster.checked, now)
        send(resp.command("HDEL", self.nodes_key, self.node), self.cluster.checked, now)
        self.held.clear()

    def seen(self, now):
        """The nodes heard from lately (this one always) and the leases they hold."""
        nodes, leases = [], []
        for name, (raw, changed) in sorted(self.peers.items()):
            if now - changed > 3 * HEARTBEAT and name != self.node:
                continue
            try:
                record = json.loads(raw)
                nodes.append({"node": name, "seen": record["seen"],
                              "clients": record["clients"]})
                leases += [{"path": p, "node": name} for p in record.get("leases", ())]
            except (ValueError, KeyError, TypeError):
                continue
        return nodes, sorted(leases, key=lambda lease: lease["path"])
