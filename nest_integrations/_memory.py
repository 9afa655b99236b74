"""Handing freed memory back to the operating system between the stages of long jobs (index builds).

glibc's allocator keeps the blocks a process frees for reuse; when every batch's temporaries have another
shape (length-sorted batches), those blocks fragment and resident memory creeps up with the number of
batches. ``malloc_trim(0)`` returns the free pages; it takes a few milliseconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None on other C libraries)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (a no-op where the C library cannot)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
