"""Give freed memory back to the operating system after a large decode.

glibc keeps what a big decode freed in its heaps (one arena per thread that decoded), so a server that once
decoded a few 80-megapixel PNGs in worker threads stays that large while idle. `release_free_memory` asks glibc to
return every arena's free pages (`malloc_trim(0)`); elsewhere (musl, macOS, Windows) it does nothing.

NOTE: measured on the API server over the shipped mini (`python -m bench.memory`, RSS at start 1.01 GB): idle
after 4 x 81 MP PNGs, bad inputs and 10 small requests 1.64 GB without the trim, 1.13 GB with MALLOC_ARENA_MAX=2
instead, 1.15 GB with the trim. REMOTEGLM_MALLOC_TRIM=0 turns it off (for that comparison).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from functools import cache

# A decode this large (bytes, all bands) is followed by a trim; smaller ones are left to the allocator (a trim costs
# a few milliseconds and is pointless after a photo-sized image).
TRIM_AFTER_BYTES = 64 * 1024 * 1024

_lock = threading.Lock()


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the heaps' free pages to the OS; True when glibc did it."""
    trim = _malloc_trim()
    if trim is None or os.environ.get("REMOTEGLM_MALLOC_TRIM") == "0":
        return False
    with _lock:  # one trim at a time: concurrent trims of the same arenas only contend
        trim(0)
    return True
