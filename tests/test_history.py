"""history: event ids, the id clock, each service's ring and the multiplexed merge."""
import pytest

from ssed.history import Event, History, IdClock, format_id, merge, parse_id


@pytest.mark.parametrize("text, key", [
    ("0-0", (0, 0)),
    ("1700000000000-0", (1700000000000, 0)),
    ("1700000000000-42", (1700000000000, 42)),
    ("007-01", (7, 1)),
    ("99999999999999999999-99999999999999999999", (10**20 - 1, 10**20 - 1)),
])
def test_parse_id_reads_two_decimal_integers(text, key):
    assert parse_id(text) == key


@pytest.mark.parametrize("text", [
    None, "", "1", "1-", "-1", "-", "1--1", "1-2-3", "a-b", "1-b", "0x1-0", "1.5-0",
    " 1-0", "1-0 ", "1 -0", "1- 0", "1-0\n", "\n1-0", "+1-0", "1-+0",
    "123456789012345678901-0",          # 21 digits
    "0-123456789012345678901",
    "\u0661-0",                         # ARABIC-INDIC DIGIT ONE: a digit, not a decimal one
    "1-\uff10",                         # FULLWIDTH DIGIT ZERO
])
def test_parse_id_refuses_anything_else(text):
    assert parse_id(text) is None


def test_format_id_is_the_inverse_of_parse_id():
    for key in [(0, 0), (1700000000000, 3), (5, 12345)]:
        assert parse_id(format_id(key)) == key


def test_ids_compare_as_pairs_of_numbers_not_as_text():
    assert parse_id("9-0") < parse_id("10-0")
    assert parse_id("5-9") < parse_id("5-10")


# -- the clock --------------------------------------------------------------------------------

def test_clock_takes_the_wall_clock_ms_with_seq_zero():
    clock = IdClock()
    assert clock.next(1000) == (1000, 0)
    assert clock.next(1001) == (1001, 0)
    assert clock.next(5000) == (5000, 0)


def test_clock_increments_seq_within_one_ms():
    clock = IdClock()
    assert [clock.next(1000) for _ in range(4)] == [(1000, 0), (1000, 1), (1000, 2), (1000, 3)]
    assert clock.next(1001) == (1001, 0)


def test_clock_never_goes_backwards_when_the_wall_clock_does():
    clock = IdClock()
    ids = [clock.next(ms) for ms in (5000, 5001, 4000, 1, 5001, 5002, 0)]
    assert ids == [(5000, 0), (5001, 0), (5001, 1), (5001, 2), (5001, 3), (5002, 0), (5002, 1)]
    assert ids == sorted(set(ids))


def test_clock_advance_skips_past_ids_restored_from_elsewhere():
    clock = IdClock()
    clock.next(1000)
    clock.advance((9000, 7))
    assert clock.next(1001) == (9000, 8)
    clock.advance((10, 0))              # an older id changes nothing
    assert clock.next(9000) == (9000, 9)
    assert clock.next(9001) == (9001, 0)


def test_clock_starts_from_a_given_last_id():
    assert IdClock((2000, 5)).next(2000) == (2000, 6)


def test_prime_gives_an_id_every_later_id_exceeds():
    clock = IdClock()
    first = clock.next(1000)
    primed = parse_id(clock.prime(1000))
    assert primed > first
    later = [clock.next(ms) for ms in (1000, 999, 1000, 1001)]
    assert all(key > primed for key in later)


def test_prime_with_a_clock_behind_the_last_id_is_still_greater():
    clock = IdClock((5000, 3))
    primed = parse_id(clock.prime(100))
    assert primed == (5000, 4)
    assert clock.next(100) > primed


# -- events and the ring ----------------------------------------------------------------------

def test_event_is_framed_once_with_its_id():
    event = Event((1000, 2), "a\nb", "msg")
    assert event.id == "1000-2"
    assert event.wire == b"id: 1000-2\nevent: msg\ndata: a\ndata: b\n\n"
    assert Event((1, 0), "x").wire == b"id: 1-0\ndata: x\n\n"


def ring(size, keys):
    history = History(size)
    for key in keys:
        history.append(Event(key, f"e{key[0]}.{key[1]}"))
    return history


def keys(events):
    return [e.key for e in events]


KEYS = [(10, 0), (10, 1), (20, 0), (30, 0), (30, 5)]


def test_since_none_gives_every_held_event_in_order():
    assert keys(ring(10, KEYS).since(None)) == KEYS


def test_since_an_id_before_the_window_gives_everything_held():
    assert keys(ring(10, KEYS).since((1, 0))) == KEYS
    assert keys(ring(3, KEYS).since((10, 0))) == KEYS[2:]   # (10, 1) fell out of the ring


def test_since_an_id_inside_the_window_gives_only_newer_events():
    history = ring(10, KEYS)
    assert keys(history.since((10, 1))) == KEYS[2:]
    assert keys(history.since((10, 0))) == KEYS[1:]
    assert keys(history.since((25, 0))) == KEYS[3:]     # between two held ids


def test_since_the_newest_id_or_later_is_empty():
    history = ring(10, KEYS)
    assert history.since((30, 5)) == []
    assert history.since((31, 0)) == []


def test_ring_keeps_the_last_size_events():
    history = ring(3, KEYS)
    assert keys(history.since(None)) == KEYS[2:]
    assert history.last_id == "30-5"


def test_empty_ring_has_no_last_id_and_nothing_to_replay():
    history = History(5)
    assert history.last_id is None
    assert history.since(None) == []
    assert history.since((1, 0)) == []


def test_history_of_size_zero_holds_nothing():
    history = ring(0, KEYS)
    assert history.since(None) == []
    assert history.last_id is None


def test_resize_smaller_keeps_the_newest_events():
    history = ring(10, KEYS)
    history.resize(2)
    assert keys(history.since(None)) == KEYS[3:]
    history.append(Event((40, 0), "new"))
    assert keys(history.since(None)) == [(30, 5), (40, 0)]


def test_resize_larger_keeps_everything_and_makes_room():
    history = ring(2, KEYS)
    history.resize(4)
    assert keys(history.since(None)) == KEYS[3:]
    for key in [(40, 0), (50, 0), (60, 0)]:
        history.append(Event(key, "x"))
    assert keys(history.since(None)) == [(30, 5), (40, 0), (50, 0), (60, 0)]


def test_resize_to_zero_empties_the_ring():
    history = ring(5, KEYS)
    history.resize(0)
    assert history.since(None) == []


def test_merge_interleaves_histories_in_id_order():
    a = ring(10, [(10, 0), (20, 0), (30, 1)])
    b = ring(10, [(10, 1), (25, 0), (30, 0), (40, 0)])
    assert keys(merge([a, b], None)) == [(10, 0), (10, 1), (20, 0), (25, 0), (30, 0), (30, 1),
                                         (40, 0)]
    assert keys(merge([a, b], (20, 0))) == [(25, 0), (30, 0), (30, 1), (40, 0)]
    assert keys(merge([b, a], (30, 0))) == [(30, 1), (40, 0)]
    assert merge([a, b], (40, 0)) == []


def test_merge_of_one_history_is_its_since():
    a = ring(10, KEYS)
    assert keys(merge([a], (20, 0))) == KEYS[3:]


def test_merge_with_an_empty_history():
    assert keys(merge([History(5), ring(5, KEYS)], (10, 1))) == KEYS[2:]


def test_history_remembers_the_types_it_was_given_held_or_not_and_boundedly():
    from ssed.history import MAX_TYPES
    h = History(0)
    for n, type_ in enumerate(["a", None, "b", "a"]):
        h.append(Event((1, n), "x", type_))
    assert (list(h.ring), list(h.types)) == ([], ["a", "b"])
    for n in range(MAX_TYPES + 5):
        h.append(Event((2, n), "x", f"t{n}"))
    assert len(h.types) == MAX_TYPES and list(h.types)[-1] == f"t{MAX_TYPES + 4}"
    assert "a" not in h.types       # the oldest to appear went first
