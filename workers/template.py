"""What the worker template process had imported when it stopped preloading.

A module a worker imports after the fork is loaded into that worker's private
memory, once per worker; one the template imported is shared by every worker.
`workers.preload` records the template's modules here; a worker reports, when it
exits, what it imported beyond them (the list should stay empty).
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameter: requests at least this large are mmapped, and given back on free
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024

preloaded: frozenset[str] = frozenset()


def mark_preloaded() -> None:
    """Called last by the template, just before it starts forking workers."""
    global preloaded
    preloaded = frozenset(sys.modules)


def tune_malloc() -> None:
    """Called by the template before forking; the workers inherit its malloc settings.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so a
    worker's short-lived large buffers (key frames, the muxer's fragment) soon come from
    the brk heap, which fragments and is rarely given back: a fixed threshold keeps them
    mmapped. malloc_trim hands the template's free heap pages back, so a worker that
    allocates there gets fresh pages instead of copies of the template's. Together they
    measured 1.5-2 MB less private memory per plain-RTP worker (benchmarks/results/
    memory-per-worker.md). A libc without these calls (musl) keeps its own policy."""
    libc = ctypes.CDLL(None)
    mallopt, malloc_trim = getattr(libc, "mallopt", None), getattr(libc, "malloc_trim", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    if malloc_trim is not None:
        malloc_trim(0)


def imported_after_fork() -> list[str] | None:
    """Modules imported since the template finished preloading; None outside a
    process forked from the template (a worker run in-process by a test)."""
    if not preloaded:
        return None
    return sorted(set(sys.modules) - preloaded)
