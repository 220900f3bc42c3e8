"""Freed heap handed back to the operating system after a burst of allocations.

A first list of 10,000 Pods decodes a page of raw objects (~17 MB) at a time and drops
it once trimmed; glibc keeps the freed pages for reuse, which the daemon never needs
again at that size, and counts them in its resident memory (~12 MiB of VmRSS).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable


def release() -> bool:
    """Collect garbage cycles, then return free heap pages to the OS; False where the C
    library cannot (musl, macOS): there only the collection happens."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes  # only when memory is released: a Docker-only daemon never loads it

    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter already runs on
        trim = libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim
