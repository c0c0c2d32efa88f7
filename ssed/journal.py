"""Durable history: each service's events appended to a file, restored after a restart.

A record is one line: the CRC-32 of the JSON that follows (8 hex digits), a space, then
`{"id": ..., "event": ..., "data": ...}`. A torn or corrupt record (a crash mid-write, a bad
disk block) fails its check: it and whatever follows it are skipped with a warning and cut off
the file, never fatal. The file is rewritten with only the held events (compaction) once it
holds twice as many records as the history keeps.

Sync policies, as Redis's appendfsync: `always` (fsync before the publisher's answer),
`everysec` (fsync at most once a second; a `kill -9` loses nothing, a power cut up to a
second), `no` (the kernel decides).
"""
import json
import os
import zlib

from .history import parse_id

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


class Journal:
    """One service's journal file. `log(level, text)` reports what was skipped."""

    def __init__(self, path, sync, log):
        self.path = path
        self.sync_policy = sync
        self.log = log
        self.records = 0
        self.dirty = False
        self.file = None

    def load(self, keep):
        """The last `keep` records as (key, type, data), oldest first; opens for appending."""
        records, good_end = self._read()
        self.file = open(self.path, "ab")
        if good_end is not None:
            self.file.truncate(good_end)     # cut the torn tail so appends follow good data
        self.records = len(records)
        return records[-keep:] if keep else []

    def _read(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return [], None
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
        self.file.write(encode(event))
        self.file.flush()           # in the kernel before the publisher hears "ok"
        self.records += 1
        if self.sync_policy == "always":
            os.fsync(self.file.fileno())
        else:
            self.dirty = True

    def sync(self):
        """The once-a-second fsync of `everysec`."""
        if self.dirty and self.sync_policy == "everysec":
            os.fsync(self.file.fileno())
        self.dirty = False

    def compact(self, events, keep, force=False):
        """Rewrite the file with only `events` once it holds over twice `keep` records."""
        if self.records <= 2 * max(keep, 1) and not force:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(encode(e) for e in events))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.file.close()
        self.file = open(self.path, "ab")
        self.records = len(events)

    def close(self):
        if self.file is not None:
            self.sync()
            self.file.close()
            self.file = None

