"""Keep freed memory in the process heap, for workers that allocate the same big arrays again and again.

glibc hands every allocation above 32 MiB to its own mmap and unmaps it on free, so the next
10 M-row array is fresh memory the kernel must fault in and zero: on these VMs that was a third
of the rig core's time (`aero bench rig`: sys time 0.7-1.4 s of ~2 s per round, 0.07 s once
the heap is kept). `keep_freed_memory()` tells glibc to serve big blocks from the heap and not
to give them back, so a worker that materializes partition after partition reuses its pages.
The price is that the worker's resident size stays at its high-water mark until it exits,
which is what a Dagster run worker (one process per run) does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Switch glibc's malloc to heap-only, no-trim for this process; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
