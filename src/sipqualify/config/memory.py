"""Giving back what a configuration load left behind (issue 15: daemon memory per peer).

Reading a big configuration allocates many short-lived objects (lines, sections, entries)
among the long-lived ones it keeps; the daemon calls `release_memory()` after each load and
reload so that what the collector frees and what glibc's heap holds free at its top go back
to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None (another libc, or no ctypes access to it)."""
    global _trim, _looked
    if not _looked:
        _looked = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                fn = libc.malloc_trim
            except (OSError, AttributeError):  # musl has no malloc_trim
                fn = None
            if fn is not None:
                fn.argtypes = [ctypes.c_size_t]
                fn.restype = ctypes.c_int
                _trim = fn
    return _trim


def trim_heap() -> bool:
    """`malloc_trim(0)` where glibc has it: the free pages inside its heaps go back to the system
    (no collection: the store's writer thread calls it after a backlog). True when trimmed."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def release_memory() -> bool:
    """A full collection, then `malloc_trim(0)` where glibc has it. True when trimmed."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
