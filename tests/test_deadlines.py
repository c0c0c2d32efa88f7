"""deadlines: the loop's heap of connections' deadlines, with objects that only count the
times they expired (no loop, no socket)."""
import ssed.deadlines as deadlines
from ssed.deadlines import Deadlines


class Conn:
    def __init__(self, name, on_expiry=None):
        self.name, self.deadline, self.closed = name, None, False
        self.fired, self.on_expiry = [], on_expiry

    def expired(self):
        self.fired.append(self.deadline)
        if self.on_expiry:
            self.on_expiry()


def test_each_deadline_fires_once_when_due_and_a_moved_or_closed_one_does_not():
    d = Deadlines()
    a, b, c = Conn("a"), Conn("b"), Conn("c")
    d.set(a, 1.0)
    d.set(b, 2.0)
    d.set(c, 3.0)
    d.set(b, 5.0)       # moved on: its 2.0 entry no longer counts
    c.closed = True
    assert d.next() == 1.0
    d.expire(4.0)
    assert (a.fired, b.fired, c.fired) == ([1.0], [], [])
    d.expire(5.0)
    d.expire(9.0)
    assert (a.fired, b.fired, c.fired) == ([1.0], [5.0], [])
    assert d.next() == float("inf")


def test_a_compaction_set_off_by_an_expiry_fires_nothing_twice(monkeypatch):
    monkeypatch.setattr(deadlines, "FLOOR", 4)
    d = Deadlines()
    late = [Conn(f"late{i}") for i in range(12)]
    first = Conn("first", on_expiry=lambda: [d.set(c, 100.0) for c in late])
    rest = [Conn(f"c{i}") for i in range(4)]
    d.set(first, 1.0)
    for i, c in enumerate(rest):
        d.set(c, 2.0 + i)
    d.expire(3.5)           # first's expiry grows the heap past its limit: compacted
    d.expire(200.0)
    assert first.fired == [1.0]
    assert [c.fired for c in rest] == [[2.0], [3.0], [4.0], [5.0]]
    assert all(c.fired == [100.0] for c in late)


def test_entries_of_closed_connections_are_dropped_once_the_heap_doubles():
    d = Deadlines()
    conns = [Conn(i) for i in range(deadlines.FLOOR)]
    for c in conns:
        d.set(c, 10.0)
        c.closed = True     # answered and gone, long before 10.0
    d.set(Conn("open"), 10.0)
    assert len(d.heap) == 1 and d.limit == deadlines.FLOOR
