"""How loaded the node is, and whether it takes more work.

Admission is by count (published streams, active tasks) and by CPU: past either
limit the node answers busy (StartRecord 300010001, publishing 503 +
Retry-After) rather than degrading every stream it already records.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CPU_SMOOTHING = 0.3  # weight of the newest sample in the moving average


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


@dataclass
class Capacity:
    max_streams: int
    max_tasks: int
    cpu_cap: float  # fraction of all cores
    cpu: float = 0.0
    _last: tuple[int, int] | None = None

    def sample(self) -> None:
        """Called on the node's ticker: update the CPU utilisation average."""
        now = _cpu_times()
        if now is None:
            return
        if self._last is not None:
            busy, total = now[0] - self._last[0], now[1] - self._last[1]
            if total > 0:
                self.cpu += CPU_SMOOTHING * (busy / total - self.cpu)
        self._last = now

    def load(self, streams: int, tasks: int) -> float:
        """1.0 means full."""
        return max(streams / self.max_streams, tasks / self.max_tasks, self.cpu / self.cpu_cap)

    def takes_stream(self, streams: int) -> bool:
        return streams < self.max_streams and self.cpu < self.cpu_cap

    def takes_task(self, tasks: int) -> bool:
        return tasks < self.max_tasks and self.cpu < self.cpu_cap


def default_max_streams() -> int:
    """Measured on a 2-core machine (benchmarks/): scaled by the cores this node has."""
    from engine.defaults import MAX_STREAMS_PER_CORE

    return max(1, MAX_STREAMS_PER_CORE * (os.cpu_count() or 1))
