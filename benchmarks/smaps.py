"""Where a process's memory is, by kind of mapping (/proc/<pid>/smaps).

USS is what the process alone holds (Private_Clean + Private_Dirty): for a worker
forked from the template, what it wrote (or loaded) after the fork. PSS adds its
share of the pages it still shares with the template and the other workers.
"""

from __future__ import annotations

import re
from pathlib import Path

KB = 1024
MB = 1024 * 1024

# the kind of a mapping, from its path; the first match wins
KINDS = (
    ("heap (brk)", re.compile(r"^\[heap\]$")),
    ("stack", re.compile(r"^\[stack\]$")),
    ("PyAV/FFmpeg libs", re.compile(r"/(av|av\.libs|pyav\.libs)/")),
    ("other extension modules", re.compile(r"/site-packages/.*\.so")),
    ("python interpreter", re.compile(r"/(libpython[^/]*|python3(\.\d+)?)$")),
    ("system libs", re.compile(r"\.so(\.[\d.]+)?$")),
)
ANONYMOUS = "anonymous (obmalloc arenas, malloc mmaps, thread stacks)"
OTHER = "other"
_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def kind_of(path: str) -> str:
    if not path:
        return ANONYMOUS
    for name, pattern in KINDS:
        if pattern.search(path):
            return name
    return OTHER


def breakdown(pid: int) -> dict[str, dict[str, float]] | None:
    """{kind: {"uss_mb", "pss_mb", "rss_mb"}} of one process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    kinds: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    for line in text.splitlines():
        if _HEADER.match(line):
            fields = line.split(None, 5)
            kind = kind_of(fields[5].strip() if len(fields) > 5 else "")
            current = kinds.setdefault(kind, {"uss_mb": 0.0, "pss_mb": 0.0, "rss_mb": 0.0})
            continue
        if current is None:
            continue
        name, _, value = line.partition(":")
        if name in ("Private_Clean", "Private_Dirty"):
            current["uss_mb"] += int(value.split()[0]) * KB / MB
        elif name == "Pss":
            current["pss_mb"] += int(value.split()[0]) * KB / MB
        elif name == "Rss":
            current["rss_mb"] += int(value.split()[0]) * KB / MB
    return {k: {f: round(v, 2) for f, v in fields.items()} for k, fields in kinds.items()}


def mean_breakdown(per_pid: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The mean over processes of each kind's figures (a kind a process lacks counts as 0)."""
    if not per_pid:
        return {}
    kinds = sorted({k for b in per_pid for k in b})
    return {k: {f: round(sum(b.get(k, {}).get(f, 0.0) for b in per_pid) / len(per_pid), 2)
                for f in ("uss_mb", "pss_mb", "rss_mb")} for k in kinds}
