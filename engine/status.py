"""The closed status enums of tasks and files (values are the API's)."""

from __future__ import annotations

import enum


class TaskStatus(enum.IntEnum):
    INITIALISING = 1
    RECORDING = 2
    ENDED = 3
    ENDED_ABNORMALLY = 4
    PAUSED = 5

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.ENDED, TaskStatus.ENDED_ABNORMALLY)


ACTIVE_TASK_STATUSES = (TaskStatus.INITIALISING, TaskStatus.RECORDING, TaskStatus.PAUSED)
ENDED_TASK_STATUSES = (TaskStatus.ENDED, TaskStatus.ENDED_ABNORMALLY)


class FileStatus(enum.IntEnum):
    RECORDING = 1
    UPLOADING = 2
    UPLOADED = 3
    BACKUP = 4
    UPLOAD_FAILED = 5


class EndReason(enum.StrEnum):
    STOPPED = "stopped"  # StopRecord
    IDLE = "idle"  # MaxIdleTime
    MAX_TIME = "max_record_time"
    FAILED = "failed"
