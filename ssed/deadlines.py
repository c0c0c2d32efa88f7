"""The connections' deadlines (a request's head, a handshake, an answer that must come): a
heap the loop expires each turn. A connection moves its deadline by being given a new one;
an entry counts only while it is still the connection's `deadline` and it is open."""
import heapq

FLOOR = 1024    # entries below which stale ones are left to expire on their own


class Deadlines:
    def __init__(self):
        self.heap = []          # (when, seq, conn)
        self.limit = FLOOR
        self.seq = 0

    def set(self, conn, when):
        self.seq += 1
        conn.deadline = when
        heapq.heappush(self.heap, (when, self.seq, conn))
        if len(self.heap) > self.limit:
            # Drop entries of connections that closed or moved on (streams, answered
            # requests) so a connection flood cannot pin them until their deadline.
            # (In place: an `expired()` that sets a deadline may compact mid-`expire`.)
            self.heap[:] = [e for e in self.heap if e[2].deadline == e[0] and not e[2].closed]
            heapq.heapify(self.heap)
            self.limit = max(FLOOR, 2 * len(self.heap))

    def next(self):
        """When the first entry is due (perhaps a stale one: waking for it costs a turn)."""
        return self.heap[0][0] if self.heap else float("inf")

    def expire(self, now):
        """Tell each connection whose deadline passed (`expired()`)."""
        heap = self.heap    # (compacted in place, never replaced)
        while heap and heap[0][0] <= now:
            when, _, conn = heapq.heappop(heap)
            if conn.deadline == when and not conn.closed:
                conn.expired()
