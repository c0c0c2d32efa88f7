"""Durable history: each service's events appended to a file, restored after a restart.

A record is one line: the CRC-32 of the JSON that follows (8 hex digits), a space, then
`{"id": ..., "event": ..., "data": ...}`. A torn or corrupt record (a crash mid-write, a bad
disk block) fails its check: it and whatever follows it are skipped with a warning and cut off
the file, never fatal. The file is rewritten with only the held events (compaction) once it
holds twice as many records as the history keeps.

Sync policies, as Redis's appendfsync: `always` (fsync before the publisher's answer),
`everysec` (fsync at most once a second; a `kill -9` loses nothing, a power cut up to a
second), `no` (the kernel decides).

A write that fails (a full disk, a file size limit) refuses the publish and is cut back off
the file, so that the refused event never comes back after a restart and the next record
follows whole ones. Writes are unbuffered: a buffer would keep the refused record and write it
with the next one.
"""
import errno
import json
import os
import stat
import zlib

from .history import parse_id
from .log import Episode

SYNC_POLICIES = ("always", "everysec", "no")


def encode(event):
    body = json.dumps({"id": event.id, "event": event.type, "data": event.data},
                      ensure_ascii=False, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line):
    """(key, type, data) of one record line (without its newline), or None if it is bad."""
    crc, _, body = line.partition(b" ")
    try:
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
        key = parse_id(record["id"])
        if key is None or not isinstance(record["data"], str):
            return None
        event = record.get("event")
        return key, (event if isinstance(event, str) else None), record["data"]
    except (ValueError, KeyError, TypeError):
        return None


def open_journal(path, sync, log):
    """The Journal at `path` (its directory made if need be), not yet loaded."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return Journal(path, sync, log)


class Journal:
    """One service's journal file. `log(level, text)` reports what was skipped; `trouble` and
    `compaction` are the Episodes of failing writes and failing compactions (the hub, which
    knows the time, reports them)."""

    def __init__(self, path, sync, log):
        self.path = path
        self.sync_policy = sync
        self.log = log
        self.records = 0
        self.size = 0           # bytes of whole records: where a failed append is cut back to
        self.torn = False       # a failed append left bytes that could not be cut off yet
        self.dirty = False
        self.file = None
        self.trouble = Episode(log, f"journal {path}")
        self.compaction = Episode(log, f"journal {path} compaction")

    def load(self, keep):
        """The last `keep` records as (key, type, data), oldest first; opens for appending."""
        records, good_end = self._read()
        self.file = open(self.path, "ab", buffering=0)
        if good_end is not None:
            self.file.truncate(good_end)     # cut the torn tail so appends follow good data
        self.size = os.fstat(self.file.fileno()).st_size
        self.records = len(records)
        return records[-keep:] if keep else []

    def _read(self):
        try:
            # Non-blocking, and regular files only: a FIFO at the journal's path would hang a
            # plain open() (on reload, inside the loop).
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            return [], None
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            data = f.read()
        records, offset = [], 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            record = decode(data[offset:end]) if end >= 0 else None
            if record is None:
                self.log("warning", f"journal {self.path}: bad record at byte {offset} "
                         f"({len(data) - offset} bytes skipped)")
                return records, offset
            records.append(record)
            offset = end + 1
        return records, None

    def append(self, event):
        """Write the event's record (in the kernel before the publisher hears "ok"); OSError
        if it cannot be kept, with nothing of it left in the file."""
        record = encode(event)
        try:
            if self.torn:
                self.file.truncate(self.size)
                self.torn = False
            _write_all(self.file, record)
            if self.sync_policy == "always":
                os.fsync(self.file.fileno())
        except OSError:
            self._cut()
            raise
        self.size += len(record)
        self.records += 1
        self.dirty = self.sync_policy == "everysec"

    def _cut(self):
        try:
            self.file.truncate(self.size)
        except OSError:
            self.torn = True        # tried again before the next append

    def sync(self):
        """The once-a-second fsync of `everysec`; whether it fsynced."""
        if not (self.dirty and self.sync_policy == "everysec"):
            return False
        os.fsync(self.file.fileno())
        self.dirty = False
        return True

    def compact(self, events, keep, force=False):
        """Rewrite the file with only `events` once it holds over twice `keep` records; whether
        it did. The new file is written whole and fsynced beside the old one before it takes
        its place, and appends go on in it through the same descriptor; a failure leaves the
        old file as it was."""
        if self.records <= 2 * max(keep, 1) and not force:
            return False
        tmp = self.path + ".tmp"
        new = open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                           | os.O_CLOEXEC, 0o666), "ab", buffering=0)
        try:
            _write_all(new, b"".join(encode(e) for e in events))
            os.fsync(new.fileno())
            os.replace(tmp, self.path)
        except OSError:
            new.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.file.close()
        self.file, self.torn, self.dirty = new, False, False
        self.size = os.fstat(new.fileno()).st_size
        self.records = len(events)
        return True

    def close(self):
        """Sync and close. A failing fsync is logged, never raised: the daemon is stopping,
        and the services after this one must stop too."""
        if self.file is None:
            return
        try:
            self.sync()
        except OSError as exc:
            self.log("error", f"journal {self.path}: fsync on close failed: "
                     f"{exc.strerror or exc}; the last second of events may not be on disk")
        try:
            self.file.close()
        except OSError as exc:
            self.log("error", f"journal {self.path}: close failed: {exc.strerror or exc}")
        self.file = None


def _write_all(file, data):
    """Write all of `data` to an unbuffered file, or raise: a short write (a full disk, a file
    size limit) is followed by another, which raises with the reason."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "the write wrote nothing")
        view = view[written:]
