"""The hub's work orders (`hub.orders`), read and carried out in a test as the loop does:
what the in-process hub tests assert on instead of a fake loop."""
from collections import defaultdict

from ssed.orders import Close, FanOut, Spawn


class Orders:
    """The work orders the hub left in `hub.orders`, read and carried out as the loop does:
    the bytes each client was sent, the streams closed (which detaches them, as the loop's
    close does), the commands started and killed. Reading any record takes the new orders
    first."""

    def __init__(self, hub):
        self.hub = hub
        self._sent = defaultdict(list)  # client -> [wire, ...]
        self._fanouts = []              # (wire, [clients]) in the order left
        self._closed = []               # (client id, reason)
        self._spawned = []              # (command, timeout, done, name, cwd)
        self._killed = []               # the names of the runs killed: child-1, ...
        self._names = {}                # Spawn order -> child-N

    def take_orders(self):
        hub = self.hub
        while hub.orders:
            orders, hub.orders = hub.orders, []
            for order in orders:
                if type(order) is FanOut:
                    self._fanouts.append((order.wire, list(order.clients)))
                    for client in order.clients:
                        self._sent[client].append(order.wire)
                elif type(order) is Close:
                    self.close(order.client, order.reason)
                elif type(order) is Spawn:
                    self._spawned.append((order.command, order.timeout, order.done,
                                          order.name, order.cwd))
                    self._names[order] = f"child-{len(self._spawned)}"
                else:
                    self._killed.append(self._names[order.spawn])

    @property
    def sent(self):
        self.take_orders()
        return self._sent

    @property
    def fanouts(self):
        self.take_orders()
        return self._fanouts

    @property
    def closed(self):
        self.take_orders()
        return self._closed

    @property
    def spawned(self):
        self.take_orders()
        return self._spawned

    @property
    def killed(self):
        self.take_orders()
        return self._killed

    def close(self, client, reason):
        """The loop closing a stream: detach it, then what that set off."""
        self._closed.append((client.id, reason))
        self.hub.detach(client, reason)
        self.take_orders()

    def got(self, client):
        return b"".join(self.sent.get(client, []))

    def take(self, client):
        """What `client` got since the last take."""
        return b"".join(self.sent.pop(client, []))
