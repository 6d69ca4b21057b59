"""UDP port pairs (RTP on an even port, RTCP on the next) from the configured range.

Pairs are handed out in a random order (from the OS's random source), so the port of
the next stream cannot be guessed from the last answer; a pair released less than
RTP_PORT_REUSE_DELAY_S ago is handed out again only when no other is free, since the
publisher that used it may still be sending there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from engine.defaults import RTP_PORT_REUSE_DELAY_S


class PortsExhausted(Exception):
    pass


class PortAllocator:
    def __init__(self, low: int, high: int, clock: Callable[[], float] = time.monotonic):
        first = low + (low % 2)
        self._pairs = [p for p in range(first, high, 2) if p + 1 <= high]  # p and p + 1 inside [low, high]
        self._used: set[int] = set()
        self._released: dict[int, float] = {}  # port -> when it was released
        self._random = random.SystemRandom()
        self._clock = clock

    def allocate(self, count: int) -> tuple[int, ...]:
        free = [p for p in self._pairs if p not in self._used]
        if len(free) < count:
            raise PortsExhausted("no free RTP port pair in the configured range")
        now = self._clock()
        rested = [p for p in free if p not in self._released or now - self._released[p] >= RTP_PORT_REUSE_DELAY_S]
        ports = self._random.sample(rested if len(rested) >= count else free, count)
        self._used.update(ports)
        return tuple(ports)

    def reserve(self, ports: tuple[int, ...]) -> None:
        """Mark ports as used (a restored stream keeps the ports it had)."""
        self._used.update(ports)

    def release(self, ports: tuple[int, ...]) -> None:
        now = self._clock()
        self._released = {p: t for p, t in self._released.items() if now - t < RTP_PORT_REUSE_DELAY_S}
        self._released.update((p, now) for p in ports if p in self._used)
        self._used.difference_update(ports)
