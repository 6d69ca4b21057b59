"""Admission's view of CPU: the cgroup quota (on files written to a temporary
directory) and the CPU of the node's own process tree (on real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine import cgroup
from engine.capacity import CLOCK_TICKS_PER_S, Capacity, ProcessTreeCpu, read_cpu_ticks


def mountinfo_line(root: str, mountpoint: Path, fstype: str, options: str) -> str:
    escaped = str(mountpoint).replace(" ", "\\040")  # as the kernel writes it
    return f"35 24 0:30 {root} {escaped} rw,nosuid,nodev - {fstype} {fstype} rw,{options}\n"


V1 = ("cgroup", "cpu,cpuacct")
V2 = ("cgroup2", "nsdelegate")

# (/proc/self/cgroup, mounts as (root, directory, kind), files under tmp_path, cores)
CASES = {
    "v2": ("0::/system.slice/recnode.service\n", [("/", "fs", V2)],
           {"fs/system.slice/recnode.service/cpu.max": "150000 100000"}, 1.5),
    "v2-unlimited": ("0::/app\n", [("/", "fs", V2)], {"fs/app/cpu.max": "max 100000"}, None),
    "v2-ancestor-smallest-wins": ("0::/kubepods/pod1/node\n", [("/", "fs", V2)],
                                  {"fs/kubepods/cpu.max": "400000 100000", "fs/kubepods/pod1/cpu.max": "50000 100000",
                                   "fs/kubepods/pod1/node/cpu.max": "max 100000"}, 0.5),
    # a container with its own cgroup namespace sees itself at /, its quota at the mount
    "v2-namespace": ("0::/\n", [("/", "fs", V2)], {"fs/cpu.max": "200000 100000"}, 2.0),
    "v2-space-in-mountpoint": ("0::/a\n", [("/", "cgroup fs", V2)], {"cgroup fs/a/cpu.max": "100000 100000"}, 1.0),
    "v1": ("4:memory:/app\n3:cpu,cpuacct:/app\n", [("/", "cpu", V1)],
           {"cpu/app/cpu.cfs_quota_us": "250000", "cpu/app/cpu.cfs_period_us": "100000"}, 2.5),
    "v1-unlimited": ("3:cpu,cpuacct:/\n", [("/", "cpu", V1)],
                     {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    # Docker without cgroupns: /proc/self/cgroup says /docker/<id>/..., and /docker/<id> is what is mounted
    "v1-host-path-mounted": ("3:cpu,cpuacct:/docker/0123abc/node\n", [("/docker/0123abc", "cpu", V1)],
                             {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000",
                              "cpu/node/cpu.cfs_quota_us": "100000", "cpu/node/cpu.cfs_period_us": "100000"}, 1.0),
    # both hierarchies mounted: v1 carries the cpu controller, the v2 file does not limit CPU
    "hybrid": ("3:cpu,cpuacct:/svc\n0::/svc\n", [("/", "cpu", V1), ("/", "unified", V2)],
               {"cpu/svc/cpu.cfs_quota_us": "50000", "cpu/svc/cpu.cfs_period_us": "100000",
                "unified/svc/cpu.max": "300000 100000"}, 0.5),
    "no-files": ("0::/gone\n", [("/", "fs", V2)], {"fs/.keep": ""}, None),
    "garbage": ("0::/bad\n", [("/", "fs", V2)], {"fs/bad/cpu.max": "garbage"}, None),
}


@pytest.mark.parametrize(("cgroup_text", "mounts", "files", "cores"), CASES.values(), ids=CASES.keys())
def test_cgroup_quota(tmp_path, cgroup_text, mounts, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    (tmp_path / "cgroup").write_text(cgroup_text)
    (tmp_path / "mountinfo").write_text("22 27 0:21 / /proc rw,relatime - proc proc rw\n" + "".join(
        mountinfo_line(root, tmp_path / directory, *kind) for root, directory, kind in mounts))
    assert cgroup.cpu_quota_cores(tmp_path / "cgroup", tmp_path / "mountinfo") == cores


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cgroup.cpu_quota_cores(tmp_path / "missing", tmp_path / "missing") is None


# the node's own CPU

BURN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass\n"


@pytest.fixture
def burner():
    process = subprocess.Popen([sys.executable, "-c", BURN])
    yield process
    process.kill()
    process.wait()


def burn_ticks(tree: ProcessTreeCpu, pids: list[int], seconds: float) -> int:
    tree.ticks_since_last(pids)
    time.sleep(seconds)  # the interval measured
    return tree.ticks_since_last(pids)


def own_ticks(pid: int) -> int:
    """The process's CPU in clock ticks as psutil reads it (the ground truth here)."""
    times = psutil.Process(pid).cpu_times()
    return round((times.user + times.system) * CLOCK_TICKS_PER_S)


def counted_while_burning(pids: list[int], burner: int, ticks: int = 10) -> tuple[int, int]:
    """(what the node's tree counted for `pids`, what `burner` and this process, which the tree
    counts as the node, used) over the time `burner` takes to burn `ticks` clock ticks: however
    busy the machine, so no share of a core is assumed."""
    tree = ProcessTreeCpu()
    tree.ticks_since_last(pids)
    start = own_ticks(burner), own_ticks(os.getpid())
    deadline = time.monotonic() + 30
    while own_ticks(burner) - start[0] < ticks:
        assert time.monotonic() < deadline, "the burner never ran"
        time.sleep(0.02)
    counted = tree.ticks_since_last(pids)
    return counted, own_ticks(burner) - start[0] + own_ticks(os.getpid()) - start[1]


def test_a_worker_is_counted_and_a_stranger_is_not(burner):
    counted, used = counted_while_burning([burner.pid], burner.pid)
    assert used >= 10 and abs(counted - used) <= 2
    assert burn_ticks(ProcessTreeCpu(), [], 0.5) < 0.1 * CLOCK_TICKS_PER_S  # this idle process alone


def test_the_template_workers_are_forked_from_is_counted(tmp_path):
    """A worker's parent (the worker template) is part of the node, found from the worker."""
    template = subprocess.Popen([sys.executable, "-c", "import os, time, sys\n"
                                 "if os.fork() == 0:\n    time.sleep(30)\n    sys.exit()\n" + BURN])
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(template.pid).children():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        worker = psutil.Process(template.pid).children()[0].pid
        assert read_cpu_ticks(worker)[1] == template.pid
        counted, used = counted_while_burning([worker], template.pid)  # the sleeping worker's burning parent
        assert used >= 10 and abs(counted - used) <= 2
    finally:
        for process in psutil.Process(template.pid).children():
            process.kill()
        template.kill()
        template.wait()


def test_a_vanished_worker_drops_out(burner):
    tree = ProcessTreeCpu()
    tree.ticks_since_last([burner.pid])
    burner.kill()
    burner.wait()
    assert read_cpu_ticks(burner.pid) is None
    assert tree.ticks_since_last([burner.pid]) < 0.1 * CLOCK_TICKS_PER_S


def test_capacity_share_is_of_the_cores_it_may_use(burner):
    one_core = Capacity(10, 10, cpu_cap=0.85, cores=1.0)
    four_cores = Capacity(10, 10, cpu_cap=0.85, cores=4.0)
    start = time.monotonic()
    for capacity in (one_core, four_cores):
        capacity.sample([burner.pid], start)
    time.sleep(0.5)
    now = time.monotonic()
    for capacity in (one_core, four_cores):
        capacity.sample([burner.pid], now)
    assert one_core.cpu == pytest.approx(4 * four_cores.cpu, rel=0.1)
    assert 0.3 * 0.15 <= one_core.cpu <= 0.3 * 1.1  # one smoothed sample of a (mostly) busy core


# busy answers name the limit hit

def test_refusals_name_the_limit():
    capacity = Capacity(max_streams=2, max_tasks=3, cpu_cap=0.85, cores=2.0)
    assert capacity.stream_refusal(1) is None and capacity.task_refusal(2) is None
    assert capacity.stream_refusal(2) == "streams 2/2"
    assert capacity.task_refusal(3) == "tasks 3/3"
    capacity.cpu = 0.9
    assert capacity.stream_refusal(0) == capacity.task_refusal(0) == "cpu 90%/85% of 2 cores"
