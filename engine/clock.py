"""The time the control plane reads: wall-clock milliseconds for what the API and
callbacks show, a monotonic clock for durations. Injected, so tests can move it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall_ms(self) -> int: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return int(time.time() * 1000)


SYSTEM_CLOCK = SystemClock()
