"""How tasks and files look in API answers and callbacks."""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.store import FileRecord, TaskRecord

# How a stored FileUrl is handed out (engine.files.FileBook.signed_url: the node's
# own recordings get a fresh signed link).
HandOut = Callable[[str], str]


def task_status(record: TaskRecord, files: list[FileRecord], hand_out: HandOut) -> dict:
    """DescribeRecordStatus's Data."""
    return {
        "TaskId": record.task_id,
        "RoomId": record.room_id,
        "RecordMode": record.request.input.record_mode,
        "StreamType": record.request.input.stream_type,
        "Status": int(record.status),
        "RecordBeginTimestamp": record.begin_ms or 0,
        "RecordEndTimestamp": record.end_ms or 0,
        "RecordFiles": [file_view(f, hand_out) for f in files],
    }


def task_page(page_offset: int, page_size: int, total: int, records: list[TaskRecord]) -> dict:
    """DescribeTasks's Data."""
    return {
        "PageOffset": page_offset,
        "PageSize": page_size,
        "TotalCount": total,
        "TaskList": [{"TaskId": r.task_id, "RoomId": r.room_id, "Status": int(r.status),
                      "RecordBeginTimestamp": r.begin_ms or 0} for r in records],
    }


def file_info(file: FileRecord, hand_out: HandOut) -> dict:
    """A file as callbacks carry it: the RecordFiles fields in snake_case."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value
            for key, value in file_view(file, hand_out).items()}


def file_view(file: FileRecord, hand_out: HandOut) -> dict:
    return {
        "UserId": file.user_id,
        "UserName": file.user_name,
        "StreamId": file.stream_id,
        "FileId": file.file_id,
        "FileUrl": hand_out(file.file_url),
        "OutputFileFormat": file.output_format,
        "FileSize": file.size,
        "Duration": file.duration_ms,
        "ResolutionWidth": file.width,
        "ResolutionHeight": file.height,
        "MediaTrackType": file.media_track_type,
        "BeginTimestamp": file.begin_ms,
        "Status": int(file.status),
    }

