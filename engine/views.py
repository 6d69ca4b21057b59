"""How tasks and files look in API answers and callbacks, in the hosted service's shapes."""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.store import FileRecord, TaskRecord

# OutputFileFormat of tasks that take pictures: the hosted service lists no RecordFiles for them
SNAPSHOT_FORMATS = ("jpg",)
# How a stored FileUrl is handed out (engine.files.FileBook.signed_url: the node's
# own recordings get a fresh signed link).
HandOut = Callable[[str], str]


def task_status(record: TaskRecord, files: list[FileRecord], hand_out: HandOut) -> dict:
    """DescribeRecordStatus's Data. RecordFiles is left out, as the hosted service
    does, for a snapshot task and for a task that ended without recording a file."""
    data = {
        "TaskId": record.task_id,
        "RoomId": record.room_id,
        "RecordMode": record.request.input.record_mode,
        "StreamType": record.request.input.stream_type,
        "Status": int(record.status),
        "RecordBeginTimestamp": record.begin_ms or 0,
        "RecordEndTimestamp": record.end_ms or 0,
    }
    snapshots = record.request.output.output_format in SNAPSHOT_FORMATS
    ended_empty = not files and record.status.terminal
    if not (snapshots or ended_empty):
        data["RecordFiles"] = [file_view(f, hand_out) for f in files]
    return data


def task_page(page_offset: int, page_size: int, total: int, records: list[TaskRecord]) -> dict:
    """DescribeTasks's Data."""
    return {
        "PageOffset": page_offset,
        "PageSize": page_size,
        "TotalCount": total,
        "TaskList": [{"TaskId": r.task_id, "RoomId": r.room_id, "Status": int(r.status),
                      "RecordBeginTimestamp": r.begin_ms or 0} for r in records],
    }


def file_name(file: FileRecord) -> str:
    """FileId: the file's name by OutputFileRule, without OutputFolder. The store keys
    files by their whole object key; names never hold a '/' (identifiers in them are
    percent-encoded), so the name is the key's last segment."""
    return file.file_id.rsplit("/", 1)[-1]


def file_info(file: FileRecord, hand_out: HandOut) -> dict:
    """A file as callbacks carry it: the RecordFiles fields in snake_case."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value
            for key, value in file_view(file, hand_out).items()}


def file_view(file: FileRecord, hand_out: HandOut) -> dict:
    return {
        "UserId": file.user_id,
        "UserName": file.user_name,
        "StreamId": file.stream_id,
        "FileId": file_name(file),
        "FileUrl": hand_out(file.file_url),
        "VideoId": "",  # set by VOD vendors (5, 6) only, which this node does not serve
        "OutputFileFormat": file.output_format,
        "FileSize": file.size,
        "Duration": file.duration_ms,
        "ResolutionWidth": file.width,
        "ResolutionHeight": file.height,
        "MediaTrackType": file.media_track_type,
        "BeginTimestamp": file.begin_ms,
        "Status": int(file.status),
    }
