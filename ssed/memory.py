"""Giving memory back after many channels went (SPEC 10: a daemon that made 100,000
channels and saw them idle out should not keep their memory).

Python frees the objects, but two things keep the pages: a dict never shrinks when keys are
deleted (it is copied instead), and glibc's malloc keeps freed chunks below the top of its
heap (each channel's history ring is one such chunk, over pymalloc's 512-byte limit) until
`malloc_trim` hands their pages back. Both are done only after a sweep removed many.
"""
import ctypes
import ctypes.util

COMPACT_AFTER = 1024    # channels removed since the last compaction before another


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):   # not glibc (musl, macOS): nothing to call
        return None


_TRIM = []      # the C function, looked up on first use (no work at import)


def trim():
    """Return the C heap's free pages to the kernel, where the C library can."""
    if not _TRIM:
        _TRIM.append(_malloc_trim())
    if _TRIM[0] is not None:
        _TRIM[0](0)
