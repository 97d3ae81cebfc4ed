"""Keep freed memory in the process on CPU (glibc), so that large tensors do not page-fault on every allocation.

glibc's `malloc` serves blocks above 32 MB (the maximum of its dynamic threshold) with a fresh `mmap` and gives them
back with `munmap` when freed; it also trims the heap top when more than 128 KB is free. A forward pass at 171
classes allocates and frees hundreds of buffers of 10-100 MB, and the kernel zero-fills every page of each new
mapping on first touch: on a 2-core machine that is about a fifth of the inference time. Serving every block from
the heap and never trimming it makes freed blocks reusable without page faults, at the cost of a higher resident
size (the peak stays about the same: +0.1 to 0.3 GB here).

`keep_freed_memory()` applies this to the running process; `fgaseg segment`, `fgaseg evaluate` and
`fgaseg benchmark` call it on CPU. Libraries embedding the model decide for themselves (PyTorch's CPU tuning guide
recommends jemalloc or tcmalloc for the same reason; with one of those preloaded this function is unnecessary).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD = 256 * 2**20


def keep_freed_memory() -> bool:
    """Serve every block from the heap and never trim it (glibc `mallopt`); returns False where this does not apply
    (other C libraries or platforms), True once applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # The largest int: trimming never triggers. mallopt returns 1 on success.
    applied = [mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1), mallopt(_M_TOP_PAD, _TOP_PAD)]
    return all(result == 1 for result in applied)


__all__ = ["keep_freed_memory"]
