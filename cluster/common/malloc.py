"""glibc malloc settings for a process that moves multi-MiB buffers (the volume server).

Every whole-needle read allocates a few buffers of the chunk's size (4 MiB): the data read from
disk, the reply message, its serialised bytes. glibc adapts its thresholds as it goes: whether
such a buffer is a fresh mmap, or the top of a heap that free() hands back to the kernel, then
depends on the order of earlier allocations. When it does, the next buffer is page-faulted in
again (1,024 faults and 4 MiB of zeroing per buffer). Measured on a cluster of this repository
(3 downloads of a 128 MiB file, one volume server): 1.1-1.6 s of volume-server CPU in one
build and 0.5-0.6 s in another with the same read path, which a byte of difference in what the
server allocated elsewhere had flipped; with the fixed thresholds below, 0.4-0.6 s in both.

Fixed thresholds keep buffers up to MMAP_THRESHOLD in the heaps and let free memory at the top
of a heap reach TRIM_THRESHOLD before it is returned, so steady reads reuse warm memory. The
cost is memory the process keeps once it has used it: at most about TRIM_THRESHOLD per malloc
arena (glibc makes up to 8 per CPU, one per busy thread), which is what the reads in flight
used at their peak anyway.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1      # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit for this setting on 64-bit
TRIM_THRESHOLD = 64 << 20


def keep_big_buffers() -> bool:
    """Apply the thresholds; False (and nothing changed) where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    if not ok:
        log.warning("mallopt refused the buffer thresholds; big reads may page-fault more")
    return ok
