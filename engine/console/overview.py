"""What the console shows: tasks (newest first, by room and status) with their
streams and files, the node's capacity and workers, the last callbacks."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import TYPE_CHECKING, Any

from engine import defaults
from engine.metrics import STATUS_NAMES
from engine.status import ACTIVE_TASK_STATUSES, ENDED_TASK_STATUSES, FileStatus
from engine.store import FileRecord, TaskRecord
from engine.version import version

if TYPE_CHECKING:
    from engine.node import RecordingNode

STATUS_FILTERS = {"active": ACTIVE_TASK_STATUSES, "ended": ENDED_TASK_STATUSES,
                  "all": ACTIVE_TASK_STATUSES + ENDED_TASK_STATUSES}
FILE_STATUS_NAMES = {FileStatus.RECORDING: "recording", FileStatus.UPLOADING: "uploading",
                     FileStatus.UPLOADED: "stored", FileStatus.UPLOAD_FAILED: "failed"}


async def overview(node: RecordingNode, room_id: str | None, status: str) -> dict[str, Any]:
    statuses = STATUS_FILTERS.get(status, STATUS_FILTERS["all"])
    records = await node.store.recent_tasks(statuses, room_id, defaults.CONSOLE_TASKS)
    streams = await _streams(node, {r.room_id for r in records if r.status in ACTIVE_TASK_STATUSES})
    tasks = [await _task(node, record, streams.get(record.room_id, []) if record.status in ACTIVE_TASK_STATUSES
                         else []) for record in records]
    return {"node": _node(node), "tasks": tasks,
            "callbacks": [_callback(c) for c in await node.store.recent_callbacks(defaults.CONSOLE_CALLBACKS)]}


def _node(node: RecordingNode) -> dict[str, Any]:
    capacity = node.admission.capacity
    active = sum(node.tasks.status_counts().values())
    return {
        "version": version(), "state": str(node.state), "streams": node.streams.count, "activeTasks": active,
        "maxStreams": capacity.max_streams, "maxTasks": capacity.max_tasks,
        "cpu": round(capacity.cpu, 3), "load": round(capacity.load(node.streams.count, active), 3),
        "workers": sorted(({"pid": w.pid, "room": w.config.stream.room_id, "stream": w.config.stream.stream_id}
                           for w in node.supervisor.workers), key=lambda w: (w["room"], w["stream"])),
    }


async def _streams(node: RecordingNode, rooms: set[str]) -> dict[str, list[dict]]:
    """Published streams of these rooms with their workers' counters (loss)."""
    published = [s for s in node.streams.published() if s.room_id in rooms]
    stats = await asyncio.gather(*(node.stream_stats(s.resource_id) for s in published), return_exceptions=True)
    by_room: dict[str, list[dict]] = {}
    for stream, answer in zip(published, stats, strict=True):
        tracks = answer["Tracks"] if isinstance(answer, dict) else {}
        by_room.setdefault(stream.room_id, []).append({
            "streamId": stream.stream_id, "userId": stream.spec.user_id, "input": str(stream.kind),
            "tracks": {kind: _track(counters) for kind, counters in tracks.items()},
        })
    return by_room


def _track(counters: dict[str, float]) -> dict[str, float]:
    received = counters.get("jitter_packets", counters.get("packets", 0))
    lost = counters.get("jitter_lost_packets", counters.get("lost", 0))
    return {"packets": received, "lost": lost,
            "lossPercent": round(100 * lost / (received + lost), 2) if received + lost else 0.0}


async def _task(node: RecordingNode, record: TaskRecord, streams: list[dict]) -> dict[str, Any]:
    files = await node.store.files_of_task(record.task_id)
    return {
        "taskId": record.task_id, "roomId": record.room_id, "status": STATUS_NAMES[record.status],
        "beginMs": record.begin_ms or 0, "endMs": record.end_ms or 0,
        "format": record.request.output.output_format, "streams": streams,
        "files": [_file(node, f) for f in files],
    }


def _file(node: RecordingNode, file: FileRecord) -> dict[str, Any]:
    seconds = file.duration_ms / 1000
    return {
        "fileId": file.file_id, "streamId": file.stream_id, "format": file.output_format,
        "status": FILE_STATUS_NAMES.get(file.status, str(int(file.status))), "size": file.size,
        "durationS": round(seconds, 1), "kbps": round(file.size * 8 / seconds / 1000) if seconds else 0,
        "width": file.width, "height": file.height, "url": node.tasks.files.signed_url(file.file_url),
    }


def _callback(row: dict) -> dict[str, Any]:
    state = "pending" if row["done_ms"] is None else "delivered" if row["delivered"] else "given up"
    return {"taskId": row["task_id"], "sequence": row["sequence"], "event": row["event_type"],
            "host": urllib.parse.urlsplit(row["url"]).hostname or "",  # never the path or query: may hold tokens
            "createdMs": row["created_ms"], "attempts": row["attempts"], "state": state}

