"""Work orders: what the hub asks of the loop, which alone owns file descriptors.

The hub never calls the loop. It appends orders to `hub.orders`; after each handler (and
each timer turn) the loop carries them out in the order they were left, so nothing
re-enters the hub while it is in the middle of a change (a kick closes its streams after
`kick` has returned; their `on_disconnect` runs then).
"""


class FanOut:
    """Send `wire` to `clients`. `key` is the broadcast's membership (channel, count):
    broadcasts of one unchanged membership may share a write (outbox.Outbox.fan_out)."""
    __slots__ = ("wire", "clients", "key")

    def __init__(self, wire, clients, key=None):
        self.wire = wire
        self.clients = clients
        self.key = key


class Close:
    """Close a stream, counting `reason` (kicked, banned, removed...)."""
    __slots__ = ("client", "reason")

    def __init__(self, client, reason):
        self.client = client
        self.reason = reason


class Spawn:
    """Run `command` for service `name` (in `cwd`), killed after `timeout` seconds;
    `done(output, error)` when it ends. It is also the handle of the run: `child` is set by
    the loop once started (None if it could not start), for `Kill`."""
    __slots__ = ("command", "timeout", "done", "name", "cwd", "child")

    def __init__(self, command, timeout, done, name, cwd):
        self.command = command
        self.timeout = timeout
        self.done = done
        self.name = name
        self.cwd = cwd
        self.child = None


class Kill:
    """Kill the run that `spawn` (a Spawn order) started, if it still runs."""
    __slots__ = ("spawn", "why")

    def __init__(self, spawn, why):
        self.spawn = spawn
        self.why = why
