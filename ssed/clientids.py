"""Open streams by client id. A client id is all it takes to get a client's events, so the
ones the daemon makes are unguessable; several streams may share one (a user with two tabs),
and `publish --client` and `kick` reach them all.
"""
import base64
import secrets


class ClientIds(dict):
    """client id -> its Client, or a tuple of them when streams share it (one set per id
    would cost every client a set; ids are rarely shared)."""

    def __init__(self):
        super().__init__()
        self._pool = []

    def new(self):
        """12 unguessable characters."""
        if not self._pool:
            # 9 random bytes make 12 characters without padding; 256 ids per encoding.
            pool = base64.urlsafe_b64encode(secrets.token_bytes(9 * 256)).decode()
            self._pool = [pool[i:i + 12] for i in range(0, len(pool), 12)]
        return self._pool.pop()

    def streams(self, client_id):
        """Every open stream with this client id."""
        found = self.get(client_id)
        return () if found is None else found if isinstance(found, tuple) else (found,)

    def add(self, client):
        same = self.get(client.id)
        self[client.id] = client if same is None else (*self.streams(client.id), client)

    def remove(self, client):
        rest = tuple(c for c in self.streams(client.id) if c is not client)
        if not rest:
            self.pop(client.id, None)
        else:
            self[client.id] = rest[0] if len(rest) == 1 else rest
