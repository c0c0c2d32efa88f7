"""handover.py, the record a daemon hands the next one (SPEC 13): values to bytes and back,
byte-exact blobs (half a frame, NULs, non-UTF-8), and a clear HandoverError for every way a
record can be wrong (other bytes, another version, cut anywhere, a reference out of range,
a stream with the wrong number of fields)."""
import pickle

import pytest

from ssed import handover
from ssed.handover import HandoverError
from ssed.history import Event


def record(queued=b"id: 1-0\ndata: half a fr"):
    blob = handover.Blob()
    doc = {"clock": [1, 2], "streams": [[3, 2, "c1", "10.0.0.1", 1.5, ["/chat"], None, 2.0, 10,
                                         blob.put(queued), None]]}
    return handover.encode(doc, blob), queued


def test_a_record_comes_back_with_its_queued_bytes_exact():
    data, queued = record(b"\x00\xff\xfe id: 1-0\r\ndata: h" * 1000)
    doc, blob = handover.decode(data)
    assert doc["version"] == 2 and doc["clock"] == [1, 2]     # (2 says all it holds)
    fields = handover.stream_fields(doc["streams"][0])
    assert fields["id"] == "c1" and fields["paths"] == ["/chat"] and fields["family"] == 2
    assert handover.take(blob, fields["queued"]) == queued


def test_no_queued_bytes_is_no_reference_and_takes_as_empty():
    blob = handover.Blob()
    assert blob.put(b"") is None
    assert handover.take(b"", None) == b""


def test_several_blobs_do_not_overlap():
    blob = handover.Blob()
    refs = [blob.put(bytes([i]) * (i + 1)) for i in range(5)]
    _, data = handover.decode(handover.encode({}, blob))
    assert [handover.take(data, r) for r in refs] == [bytes([i]) * (i + 1) for i in range(5)]


def test_a_first_part_in_batches_is_version_3_and_its_streams_come_back_in_order():
    blob = handover.Blob()
    batches = [[[i, 2, f"c{i}", "10.0.0.1", 1.5, ["/chat"], None] for i in range(at, at + 3)]
               for at in (0, 3, 6)]
    doc = {"part": "first", "inodes": [None] * 9,
           "stream_batches": [blob.put(handover.stream_batch(b)) for b in batches]}
    got, data = handover.decode(handover.encode(doc, blob))
    assert got["version"] == 3
    assert handover.first_streams(got, data) == batches[0] + batches[1] + batches[2]
    # A first part of the version before: its one list.
    assert handover.first_streams({"streams": batches[0]}, b"") == batches[0]


@pytest.mark.parametrize("batch, why", [
    (pickle.dumps({"not": "a list"}, protocol=5), "not a list"),
    (pickle.dumps([1, 2])[:-3], "bad batch"),
    (pickle.dumps([Event((1, 0), "x", None)], protocol=5), "plain values only"),
])
def test_a_wrong_batch_of_streams_is_refused(batch, why):
    blob = handover.Blob()
    doc = {"stream_batches": [blob.put(batch)]}
    got, data = handover.decode(handover.encode(doc, blob))
    with pytest.raises(HandoverError, match=why):
        handover.first_streams(got, data)


def test_a_batch_reference_outside_the_blob_is_refused():
    with pytest.raises(HandoverError, match="outside"):
        handover.first_streams({"stream_batches": [[0, 10]]}, b"abc")


def test_events_as_the_record_keeps_them():
    ev = Event((5, 1), "a\nb", "msg")
    key, type_, data = handover.event_key(handover.event_values(ev))
    assert Event(key, data, type_).wire == ev.wire


@pytest.mark.parametrize("data, why", [
    (b"", "no magic"),
    (b"HTTP/1.1 200 OK\r\n", "no magic"),
    (handover.MAGIC, "no header"),
    (handover.MAGIC + b"\x00\x00\x00\x04\x00\x00\x00\x02{}", "version 4"),
    (handover.MAGIC + b"\x00\x00\x00\x02\x00\x00\x00\x02{}", "bad document"),
    (handover.MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x09{}", "cut short"),
    (handover.MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x02{]", "bad document"),
    (handover.MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x02[]", "not a record"),
])
def test_a_wrong_record_is_refused_with_the_reason(data, why):
    with pytest.raises(HandoverError, match=why):
        handover.decode(data)


def test_a_record_of_the_version_before_json_still_reads():
    """A daemon of the version before (a JSON document) hands over to this one."""
    text = b'{"version":1,"clock":[1,2],"streams":[]}'
    data = handover.MAGIC + (1).to_bytes(4, "big") + len(text).to_bytes(4, "big") + text + b"xy"
    doc, blob = handover.decode(data)
    assert doc["clock"] == [1, 2] and bytes(blob) == b"xy"


@pytest.mark.parametrize("value", [Event((1, 0), "x"), print, ValueError("x")])
def test_a_document_that_names_a_class_or_function_is_refused(value):
    """Only plain values come back: nothing the record names is imported or called."""
    text = pickle.dumps({"version": 2, "x": value}, protocol=5)
    data = handover.MAGIC + (2).to_bytes(4, "big") + len(text).to_bytes(4, "big") + text
    with pytest.raises(HandoverError, match="plain values only"):
        handover.decode(data)


def test_a_record_cut_anywhere_is_refused_or_loses_only_blob_bytes_it_checks():
    data, _ = record()
    doc_end = len(handover.MAGIC) + 8 + int.from_bytes(data[len(handover.MAGIC) + 4:][:4], "big")
    for cut in range(doc_end):
        with pytest.raises(HandoverError):
            handover.decode(data[:cut])
    # Cut inside the blob: the document reads, the reference does not fit.
    doc, blob = handover.decode(data[:-3])
    with pytest.raises(HandoverError, match="outside"):
        handover.take(blob, handover.stream_fields(doc["streams"][0])["queued"])


@pytest.mark.parametrize("values", [[], [1, 2, 3], "stream", None])
def test_a_stream_with_the_wrong_fields_is_refused(values):
    with pytest.raises(HandoverError, match="fields"):
        handover.stream_fields(values)
