"""glibc's allocator tuned for a proxy of large messages: freed buffers are kept for the next request.

A 1693-patch request is 15.6 MB, and the gateway holds it (and the answer) as whole buffers. With
glibc's defaults such buffers go back to the kernel when freed (mmap'd chunks, heap trimming), so the
next request faults the same memory in again: ~7,000-9,000 page faults and ~30 ms of kernel CPU per
request, measured on the gateway (docs/performance.md). Keeping freed memory removes them; the price
is a resident size that stays at its peak (bounded by ``keep_freed_memory_mb`` per arena).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# glibc's ceiling for the mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): larger buffers
# are always mmap'd, so messages above 32 MiB still fault in fresh memory.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TOP_PAD_MAX = 64 * 1024 * 1024


def keep_freed_memory(keep_mb: int) -> bool:
    """Tune this process's allocator; False where it is not glibc (musl, macOS) or ``keep_mb`` is 0."""
    if keep_mb <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc: that allocator keeps its own defaults
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    keep = keep_mb * 1024 * 1024
    # Setting the mmap threshold also switches off glibc's dynamic adjustment of both thresholds.
    done = all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX),
            (M_TRIM_THRESHOLD, keep),
            (M_TOP_PAD, min(keep, TOP_PAD_MAX)),
        )
    )
    if not done:
        log.warning("could not tune the memory allocator (mallopt refused); large messages cost more CPU")
    return done
