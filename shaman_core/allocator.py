"""glibc malloc tuning for servers that stream large request bodies (uploads).

uvicorn hands a request body to the app in pieces of up to 256 KB (what uvloop reads at once),
each built in a fresh ``bytearray`` and copied into a fresh ``bytes``. Allocations of that size
come from the top of the heap, and with glibc's defaults freeing them gives the memory back to
the kernel at once (the trim threshold follows the mmap threshold: twice the largest block
freed, here about 512 KB). The next pieces fault the same pages in again, zero-filled: 1.5 page
faults per 4 KiB received (390,000 per GiB), which made receiving a body cost twice as much as
receiving it with plain ``recv``. Keeping a few MiB at the top of the heap removes that cost
(measured with ``benchmarks/shaman_upload.py``: the bare uvicorn endpoint went from 1.25 s to
0.56 s per GiB on a 2-core machine).

The settings are process-wide and only change when memory goes back to the kernel: at most
`TRIM_THRESHOLD` bytes of free heap stay in the process, and blocks of `MMAP_THRESHOLD` bytes
or more are still mapped and unmapped on their own.
"""

from __future__ import annotations

import ctypes
import platform
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc_for_streaming"]

TRIM_THRESHOLD = 8 << 20
MMAP_THRESHOLD = 1 << 20

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_tuned: bool | None = None


def tune_malloc_for_streaming() -> bool:
    """Keep freed body pieces in the heap instead of returning them to the kernel each time.

    Only on Linux with glibc (elsewhere a no-op returning False); idempotent. Returns whether
    the allocator is tuned.
    """
    global _tuned
    if _tuned is None:
        _tuned = _tune()
    return _tuned


def _tune() -> bool:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc always has mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Setting either threshold also stops glibc from moving them as blocks are freed.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
