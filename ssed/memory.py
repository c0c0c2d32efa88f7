"""Giving memory back after many channels went (SPEC 10: a daemon that made 100,000
channels and saw them idle out should come back near the memory it started with).

Python frees the objects, but four things keep the pages:
- a dict never shrinks when keys are deleted (`shrink` rebuilds it in place);
- CPython's free lists (tuples of each size up to 2,000, floats, dicts, lists) keep the last
  objects freed, which are the channels'; a full collection empties them;
- pymalloc gives a 1 MiB arena back only once every object in it is freed, so one object
  made during the wave that lives on keeps a whole arena: nothing here makes one (ctypes is
  looked up at start; dicts are shrunk in place). What still does (the last counter values,
  the id clock's, the loop's times) keeps a few arenas: ~5 MB, not growing wave to wave;
- glibc's malloc keeps freed chunks below the top of its heap (each channel's history ring
  is one, over pymalloc's 512-byte limit) until `malloc_trim` hands their pages back.
The channels' sweep (ondemand.py) calls `shrink` and `give_back` only after many went.
"""
import ctypes
import gc
import sys

COMPACT_AFTER = 1024    # channels removed since the last compaction before another
SETTLE_AFTER = 64       # ... at the end of a wave, when more went than are left


def _malloc_trim():
    try:
        # The symbols the process already has (dlopen(NULL)): no search for libc's file.
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to call
        return None


def shrink(d):
    """Rebuild dict `d` for the keys it has now, in place, if its table is bigger than
    that needs. (Not `d = dict(d)`: a new dict object made now lands among the objects of
    the many channels just freed, and while it lives keeps their pymalloc arena.)"""
    if sys.getsizeof(d) <= sys.getsizeof(dict.fromkeys(range(len(d)))) * 2:
        return
    keep = dict(d)
    d.clear()
    d.update(keep)


_TRIM = []      # the C function, looked up once (no work at import)


def prepare():
    """Look malloc_trim up now: at start, when there are templates. Done first during a
    wave of channels, ctypes' objects would land among theirs and keep their memory."""
    if not _TRIM:
        _TRIM.append(_malloc_trim())


def give_back(collect):
    """Return the C heap's free pages to the kernel, where the C library can; `collect`:
    first empty the free lists (a full collection does: it costs a walk of every object
    start-up did not freeze, so only once the channels left are few)."""
    if collect:
        gc.collect()
    trim()


def trim():
    """Return the C heap's free pages to the kernel, where the C library can."""
    prepare()
    if _TRIM[0] is not None:
        _TRIM[0](0)
