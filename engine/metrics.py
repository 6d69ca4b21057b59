"""/metrics in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

from engine.capacity import Capacity
from engine.status import TaskStatus

STATUS_NAMES = {TaskStatus.INITIALISING: "initialising", TaskStatus.RECORDING: "recording",
                TaskStatus.ENDED: "ended", TaskStatus.ENDED_ABNORMALLY: "ended_abnormally",
                TaskStatus.PAUSED: "paused"}


def _gauge(lines: list[str], name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} gauge")
    lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)


def render_metrics(capacity: Capacity, *, streams: int, workers: int, active_tasks: dict[TaskStatus, int],
                   ended_tasks: dict[TaskStatus, int], upload_backlog: int, ready: bool) -> str:
    lines: list[str] = []
    _gauge(lines, "recnode_load", "Load against capacity (1 = full: new work is refused)",
           [("", capacity.load(streams, sum(active_tasks.values())))])
    _gauge(lines, "recnode_cpu_utilization",
           "Share of the CPU the node may use that the node and its workers use (moving average)", [("", capacity.cpu)])
    _gauge(lines, "recnode_capacity_streams", "Published streams this node takes", [("", capacity.max_streams)])
    _gauge(lines, "recnode_capacity_tasks", "Active tasks this node takes", [("", capacity.max_tasks)])
    _gauge(lines, "recnode_streams", "Published streams", [("", streams)])
    _gauge(lines, "recnode_workers", "Worker processes", [("", workers)])
    _gauge(lines, "recnode_tasks", "Tasks by status (ended ones: since the store began)",
           [(f'{{status="{STATUS_NAMES[s]}"}}', n) for s, n in {**active_tasks, **ended_tasks}.items()])
    _gauge(lines, "recnode_upload_backlog_objects", "Objects waiting in the spool for their bucket",
           [("", upload_backlog)])
    _gauge(lines, "recnode_ready", "1 when the node takes work", [("", 1 if ready else 0)])
    return "\n".join(lines) + "\n"
