"""A result that comes in a later turn: a publish in a cluster is answered once Redis has it
(SPEC 12). Whoever waits (a control connection, an HTTP connection) says `then(fn)`; whoever
knows settles it, once, with a value or an exception instance."""


LOST = object()     # what waits for a reply that will never come (its connection dropped)


class Later:
    __slots__ = ("value", "settled", "waiters")

    def __init__(self):
        self.value = None
        self.settled = False
        self.waiters = []

    def then(self, fn):
        """Call `fn(value)` once settled (now, if it is already)."""
        if self.settled:
            fn(self.value)
        else:
            self.waiters.append(fn)

    def settle(self, value):
        if self.settled:
            return
        self.value, self.settled = value, True
        waiters, self.waiters = self.waiters, []
        for fn in waiters:
            fn(value)

    def map(self, fn):
        """A Later of `fn(value)`."""
        out = Later()
        self.then(lambda value: out.settle(fn(value)))
        return out


def settled(value):
    later = Later()
    later.settle(value)
    return later
