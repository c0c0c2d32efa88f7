"""A Redis stream entry as the cluster writes it (cluster.PUBLISH: `p` path, `d` data, `e`
event type, `c` client id; a history stream's entries carry only `d` and `e`) and reads it
back, from the reader's XREAD and from a history's XREVRANGE alike. Pure."""
from .history import parse_id


def first_id(reply):
    """The (ms, seq) of the first entry of an XRANGE/XREVRANGE reply; None if it has none."""
    return parse_id(reply[0][0].decode()) if reply else None


def event_of(entry_id, fields):
    """(key, path, data, type, client) of one entry (path, type and client None where it
    has none), or None: not one ssed wrote (no data, or not UTF-8)."""
    values = dict(zip(fields[::2], fields[1::2]))
    try:
        path = values.get(b"p")
        return (parse_id(entry_id.decode()), path.decode() if path is not None else None,
                values[b"d"].decode(), values.get(b"e", b"").decode() or None,
                values.get(b"c", b"").decode() or None)
    except (KeyError, UnicodeDecodeError, AttributeError):
        return None
