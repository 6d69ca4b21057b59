"""What the worker template process had imported when it stopped preloading.

A module a worker imports after the fork is loaded into that worker's private
memory, once per worker; one the template imported is shared by every worker.
`workers.preload` records the template's modules here; a worker reports, when it
exits, what it imported beyond them (the list should stay empty).
"""

from __future__ import annotations

import sys

preloaded: frozenset[str] = frozenset()


def mark_preloaded() -> None:
    """Called last by the template, just before it starts forking workers."""
    global preloaded
    preloaded = frozenset(sys.modules)


def imported_after_fork() -> list[str] | None:
    """Modules imported since the template finished preloading; None outside a
    process forked from the template (a worker run in-process by a test)."""
    if not preloaded:
        return None
    return sorted(set(sys.modules) - preloaded)
