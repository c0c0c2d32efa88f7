"""journal: the record format (CRC-32 + JSON, one line), reading a journal back whole, cut at
every byte, or with trailing garbage, compaction, and the sync policies. The Journal class
is exercised on real files in a temporary directory; fsync calls are counted by a spy on
`os.fsync` (the one thing a test cannot observe from the file).
"""
import errno
import json
import os
import zlib

import pytest

from ssed.history import Event
from ssed.journal import SYNC_POLICIES, Journal, decode, encode

EVENTS = [
    Event((1700000000000, 0), "hello"),
    Event((1700000000000, 1), "two\nlines\r\nand\rthree", "note"),
    Event((1700000000001, 0), ""),
    Event((1700000000002, 0), "unicode: é ✓ 😀 \u2028 \x00 \x1b[31m", "ü"),
    Event((1700000000002, 7), '{"json": "inside", "quote": "\\""}', "json"),
    Event((99999999999999, 12345678901234567890), "far ids", None),
]


class Log(list):
    def __call__(self, level, text):
        self.append((level, text))


def write_file(path, records):
    path.write_bytes(b"".join(records))


# -- the record format -------------------------------------------------------------------------

@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.id)
def test_a_record_is_one_line_that_decodes_to_its_event(event):
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line
    assert decode(line[:-1]) == (event.key, event.type, event.data)


def test_the_record_is_a_crc32_of_the_json_that_follows():
    line = encode(EVENTS[1])[:-1]
    crc, body = line.split(b" ", 1)
    assert crc == b"%08x" % zlib.crc32(body)
    assert json.loads(body) == {"id": EVENTS[1].id, "event": "note", "data": EVENTS[1].data}


def _with_crc(body):
    return b"%08x %s" % (zlib.crc32(body), body)


BAD_RECORDS = [
    ("empty", b""),
    ("no body", b"00000000"),
    ("crc of another body", encode(EVENTS[0])[:9] + encode(EVENTS[2])[9:-1]),
    ("crc too short", encode(EVENTS[0])[1:-1]),
    ("crc not hex", b"zzzzzzzz " + encode(EVENTS[0])[9:-1]),
    ("one bit flipped", encode(EVENTS[0])[:-3] + bytes([encode(EVENTS[0])[-3] ^ 1]) + b"}"),
    ("trailing bytes", encode(EVENTS[0])[:-1] + b"x"),
    ("not JSON", _with_crc(b"{not json")),
    ("not an object", _with_crc(b"[1, 2]")),
    ("no id", _with_crc(b'{"data": "x"}')),
    ("id not ours", _with_crc(b'{"id": "abc", "data": "x"}')),
    ("id not a string", _with_crc(b'{"id": 17, "data": "x"}')),
    ("data not a string", _with_crc(b'{"id": "1-0", "data": 5}')),
    ("no data", _with_crc(b'{"id": "1-0"}')),
    ("not UTF-8", _with_crc(b'{"id": "1-0", "data": "\xff"}')),
]


@pytest.mark.parametrize("line", [b for _, b in BAD_RECORDS], ids=[n for n, _ in BAD_RECORDS])
def test_a_bad_record_decodes_to_none_and_never_raises(line):
    assert decode(line) is None


def test_a_good_crc_over_a_record_without_event_gives_the_default_type():
    assert decode(_with_crc(b'{"id": "5-6", "data": "x"}')) == ((5, 6), None, "x")


# -- reading a journal back --------------------------------------------------------------------

def records_of(events):
    return [(e.key, e.type, e.data) for e in events]


def test_a_missing_journal_loads_empty_and_is_created(tmp_path):
    log = Log()
    j = Journal(str(tmp_path / "j"), "everysec", log)
    assert j.load(100) == []
    assert (tmp_path / "j").exists() and log == []
    j.close()


def test_appended_events_are_in_the_file_at_once_and_load_back_in_order(tmp_path):
    path = tmp_path / "j"
    j = Journal(str(path), "no", Log())
    j.load(100)
    for n, event in enumerate(EVENTS, 1):
        j.append(event)
        # In the kernel before the publisher's answer: a kill -9 now loses nothing.
        assert path.read_bytes().count(b"\n") == n
    j.close()
    log = Log()
    again = Journal(str(path), "no", log)
    assert again.load(100) == records_of(EVENTS)
    assert log == [] and again.records == len(EVENTS)
    again.close()


def test_load_gives_only_the_last_keep_records(tmp_path):
    path = tmp_path / "j"
    write_file(path, [encode(e) for e in EVENTS])
    for keep, expected in ((2, EVENTS[-2:]), (len(EVENTS), EVENTS), (1000, EVENTS), (0, [])):
        j = Journal(str(path), "no", Log())
        assert j.load(keep) == records_of(expected)
        assert j.records == len(EVENTS)      # what the file holds, for compaction
        j.close()


def test_a_journal_cut_at_every_byte_keeps_the_whole_records_and_cuts_the_rest(tmp_path):
    lines = [encode(e) for e in EVENTS[:4]]
    whole = b"".join(lines)
    bounds = [sum(map(len, lines[:i])) for i in range(len(lines) + 1)]
    path = tmp_path / "j"
    for cut in range(len(whole) + 1):
        path.write_bytes(whole[:cut])
        log = Log()
        j = Journal(str(path), "no", log)
        complete = max(i for i, b in enumerate(bounds) if b <= cut)
        assert j.load(100) == records_of(EVENTS[:complete]), cut
        torn = cut not in bounds
        assert len(log) == int(torn), (cut, log)
        if torn:
            level, text = log[0]
            assert level == "warning" and f"at byte {bounds[complete]}" in text
            assert f"{cut - bounds[complete]} bytes skipped" in text
        # The torn tail is gone from the file, so the next record follows good data.
        assert path.read_bytes() == whole[:bounds[complete]], cut
        j.append(EVENTS[5])
        j.close()
        log = Log()
        assert Journal(str(path), "no", log).load(100) == records_of(
            EVENTS[:complete] + [EVENTS[5]]), cut
        assert log == []


def test_trailing_garbage_after_good_records_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "j"
    for garbage in (b"\n", b"\x00" * 4096, b"garbage without newline", b"garbage\n" * 3,
                    encode(EVENTS[2])[:-1] + b"x\n"):
        write_file(path, [encode(EVENTS[0]), encode(EVENTS[1]), garbage])
        log = Log()
        j = Journal(str(path), "no", log)
        assert j.load(100) == records_of(EVENTS[:2])
        assert [level for level, _ in log] == ["warning"]
        j.close()
        assert path.read_bytes() == encode(EVENTS[0]) + encode(EVENTS[1])


def test_a_corrupt_record_in_the_middle_cuts_the_journal_there(tmp_path):
    # Documented choice: what follows a bad record cannot be trusted to be in order; the
    # history keeps the good prefix and the daemon starts.
    path = tmp_path / "j"
    bad = bytearray(encode(EVENTS[1]))
    bad[20] ^= 0x20
    write_file(path, [encode(EVENTS[0]), bytes(bad), encode(EVENTS[2])])
    log = Log()
    j = Journal(str(path), "no", log)
    assert j.load(100) == records_of(EVENTS[:1])
    assert len(log) == 1 and "bad record at byte" in log[0][1]
    j.close()


# -- compaction --------------------------------------------------------------------------------

def numbered(n, start=0):
    return [Event((1700000000000 + i, 0), f"e{i}") for i in range(start, start + n)]


def test_compaction_waits_until_the_file_holds_twice_the_history(tmp_path):
    path = tmp_path / "j"
    j = Journal(str(path), "no", Log())
    j.load(10)
    events = numbered(20)
    for e in events:
        j.append(e)
        j.compact(events[:events.index(e) + 1][-10:], 10)
    assert path.read_bytes().count(b"\n") == 20        # 20 = 2 x 10: not yet
    more = numbered(1, start=20)
    j.append(more[0])
    held = (events + more)[-10:]
    j.compact(held, 10)
    assert path.read_bytes() == b"".join(encode(e) for e in held)
    assert j.records == 10
    # Appending goes on into the rewritten file.
    last = numbered(1, start=21)[0]
    j.append(last)
    j.close()
    assert Journal(str(path), "no", Log()).load(10) == records_of(held[1:] + [last])
    assert not (tmp_path / "j.tmp").exists()


def test_the_file_stays_bounded_over_many_appends(tmp_path):
    path = tmp_path / "j"
    j = Journal(str(path), "no", Log())
    j.load(50)
    held = []
    biggest = 0
    for e in numbered(2000):
        j.append(e)
        held = (held + [e])[-50:]
        j.compact(held, 50)
        biggest = max(biggest, j.records)
    assert biggest <= 101
    assert path.read_bytes().count(b"\n") <= 101
    j.close()
    assert Journal(str(path), "no", Log()).load(50) == records_of(held)


def test_forced_compaction_rewrites_at_once(tmp_path):
    path = tmp_path / "j"
    j = Journal(str(path), "no", Log())
    j.load(100)
    for e in numbered(3):
        j.append(e)
    j.compact(numbered(1, start=2), 100, force=True)
    j.close()
    assert path.read_bytes() == encode(numbered(1, start=2)[0])


# -- sync policies -----------------------------------------------------------------------------

@pytest.fixture
def fsyncs(monkeypatch):
    calls = []
    real = os.fsync

    def spy(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr("ssed.journal.os.fsync", spy)
    return calls


def test_sync_always_fsyncs_each_append_before_returning(tmp_path, fsyncs):
    j = Journal(str(tmp_path / "j"), "always", Log())
    j.load(10)
    for n, e in enumerate(numbered(3), 1):
        j.append(e)
        assert len(fsyncs) == n
    j.sync()
    assert len(fsyncs) == 3
    j.close()


def test_sync_everysec_fsyncs_only_on_the_timer_and_only_when_dirty(tmp_path, fsyncs):
    j = Journal(str(tmp_path / "j"), "everysec", Log())
    j.load(10)
    for e in numbered(5):
        j.append(e)
    assert fsyncs == []
    j.sync()
    assert len(fsyncs) == 1
    j.sync()                    # nothing new: no fsync
    assert len(fsyncs) == 1
    j.append(numbered(1, start=5)[0])
    j.close()                   # what is dirty is synced on close
    assert len(fsyncs) == 2


def test_sync_no_leaves_it_to_the_kernel(tmp_path, fsyncs):
    path = tmp_path / "j"
    j = Journal(str(path), "no", Log())
    j.load(10)
    for e in numbered(5):
        j.append(e)
    j.sync()
    j.close()
    assert fsyncs == []
    assert path.read_bytes().count(b"\n") == 5


def test_every_policy_is_known():
    assert SYNC_POLICIES == ("always", "everysec", "no")


# -- when the disk fails -----------------------------------------------------------------------

def no_space(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_failing_fsync_on_close_is_logged_not_raised_and_the_file_is_closed(tmp_path,
                                                                               monkeypatch):
    log = Log()
    j = Journal(str(tmp_path / "j"), "everysec", log)
    j.load(10)
    j.append(numbered(1)[0])
    monkeypatch.setattr("ssed.journal.os.fsync", no_space)
    j.close()       # raised OSError out of hub.stop(), and the services after it never stopped
    assert j.file is None
    assert log == [("error", f"journal {tmp_path / 'j'}: fsync on close failed: No space left "
                             "on device; the last second of events may not be on disk")]


def test_an_append_whose_fsync_fails_is_refused_and_cut_off_the_file(tmp_path, monkeypatch):
    path = tmp_path / "j"
    j = Journal(str(path), "always", Log())
    j.load(10)
    first, second, third = numbered(3)
    j.append(first)
    monkeypatch.setattr("ssed.journal.os.fsync", no_space)
    with pytest.raises(OSError):
        j.append(second)
    assert path.read_bytes() == encode(first)       # the refused event never comes back
    monkeypatch.undo()
    j.append(third)
    assert path.read_bytes() == encode(first) + encode(third)
    assert j.records == 2
    j.close()


def test_a_failing_compaction_leaves_the_journal_as_it_was_and_no_temporary_file(tmp_path,
                                                                                  monkeypatch):
    path = tmp_path / "j"
    j = Journal(str(path), "no", Log())
    j.load(10)
    events = numbered(5)
    for e in events:
        j.append(e)
    before = path.read_bytes()
    monkeypatch.setattr("ssed.journal.os.fsync", no_space)
    with pytest.raises(OSError):
        j.compact(events[-2:], 1, force=True)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["j"]
    monkeypatch.undo()
    j.append(numbered(1, start=5)[0])       # appends still go to the journal
    assert j.compact(events[-2:], 1, force=True) is True
    j.append(numbered(1, start=6)[0])       # and to the compacted one after it
    j.close()
    again = Journal(str(path), "no", Log())
    assert [k for k, _, _ in again.load(10)] == [e.key for e in events[-2:]] + \
        [numbered(1, start=6)[0].key]
    again.close()
