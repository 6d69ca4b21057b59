"""CPU and memory of process trees (psutil), and CPU pinning.

CPU is reported as % of one core: the user + system time a set of processes used
during a window, divided by the window's wall time. A process that appears during
the window counts from zero; one that exits counts up to its last sample.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the recorder (node, workers, ffmpeg) and the load (publishers,
    harness, moto) run on. Empty sets: not pinned."""

    recorder: frozenset[int] = frozenset()
    load: frozenset[int] = frozenset()

    @classmethod
    def choose(cls, mode: str) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if mode == "none" or len(cpus) < 2:
            return cls()
        # the last CPU drives the load, every other one records
        return cls(frozenset(cpus[:-1]), frozenset(cpus[-1:]))

    @property
    def active(self) -> bool:
        return bool(self.recorder)

    def describe(self) -> str:
        if not self.active:
            return "not pinned"
        return (f"node, workers and ffmpeg on CPU {','.join(map(str, sorted(self.recorder)))}; "
                f"publishers, harness and moto on CPU {','.join(map(str, sorted(self.load)))}")

    def as_load(self) -> None:
        """Put the calling process (the harness) on the load CPUs."""
        if self.active:
            os.sched_setaffinity(0, self.load)

    def recorder_preexec(self):
        """preexec_fn for a child that records (set before exec, so every thread and
        every process it forks later inherits it)."""
        cpus = self.recorder
        return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None

    def load_preexec(self):
        cpus = self.load
        return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None

    class _Recorder:
        def __init__(self, pinning: Pinning):
            self.pinning = pinning

        def __enter__(self):
            if self.pinning.active:
                os.sched_setaffinity(0, self.pinning.recorder)

        def __exit__(self, *exc):
            self.pinning.as_load()

    def recorder_context(self) -> _Recorder:
        """`with pinning.recorder_context(): start a child` for helpers that take no
        preexec_fn (the child inherits the harness's affinity at fork)."""
        return Pinning._Recorder(self)


def tree(root_pids: list[int]) -> dict[int, psutil.Process]:
    """The live processes of the trees rooted at root_pids."""
    found: dict[int, psutil.Process] = {}
    for pid in root_pids:
        try:
            root = psutil.Process(pid)
            found[pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
    return found


def cpu_seconds(process: psutil.Process) -> tuple[float, float] | None:
    """(user, system) seconds."""
    try:
        times = process.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return times.user, times.system


def memory(process: psutil.Process) -> tuple[float, float] | None:
    """(USS, PSS) in MB."""
    try:
        info = process.memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return info.uss / MB, getattr(info, "pss", 0.0) / MB


@dataclass
class CpuWindow:
    """CPU used by process trees from `start()` on, by group of pids."""

    root_pids: list[int]
    started_wall: float = 0.0
    sampled_wall: float = 0.0
    baseline: dict[int, tuple[float, float]] = field(default_factory=dict)
    latest: dict[int, tuple[float, float]] = field(default_factory=dict)
    processes: dict[int, psutil.Process] = field(default_factory=dict)

    def _refresh(self) -> dict[int, psutil.Process]:
        for pid, process in tree(self.root_pids).items():
            known = self.processes.get(pid)
            # a reused pid is another process: keep psutil's identity check
            if known is None or not known.is_running():
                self.processes[pid] = process
        return self.processes

    def start(self) -> None:
        self.started_wall = self.sampled_wall = time.monotonic()
        self.baseline.clear()
        self.latest.clear()
        for pid, process in self._refresh().items():
            seconds = cpu_seconds(process)
            if seconds is not None:
                self.baseline[pid] = self.latest[pid] = seconds

    def sample(self) -> None:
        for pid, process in self._refresh().items():
            seconds = cpu_seconds(process)
            if seconds is not None:
                self.baseline.setdefault(pid, (0.0, 0.0))
                self.latest[pid] = seconds
        self.sampled_wall = time.monotonic()

    def used(self, pids: set[int] | None = None, part: slice = slice(0, 2)) -> float:
        """CPU seconds used since start() by pids (all when None); part: user, system or both."""
        return sum(sum(self.latest[p][part]) - sum(self.baseline.get(p, (0.0, 0.0))[part])
                   for p in self.latest if pids is None or p in pids)

    def elapsed(self) -> float:
        """Wall time from start() to the last sample."""
        return self.sampled_wall - self.started_wall

    def percent(self, pids: set[int] | None = None, part: slice = slice(0, 2)) -> float:
        elapsed = self.elapsed()
        return 100.0 * self.used(pids, part) / elapsed if elapsed > 0 else 0.0

    def system_share(self, pids: set[int] | None = None) -> float | None:
        """Share of the CPU time spent in the kernel (system) rather than in user space."""
        used = self.used(pids)
        return self.used(pids, slice(1, 2)) / used if used > 0 else None

    def pids(self) -> set[int]:
        return set(self.latest)
