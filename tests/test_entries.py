"""The cluster's stream entries as written and read back (ssed/entries.py): bytes in."""
from ssed.entries import event_of, first_id


def test_a_stream_entry_reads_back_as_the_cluster_wrote_it():
    assert event_of(b"17-2", [b"p", b"/a", b"d", b"x\ny", b"e", b"", b"c", b"bob"]) == (
        (17, 2), "/a", "x\ny", None, "bob")
    # A history stream's entry: no path, no client.
    assert event_of(b"17-3", [b"d", b"", b"e", b"tick"]) == ((17, 3), None, "", "tick", None)
    assert event_of(b"17-4", [b"p", b"/a"]) is None                 # no data: not ours
    assert event_of(b"17-5", [b"p", b"/a", b"d", b"\xff"]) is None  # not UTF-8
    assert first_id([[b"9-1", []], [b"9-2", []]]) == (9, 1) and first_id([]) is None
