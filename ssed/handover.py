"""The handover record (SPEC 13): what a daemon hands the next one along with its sockets,
to bytes and back. Pure: values in, bytes out; no descriptor, no clock.

The record is a document of plain values followed by one blob of raw bytes (what streams
had queued and not yet written, and the bytes of requests still arriving), which the
document points into by (offset, length): queued bytes are the largest part and must cross
byte-exact, half a frame included, so they are never escaped or decoded.

    MAGIC, then ">II" (version, length of the document), the document, the blob.

The document is a pickle (protocol 5) since version 2: 3x quicker than JSON both ways, which
at 10,000 streams is ~10 ms of the freeze. It is read back with no class or function at
all (find_class refuses every name): only dicts, lists, strings, numbers, None. Version 1
(JSON) is still read: a daemon of the version before hands over to this one.

Version 3 is the first part of an upgrade whose streams come in batches (`stream_batches`:
references into the blob, each a pickled list of streams), each pickled on the turn its
sockets went, so that no turn of the old process pickles 10,000 streams at once. A record is
written in the lowest version that says what it holds (2 for the rest), so that what older
code can read, it still reads, and what it cannot, it refuses by its version.

Descriptors travel beside the record (SCM_RIGHTS, or systemd's fd store); the record names
each by its place in that sequence (`fd`), and by its (device, inode), which the receiver
checks, since an fd store does not promise an order. A stream's fields are a list in the
order of STREAM (10,000 dicts of repeated keys would cost the freeze ~30 % more).
"""
import io
import json
import pickle
import struct

MAGIC = b"SSED-HANDOVER\n"
VERSION = 3             # the newest written (see encode_parts)
READS = (1, 2, 3)       # versions read (1: a JSON document)
MAX_FDS = 253           # descriptors per message beside it (the kernel's SCM_MAX_FD)
_HEAD = struct.Struct(">II")

# The fields of one stream, in order: those that never change (an upgrade sends them, with
# the socket, before the freeze: PRE_STREAM), then those that do (KEPT: at the freeze).
PRE_STREAM = ("fd", "family", "id", "address", "since", "paths", "last_event_id")
KEPT = ("idle_since", "sent", "queued", "expires")
STREAM = PRE_STREAM + KEPT
# The fields of one request still arriving (an HTTP connection that has not finished its
# head): its socket, its peer, and the bytes it sent so far.
REQUEST = ("fd", "address", "received")


class HandoverError(Exception):
    """A record that cannot be read: the wrong kind of bytes, another version, cut short."""


class Blob:
    """The raw bytes of a record being built: `put(bytes)` gives the (offset, length) to
    store in the document."""

    def __init__(self):
        self.parts = []
        self.size = 0

    def put(self, data):
        if not data:
            return None
        ref = [self.size, len(data)]
        self.parts.append(data)
        self.size += len(data)
        return ref


def encode(document, blob):
    """The record's bytes: `document` (JSON-able, with "version" set here) and the Blob its
    references point into."""
    return b"".join(encode_parts(document, blob))


def encode_parts(document, blob):
    """The record as a list of byte strings to write one after the other (the queued bytes
    of 10,000 streams can be tens of MB: written as they are, not joined first)."""
    version = VERSION if "stream_batches" in document else 2
    document = {**document, "version": version}
    text = pickle.dumps(document, protocol=5)
    return [MAGIC, _HEAD.pack(version, len(text)), text, *blob.parts]


def stream_batch(streams):
    """A batch of an upgrade's first part: the streams' field lists, for the blob."""
    return pickle.dumps(streams, protocol=5)


def first_streams(document, blob):
    """The streams of an upgrade's first part: its batches' (version 3), or its list."""
    if "stream_batches" not in document:
        return document["streams"]
    streams = []
    for ref in document["stream_batches"]:
        try:
            batch = _Plain(io.BytesIO(take(blob, ref))).load()
        except HandoverError:
            raise
        except Exception as exc:
            raise HandoverError(f"handover record: bad batch of streams: {exc!r}") from None
        if type(batch) is not list:
            raise HandoverError("handover record: a batch of streams is not a list")
        streams += batch
    return streams


def decode(data):
    """(document, blob) of a record (bytes, or a memoryview: the blob is then a view into
    it, not a copy); HandoverError naming what is wrong."""
    data = memoryview(data)
    if data[:len(MAGIC)] != MAGIC:
        raise HandoverError("not a handover record (no magic)")
    at = len(MAGIC)
    if len(data) < at + _HEAD.size:
        raise HandoverError("handover record cut short (no header)")
    version, size = _HEAD.unpack_from(data, at)
    if version not in READS:
        raise HandoverError(f"handover record version {version}; this daemon reads "
                            f"{' and '.join(map(str, READS))}")
    at += _HEAD.size
    if len(data) < at + size:
        raise HandoverError("handover record cut short (document)")
    try:
        document = _load(version, data[at:at + size])
    except HandoverError:
        raise
    except Exception as exc:    # (a pickle cut or garbled raises any of a dozen kinds)
        raise HandoverError(f"handover record: bad document: {exc!r}") from None
    if not isinstance(document, dict) or document.get("version") != version:
        raise HandoverError("handover record: the document is not a record of this version")
    return document, data[at + size:]


def _load(version, text):
    if version == 1:
        return json.loads(bytes(text))
    return _Plain(io.BytesIO(text)).load()


class _Plain(pickle.Unpickler):
    """A pickle of plain values only: any name (a class, a function) is refused."""

    def find_class(self, module, name):
        raise HandoverError(f"handover record: the document names {module}.{name}; a record "
                            "holds plain values only")


def take(blob, ref):
    """The bytes a (offset, length) reference names (None: no bytes)."""
    if ref is None:
        return b""
    offset, length = ref
    if offset < 0 or length < 0 or offset + length > len(blob):
        raise HandoverError(f"handover record: bytes [{offset}, {offset + length}) lie "
                            f"outside the {len(blob)} bytes it carries")
    return bytes(blob[offset:offset + length])


def stream_fields(values):
    """A stream's list of fields as a dict (HandoverError if it has not STREAM's length)."""
    return _fields(STREAM, values, "stream")


def request_fields(values):
    return _fields(REQUEST, values, "request")


def _fields(names, values, what):
    if not isinstance(values, list) or len(values) != len(names):
        got = len(values) if isinstance(values, list) else "no"
        raise HandoverError(f"handover record: a {what} has {got} fields, not {len(names)}")
    return dict(zip(names, values))


def event_values(event):
    """An Event of a history as the record keeps it: [ms, seq, type, data]."""
    return [event.key[0], event.key[1], event.type, event.data]


def event_key(values):
    """(key, type, data) of an event as the record keeps it."""
    ms, seq, type_, data = values
    return (int(ms), int(seq)), type_, data
