"""UDP port pairs (RTP on an even port, RTCP on the next) from the configured range."""

from __future__ import annotations


class PortsExhausted(Exception):
    pass


class PortAllocator:
    def __init__(self, low: int, high: int):
        first = low + (low % 2)
        self._free = list(range(first, high, 2))  # p and p + 1 both inside [low, high]
        self._free = [p for p in self._free if p + 1 <= high]
        self._used: set[int] = set()
        self._next = 0

    def allocate(self, count: int) -> tuple[int, ...]:
        ports: list[int] = []
        for _ in range(len(self._free)):
            if len(ports) == count:
                break
            candidate = self._free[self._next]
            self._next = (self._next + 1) % len(self._free)
            if candidate not in self._used:
                ports.append(candidate)
        if len(ports) < count:
            raise PortsExhausted("no free RTP port pair in the configured range")
        self._used.update(ports)
        return tuple(ports)

    def reserve(self, ports: tuple[int, ...]) -> None:
        """Mark ports as used (a restored stream keeps the ports it had)."""
        self._used.update(ports)

    def release(self, ports: tuple[int, ...]) -> None:
        self._used.difference_update(ports)
