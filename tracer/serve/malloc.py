"""glibc's malloc, held to a fixed mmap threshold for a daemon that runs for weeks.

glibc serves a request of M_MMAP_THRESHOLD bytes or more (128 KiB at start)
with its own mmap, returned to the kernel on free. But its threshold is
dynamic: freeing such a chunk raises the threshold to that chunk's size (up to
32 MiB on 64-bit), so the next batches of the ring (up to 4096 records x 264
bytes, ~1 MiB, with their copies and unpacked rows) come from the brk heap,
where small long-lived objects allocated meanwhile pin them: the heap grew
8.4 -> 11.2 MB in the first 90 s of a 20,000 events/s storm and went on in
steps (docs/performance.md), while tracemalloc saw Python's own objects flat
(6.75 -> 6.85 MB over 5 minutes). Setting the threshold with mallopt() turns
the dynamic adjustment off (mallopt(3)): large buffers go back to the kernel
on every free and the heap stays at 5.7 MB.
"""
from __future__ import annotations

import os

M_MMAP_THRESHOLD = -3           # glibc malloc.h
THRESHOLD = 256 << 10           # above the few-KiB objects, below a batch


def pin_mmap_threshold(nbytes: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `nbytes`; False where it was not done
    (not glibc, or MALLOC_MMAP_THRESHOLD_ set: the operator's choice stands)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return False            # musl and others: no dynamic threshold to turn off
        return libc.mallopt(M_MMAP_THRESHOLD, nbytes) == 1
    except (OSError, AttributeError):
        return False
