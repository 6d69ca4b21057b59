"""The CPU quota of this process's cgroup, in cores (cgroup v2 `cpu.max`, v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`).

A quota on any ancestor applies too, so the smallest one from the process's
cgroup up to the top of the hierarchy mounted here wins. The cgroup a process
is in (/proc/self/cgroup) is found under its mount by the mount's root
(/proc/self/mountinfo field 4), so this works with and without a cgroup
namespace (a container's own root, or the host's path mounted in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
PROC_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class CgroupMount:
    version: int  # 1 or 2
    root: str  # the cgroup path this mount shows
    mountpoint: Path


def cpu_quota_cores(cgroup_file: Path = PROC_CGROUP, mountinfo_file: Path = PROC_MOUNTINFO) -> float | None:
    """Cores this process's cgroup may use, or None when no quota is set (or no cgroup is visible)."""
    try:
        memberships = parse_memberships(cgroup_file.read_text())
        mounts = parse_cpu_mounts(mountinfo_file.read_text())
    except OSError:
        return None
    # With both hierarchies mounted (hybrid), the cpu controller is on v1 when v1 mounts it.
    for mount in sorted(mounts, key=lambda m: m.version):
        path = memberships.get(mount.version)
        if path is not None:
            return smallest_quota(mount, cgroup_directory(mount, path))
    return None


def parse_memberships(text: str) -> dict[int, str]:
    """/proc/self/cgroup lines `hierarchy-id:controllers:path` -> {1: path of the v1
    cpu controller, 2: path in the unified hierarchy}."""
    found: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            found[2] = path
        elif "cpu" in controllers.split(","):
            found[1] = path
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_cpu_mounts(text: str) -> list[CgroupMount]:
    """cgroup2 mounts, and cgroup v1 mounts carrying the cpu controller, from mountinfo."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 5 or len(fields) < separator + 4:
            continue
        root, mountpoint = _unescape(fields[3]), Path(_unescape(fields[4]))
        fstype, options = fields[separator + 1], fields[separator + 3].split(",")
        if fstype == "cgroup2":
            mounts.append(CgroupMount(2, root, mountpoint))
        elif fstype == "cgroup" and "cpu" in options:
            mounts.append(CgroupMount(1, root, mountpoint))
    return mounts


def cgroup_directory(mount: CgroupMount, path: str) -> Path:
    """Where the cgroup at `path` is under the mount (the mount itself when it is not below it)."""
    root = mount.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return mount.mountpoint
    return mount.mountpoint / path[len(root):].lstrip("/")


def _quota(directory: Path, version: int) -> float | None:
    try:
        if version == 2:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
        return None if quota_us < 0 else quota_us / period_us
    except (OSError, ValueError, ZeroDivisionError):
        return None


def smallest_quota(mount: CgroupMount, directory: Path) -> float | None:
    """The smallest quota from `directory` up to the mount point, in cores."""
    quotas = []
    while True:
        quota = _quota(directory, mount.version)
        if quota is not None and quota > 0:
            quotas.append(quota)
        if directory == mount.mountpoint or mount.mountpoint not in directory.parents:
            break
        directory = directory.parent
    return min(quotas) if quotas else None
