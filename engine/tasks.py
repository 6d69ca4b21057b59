"""Task lifecycle: StartRecord / StopRecord / Describe*, files, and the one place
that writes terminal states."""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import structlog

from engine import defaults, errors, models
from engine.config import NodeConfig
from engine.rooms import PublishedStream, Rooms
from engine.status import ACTIVE_TASK_STATUSES, ENDED_TASK_STATUSES, EndReason, FileStatus, TaskStatus
from engine.store import AsyncStore, FileRecord, TaskRecord
from storage_adapters.base import StorageError, StorageTarget
from storage_adapters.local import LocalAdapter
from storage_adapters.vendors import LOCAL_DISK, VENDOR_NAMES, adapter_for, supported
from workers import protocol
from workers.config import RecordingSpec

log = structlog.get_logger("tasks")

_TASK_ID_ALPHABET = string.ascii_letters + string.digits
STOP_REPLY_TIMEOUT_S = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


def new_task_id() -> str:
    return "".join(secrets.choice(_TASK_ID_ALPHABET) for _ in range(defaults.TASK_ID_LENGTH))


@dataclass
class ActiveTask:
    record: TaskRecord
    recording_spec: RecordingSpec
    streams: set[str] = field(default_factory=set)  # stream ids being recorded
    files: dict[str, FileRecord] = field(default_factory=dict)  # open files by id

    def wants(self, stream: PublishedStream) -> bool:
        listed = self.record.request.input.record_streams
        return not listed or stream.stream_id in listed


class TaskManager:
    def __init__(self, config: NodeConfig, store: AsyncStore, rooms: Rooms,
                 request: Callable[[PublishedStream, Callable[[int], protocol.Request]], Awaitable[protocol.Reply]],
                 flush: Callable[[PublishedStream], Awaitable[None]]):
        self._config = config
        self._store = store
        self._rooms = rooms
        self._request = request
        self._flush = flush
        self._background: set[asyncio.Task] = set()
        self._active: dict[str, ActiveTask] = {}
        self._ending: dict[str, ActiveTask] = {}  # ended, files still closing
        self._start_lock = asyncio.Lock()

    async def load(self) -> None:
        for record in await self._store.tasks_with_status(ACTIVE_TASK_STATUSES):
            self._active[record.task_id] = ActiveTask(record, self._recording_spec(record))

    # StartRecord
    async def start_record(self, request: models.StartRecordRequest) -> str:
        self._check_supported(request)
        async with self._start_lock:
            if request.client_task_id is not None:
                existing = await self._store.get_task_by_client_id(request.client_task_id)
                if existing is not None:
                    return existing.task_id
            created = now_ms()
            record = TaskRecord(new_task_id(), request.client_task_id, request.room_id, TaskStatus.RECORDING,
                                request, created, begin_ms=created)
            await self._store.insert_task(record)
        task = ActiveTask(record, self._recording_spec(record))
        self._active[record.task_id] = task
        log.info("task_started", task_id=record.task_id, room_id=record.room_id,
                 storage=request.storage.public_view(), stream_type=request.input.stream_type,
                 output_format=request.output.output_format)
        for stream in self._rooms.streams(record.room_id):
            if task.wants(stream):
                await self._start_on_stream(task, stream)
        return record.task_id

    def _check_supported(self, request: models.StartRecordRequest) -> None:
        vendor = request.storage.vendor
        if vendor == LOCAL_DISK and not self._config.local_storage_enabled:
            raise errors.InvalidParameter("StorageParams.Vendor 0 (node disk) is disabled on this node")
        if not supported(vendor):
            raise errors.InvalidParameter(
                f"StorageParams.Vendor {vendor} ({VENDOR_NAMES[vendor]}) is not supported yet")
        if vendor == LOCAL_DISK:
            try:
                LocalAdapter(self._config.storage_root, request.storage.bucket).path_of(
                    request.output.output_folder + "probe")
            except StorageError:
                raise errors.InvalidParameter(
                    "StorageParams.Bucket / RecordOutputParams.OutputFolder leave the storage root") from None

    def _storage_target(self, request: models.StartRecordRequest) -> StorageTarget:
        s = request.storage
        root = str(self._config.storage_root) if s.vendor == LOCAL_DISK else None
        return StorageTarget(vendor=s.vendor, bucket=s.bucket, local_root=root, region=s.region,
                             endpoint=s.endpoint, access_key_id=s.access_key_id,
                             access_key_secret=s.access_key_secret)

    def _recording_spec(self, record: TaskRecord) -> RecordingSpec:
        r = record.request
        return RecordingSpec(task_id=record.task_id, stream_type=r.input.stream_type,
                             output_format=r.output.output_format, output_folder=r.output.output_folder,
                             file_rule=r.output.file_rule, fragment_seconds=r.output.fragment_seconds,
                             storage=self._storage_target(r),
                             realtime_playlist=r.output.realtime_upload_fragment,
                             short_segment_paths=r.output.short_fragment_path)

    async def _start_on_stream(self, task: ActiveTask, stream: PublishedStream) -> None:
        if stream.worker is None or task.record.status is not TaskStatus.RECORDING:
            return
        try:
            reply = await self._request(stream, lambda rid: protocol.StartRecording(rid, task.recording_spec))
        except Exception as error:  # the worker died meanwhile: its exit handler takes over
            log.warning("start_recording_failed", task_id=task.record.task_id, stream_id=stream.stream_id,
                        error=str(error))
            return
        if reply.ok:
            task.streams.add(stream.stream_id)

    # streams coming and going
    async def stream_ready(self, stream: PublishedStream) -> None:
        for task in list(self._active.values()):
            if task.record.room_id == stream.room_id and task.wants(stream):
                await self._start_on_stream(task, stream)

    def stream_gone(self, stream: PublishedStream) -> None:
        for task in self._active.values():
            task.streams.discard(stream.stream_id)

    async def worker_lost(self, stream: PublishedStream) -> None:
        """The stream's worker died: what it wrote is kept, each open file is closed
        with what storage holds."""
        self.stream_gone(stream)
        for task in list(self._active.values()):
            for file in [f for f in task.files.values() if f.stream_id == stream.stream_id]:
                size = await asyncio.to_thread(self._stored_size, task, file.file_id)
                await self._close_file(task, file, size if size is not None else file.size, file.duration_ms,
                                       ok=size is not None)

    def _stored_size(self, task: ActiveTask, key: str) -> int | None:
        try:
            return adapter_for(task.recording_spec.storage).object_size(key)
        except StorageError:
            return None

    # worker events
    async def on_event(self, stream: PublishedStream, event: object) -> None:
        match event:
            case protocol.FileOpened():
                task = self._task_for_event(event.task_id)
                if task is None:
                    return
                file = FileRecord(
                    file_id=event.file_id, task_id=event.task_id, stream_id=stream.stream_id,
                    user_id=stream.spec.user_id, user_name=stream.user_name, output_format=event.output_format,
                    file_url=event.file_url, media_track_type=event.media_track_type, begin_ms=event.begin_ms,
                    status=FileStatus.RECORDING, width=event.width, height=event.height)
                task.files[file.file_id] = file
                await self._store.upsert_file(file)
            case protocol.FileProgress():
                task = self._task_for_event(event.task_id)
                file = task.files.get(event.file_id) if task else None
                if task is not None and file is not None:
                    file = replace(file, size=event.size, duration_ms=event.duration_ms)
                    task.files[file.file_id] = file
                    await self._store.upsert_file(file)
            case protocol.FileClosed():
                task = self._task_for_event(event.task_id)
                file = task.files.get(event.file_id) if task else None
                if task is not None and file is not None:
                    await self._close_file(task, file, event.size, event.duration_ms, ok=event.ok)
            case protocol.RecordingFailed():
                log.error("recording_failed", task_id=event.task_id, stream_id=stream.stream_id,
                          quit_reason=event.quit_reason, message=event.message)
                task = self._active.get(event.task_id)
                if task is not None:
                    # Not awaited here: ending waits for this very event queue to drain.
                    ending = asyncio.get_running_loop().create_task(
                        self._end(task, TaskStatus.ENDED_ABNORMALLY, f"{EndReason.FAILED}:{event.quit_reason}"))
                    self._background.add(ending)
                    ending.add_done_callback(self._background.discard)

    def _task_for_event(self, task_id: str) -> ActiveTask | None:
        # Files keep arriving after a task ended (its files close after StopRecord).
        return self._active.get(task_id) or self._ending.get(task_id)

    async def _close_file(self, task: ActiveTask, file: FileRecord, size: int, duration_ms: int, ok: bool) -> None:
        status = FileStatus.UPLOADED if ok else FileStatus.UPLOAD_FAILED
        file = replace(file, size=size, duration_ms=duration_ms, status=status)
        task.files.pop(file.file_id, None)
        await self._store.upsert_file(file)

    # StopRecord and every other end: the one writer of terminal states
    async def stop_record(self, task_id: str) -> None:
        task = self._active.get(task_id)
        if task is None:
            record = await self._store.get_task(task_id)
            if record is None:
                raise errors.TaskNotFound()
            raise errors.TaskAlreadyStopped()
        await self._end(task, TaskStatus.ENDED, EndReason.STOPPED)

    async def _end(self, task: ActiveTask, status: TaskStatus, reason: str) -> None:
        assert status.terminal
        task_id = task.record.task_id
        if self._active.pop(task_id, None) is None:
            return
        self._ending[task_id] = task
        end = now_ms()
        task.record = replace(task.record, status=status, end_ms=end, end_reason=reason)
        await self._store.update_task(task_id, status=status, end_ms=end, end_reason=reason)
        log.info("task_ended", task_id=task_id, status=int(status), reason=reason)
        streams = [s for s in self._rooms.streams(task.record.room_id)
                   if s.stream_id in task.streams and s.worker is not None]
        results = await asyncio.gather(
            *(asyncio.wait_for(self._request(s, lambda rid: protocol.StopRecording(rid, task_id)),
                               STOP_REPLY_TIMEOUT_S) for s in streams),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("stop_recording_failed", task_id=task_id, error=str(result))
        # The files' last events came before the replies: let them reach the store.
        await asyncio.gather(*(self._flush(s) for s in streams))
        task.streams.clear()
        self._ending.pop(task_id, None)

    # Describe*
    async def describe(self, task_id: str) -> dict:
        record = await self._store.get_task(task_id)
        if record is None:
            raise errors.TaskNotFound()
        files = await self._store.files_of_task(task_id)
        return {
            "TaskId": record.task_id,
            "RoomId": record.room_id,
            "RecordMode": record.request.input.record_mode,
            "StreamType": record.request.input.stream_type,
            "Status": int(record.status),
            "RecordBeginTimestamp": record.begin_ms or 0,
            "RecordEndTimestamp": record.end_ms or 0,
            "RecordFiles": [file_view(f) for f in files],
        }

    async def describe_tasks(self, request: models.DescribeTasksRequest) -> dict:
        statuses = ACTIVE_TASK_STATUSES if request.status == 2 else ENDED_TASK_STATUSES
        total, records = await self._store.page_tasks(
            statuses, request.room_id, request.start_time_ms, request.end_time_ms,
            (request.page_offset - 1) * request.page_size, request.page_size)
        return {
            "PageOffset": request.page_offset,
            "PageSize": request.page_size,
            "TotalCount": total,
            "TaskList": [
                {"TaskId": r.task_id, "RoomId": r.room_id, "Status": int(r.status),
                 "RecordBeginTimestamp": r.begin_ms or 0}
                for r in records
            ],
        }


def file_view(file: FileRecord) -> dict:
    return {
        "UserId": file.user_id,
        "UserName": file.user_name,
        "StreamId": file.stream_id,
        "FileId": file.file_id,
        "FileUrl": file.file_url,
        "OutputFileFormat": file.output_format,
        "FileSize": file.size,
        "Duration": file.duration_ms,
        "ResolutionWidth": file.width,
        "ResolutionHeight": file.height,
        "MediaTrackType": file.media_track_type,
        "BeginTimestamp": file.begin_ms,
        "Status": int(file.status),
    }

