"""How loaded the node is, and whether it takes more work.

Admission is by count (published streams, active tasks) and by CPU: past any
limit the node answers busy (StartRecord 300010001, publishing 503 +
Retry-After) rather than degrading every stream it already records.

CPU is the node's own: the node process, its worker processes and the worker
template, read from /proc/<pid>/stat, against the CPU the node may use (its
cgroup's quota when one is set, else the cores it may run on). Whatever else
runs on the host, or in the same container, is not counted: a node next to a
busy neighbour still takes work as long as its own share is below the cap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine import cgroup

CPU_SMOOTHING = 0.3  # weight of the newest sample in the moving average
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def read_cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(user + system clock ticks of the whole process, parent pid), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = text[text.rindex(b")") + 2:].split()
    return int(fields[11]) + int(fields[12]), int(fields[1])


def allowed_cores() -> float:
    """The CPU this process may use: its cgroup quota, its CPU affinity, whichever is less."""
    cores = float(len(os.sched_getaffinity(0)))
    quota = cgroup.cpu_quota_cores()
    return min(cores, quota) if quota else cores


@dataclass
class ProcessTreeCpu:
    """CPU seconds used by this process and the given workers (plus their parent,
    the template they are forked from), between two samples. A process seen for
    the first time counts from that sample on; a vanished one drops out."""

    _last: dict[int, int] = field(default_factory=dict)

    def ticks_since_last(self, worker_pids: Iterable[int]) -> int:
        own = os.getpid()
        pids = {own, *worker_pids}
        now: dict[int, int] = {}
        for pid in list(pids):
            sample = read_cpu_ticks(pid)
            if sample is None:
                continue
            now[pid], parent = sample
            if pid != own and parent not in pids and parent > 1:
                pids.add(parent)  # the worker template
                template = read_cpu_ticks(parent)
                if template is not None:
                    now[parent] = template[0]
        used = sum(ticks - self._last[pid] for pid, ticks in now.items() if pid in self._last)
        self._last = now
        return max(0, used)


@dataclass
class Capacity:
    max_streams: int
    max_tasks: int
    cpu_cap: float  # share of the CPU the node may use (allowed_cores)
    cores: float = field(default_factory=allowed_cores)
    cpu: float = 0.0  # moving average of the node's share of `cores`
    _tree: ProcessTreeCpu = field(default_factory=ProcessTreeCpu)
    _last_time: float | None = None

    def sample(self, worker_pids: Iterable[int], now: float) -> None:
        """Called on the node's ticker (`now`: monotonic seconds): update the CPU average."""
        ticks = self._tree.ticks_since_last(worker_pids)
        if self._last_time is not None and now > self._last_time:
            share = ticks / CLOCK_TICKS_PER_S / (now - self._last_time) / self.cores
            self.cpu += CPU_SMOOTHING * (share - self.cpu)
        self._last_time = now

    def load(self, streams: int, tasks: int) -> float:
        """1.0 means full."""
        return max(streams / self.max_streams, tasks / self.max_tasks, self.cpu / self.cpu_cap)

    def _cpu_refusal(self) -> str | None:
        if self.cpu < self.cpu_cap:
            return None
        return f"cpu {self.cpu:.0%}/{self.cpu_cap:.0%} of {self.cores:g} cores"

    def stream_refusal(self, streams: int) -> str | None:
        """Why another published stream is refused (the limit hit), or None when it is taken."""
        if streams >= self.max_streams:
            return f"streams {streams}/{self.max_streams}"
        return self._cpu_refusal()

    def task_refusal(self, tasks: int) -> str | None:
        """Why another task is refused (the limit hit), or None when it is taken."""
        if tasks >= self.max_tasks:
            return f"tasks {tasks}/{self.max_tasks}"
        return self._cpu_refusal()


def default_max_streams() -> int:
    """Measured on a 2-core machine (benchmarks/): scaled by the cores this node may use."""
    from engine.defaults import MAX_STREAMS_PER_CORE

    return max(1, int(MAX_STREAMS_PER_CORE * allowed_cores()))

