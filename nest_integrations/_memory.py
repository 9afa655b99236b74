"""Handing freed memory back to the operating system between the stages of long jobs (index builds).

glibc's allocator keeps the blocks a process frees for reuse; when every batch's temporaries have another
shape (length-sorted batches), those blocks fragment and resident memory creeps up with the number of
batches. ``malloc_trim(0)`` returns the free pages; it takes a few milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterator

__all__ = ["large_allocations_mapped", "release_free_memory"]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, or None where it cannot be opened."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None on other C libraries)."""
    return getattr(_libc(), "malloc_trim", None)


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (a no-op where the C library cannot)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3  # mallopt parameter (glibc malloc.h)


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt`` (None on other C libraries)."""
    return getattr(_libc(), "mallopt", None)


@contextlib.contextmanager
def large_allocations_mapped(threshold: int = 1 << 20, after: int = 32 << 20) -> Iterator[None]:
    """Within the block, allocations of ``threshold`` bytes or more are memory-mapped, so each one goes back to
    the system when freed instead of fragmenting the heap; afterwards the threshold is ``after`` (glibc's
    largest dynamic threshold, where a long-running process settles anyway) and the free heap is trimmed.

    Measured on the passage embeddings of 7,696 chunks (MiniLM, batches of 16): the peak over the resident
    memory before the call grew from +150 MB to +470 MB across the slices without it, stayed at +50–75 MB with
    it. It costs ~15–20% on the LM's key building (mmap + page faults for every large temporary), so the
    streamed build uses it for the passage stage only. A no-op where the C library is not glibc.
    """
    opt = _mallopt()
    if opt is None:
        yield
        return
    opt(_M_MMAP_THRESHOLD, int(threshold))
    try:
        yield
    finally:
        opt(_M_MMAP_THRESHOLD, int(after))
        release_free_memory()
