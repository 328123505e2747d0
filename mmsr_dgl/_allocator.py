"""Keep freed memory in the process for reuse, where the C library is glibc.

A training step allocates and frees the same large temporaries (score matrices, gathered node features) again and
again. By default glibc serves every block above 128 KiB-32 MiB with a fresh `mmap` and returns it with `munmap`
on free, so each step faults its temporaries in page by page; it also trims the heap's free top back to the
operating system. A third of a training process's CPU time went to the kernel that way (BENCHMARKS.md, "Where
the time goes"). Raising both thresholds keeps those blocks in the heap, where the next step reuses them.

`MMSR_KEEP_FREED_MEMORY=0` leaves glibc's defaults; glibc's own `MALLOC_MMAP_THRESHOLD_` and
`MALLOC_TRIM_THRESHOLD_` environment variables, when set, win as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
THRESHOLD = 1 << 28  # blocks up to 256 MiB come from the heap; a free top of up to 256 MiB stays


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once, before large allocations); whether it did."""
    if os.environ.get("MMSR_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(f"MALLOC_{name}_THRESHOLD_" in os.environ for name in ("MMAP", "TRIM")):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it (musl and others: leave their allocators alone)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
