"""Keep multi-megabyte protobuf messages out of fresh ``mmap`` allocations (glibc only).

A 32-image request is a 4.8 MB ``tensor_content``. glibc's malloc serves blocks above its mmap
threshold (128 KiB at start, raised adaptively) with a fresh ``mmap`` and returns them to the
kernel on free, so every request pays ~1,200 page faults per copy of that buffer. Measured here:
building and serializing one 32-image PredictRequest took 7.5 ms; with the thresholds below,
0.5 ms (the heap pages are reused). The cost is that up to ``trim`` bytes of freed heap stay with
the process instead of going back to the kernel.

Thresholds are set with ``mallopt`` (glibc ``M_MMAP_THRESHOLD`` = -3, ``M_TRIM_THRESHOLD`` = -1,
``M_ARENA_MAX`` = -8, from ``malloc.h``); elsewhere (musl, macOS) this does nothing. The benchmark's
in-process rival calls the same function, so both sides run with the same allocator setting.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
ARENA_MAX = 2


def keep_large_buffers_on_heap(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES,
    trim_threshold: int = TRIM_THRESHOLD_BYTES,
    arena_max: int | None = ARENA_MAX,
) -> bool:
    """Raise glibc's mmap and trim thresholds for this process, and cap its malloc arenas.

    Args:
        mmap_threshold: bytes; blocks at least this large still get their own mmap (32 MiB,
            glibc's own upper bound for the adaptive threshold on 64-bit).
        trim_threshold: bytes of free heap top kept before returning memory to the kernel.
        arena_max: most malloc arenas (glibc ``M_ARENA_MAX`` = -8; default 8 per core). Each
            thread that allocates gets an arena of its own up to that cap, and with the
            thresholds above each arena keeps its freed request buffers, so a server whose gRPC
            threads each held a 4.8 MB request kept that much per thread. None leaves glibc's
            default. Call before threads start allocating.

    Returns:
        True if every ``mallopt`` call succeeded (glibc), False otherwise.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = [(_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)]
    if arena_max is not None:
        settings.append((_M_ARENA_MAX, arena_max))
    return all(bool(mallopt(option, value)) for option, value in settings)
