"""Task lifecycle: StartRecord / StopRecord / Describe*, files, and the one place
that writes terminal states."""

from __future__ import annotations

import asyncio
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from contract import protocol
from contract.codes import CallbackEvent, QuitReason
from contract.worker import RecordingSpec
from engine import checks, defaults, errors, metrics, models, views
from engine.clock import SYSTEM_CLOCK, Clock
from engine.config import NodeConfig
from engine.files import FileBook
from engine.rooms import PublishedStream, Rooms
from engine.snapshots import SnapshotBook
from engine.status import ACTIVE_TASK_STATUSES, ENDED_TASK_STATUSES, EndReason, FileStatus, TaskStatus
from engine.store import AsyncStore, Conflict, TaskRecord

log = structlog.get_logger("tasks")

_TASK_ID_ALPHABET = string.ascii_letters + string.digits
STOP_REPLY_TIMEOUT_S = 10.0


def new_task_id() -> str:
    return "".join(secrets.choice(_TASK_ID_ALPHABET) for _ in range(defaults.TASK_ID_LENGTH))


Emit = Callable[[str, str, str, int, str, dict], Awaitable[None]]


class StreamControl(Protocol):
    """What tasks need of a stream's worker (engine.events.WorkerEvents)."""

    async def request(self, stream: PublishedStream, make: Callable[[int], protocol.Request]) -> protocol.Reply:
        """Send a request to the stream's worker and wait for its reply."""

    async def flush(self, stream: PublishedStream) -> None:
        """Wait until every event the stream's worker sent so far has been handled."""


@dataclass
class ActiveTask:
    record: TaskRecord
    recording_spec: RecordingSpec
    started: float  # monotonic time of StartRecord
    streams: set[str] = field(default_factory=set)  # stream ids with a recording in a worker
    seen_streams: set[str] = field(default_factory=set)  # wanted streams published at some point
    idle_since: float | None = None  # monotonic: since when none of its streams is in the room
    next_room_empty_event: float | None = None
    missing_checked: bool = False

    @property
    def task_id(self) -> str:
        return self.record.task_id

    @property
    def fill_blank(self) -> bool:
        return self.record.request.input.fill_blank

    def wants(self, stream: PublishedStream) -> bool:
        listed = self.record.request.input.record_streams
        return not listed or stream.stream_id in listed


class TaskManager:
    def __init__(self, config: NodeConfig, store: AsyncStore, rooms: Rooms, streams: StreamControl, emit: Emit,
                 files: FileBook, snapshots: SnapshotBook, clock: Clock = SYSTEM_CLOCK):
        self._config = config
        self.files = files
        self.snapshots = snapshots
        self._emit_callback = emit
        self._store = store
        self._rooms = rooms
        self._streams = streams
        self._clock = clock
        self._background: set[asyncio.Task] = set()
        self._active: dict[str, ActiveTask] = {}
        self._start_lock = asyncio.Lock()
        self._being_created = 0  # admitted, not yet active
        self._creating: dict[str, asyncio.Future[str]] = {}  # the ClientTaskIds of those, and their answers

    async def load(self) -> None:
        now, wall = self._clock.monotonic(), self._clock.wall_ms()
        for record in await self._store.tasks_with_status(ACTIVE_TASK_STATUSES):
            started = now - (wall - record.created_ms) / 1000
            task = ActiveTask(record, self._recording_spec(record), started)
            self._active[record.task_id] = task
            self._register_files(task)
        await self._reconcile_files(now)

    async def _reconcile_files(self, now: float) -> None:
        """Files a previous run left recording or uploading: settle them, and send the
        end-of-task events it still owed."""
        unsettled = await self._store.files_with_status((FileStatus.RECORDING, FileStatus.UPLOADING))
        for task_id in {f.task_id for f in unsettled}:
            record = await self._store.get_task(task_id)
            if record is None:
                continue
            task = self._active.get(task_id) or ActiveTask(record, self._recording_spec(record), now)
            self._register_files(task)
            if record.status.terminal and CallbackEvent.UPLOADED not in await self._store.events_of_task(task_id):
                self._in_background(self._after_uploads(task, record.end_reason or ""))
        await self.files.reconcile(unsettled)

    def status_counts(self) -> dict[TaskStatus, int]:
        counts = {status: 0 for status in ACTIVE_TASK_STATUSES}
        for task in self._active.values():
            counts[task.record.status] += 1
        return counts

    # StartRecord
    async def start_record(self, request: models.StartRecordRequest, admit: Callable[[int], None]) -> str:
        """A new task, once `admit(tasks active or being created)` lets it in (it raises
        otherwise). A ClientTaskId already known, or being created right now, answers
        that task without asking `admit`: a repeat is never refused for capacity."""
        client_id = request.client_task_id
        existing: TaskRecord | None = None
        async with self._start_lock:  # looking up a ClientTaskId, admitting and counting in are one step
            creating = self._creating.get(client_id) if client_id is not None else None
            if client_id is not None and creating is None:
                existing = await self._store.get_task_by_client_id(client_id)
            repeat = creating is not None or existing is not None
            if not repeat:
                admit(len(self._active) + self._being_created)
                self._being_created += 1
                creating = asyncio.get_running_loop().create_future()
                if client_id is not None:
                    self._creating[client_id] = creating
        if existing is not None:
            return existing.task_id
        assert creating is not None
        if repeat:
            return await asyncio.shield(creating)  # the same ClientTaskId, still being created: its answer
        try:
            await checks.check_storage(self._config, request)
            await checks.check_callback_url(self._config, request.output.callback_url)
            task = await self._insert(request)
        except Conflict as conflict:  # another node of the fleet took this ClientTaskId a moment ago
            existing = await self._store.get_task_by_client_id(client_id or "")
            if existing is None:
                creating.set_exception(conflict)
                creating.exception()
                raise
            log.info("client_task_id_taken", task_id=existing.task_id, client_task_id=client_id)
            creating.set_result(existing.task_id)
            return existing.task_id
        except BaseException as error:
            creating.set_exception(error)
            creating.exception()  # a refusal no repeat waits for is not an unretrieved exception
            raise
        finally:
            self._being_created -= 1  # `_insert` made it active first: the count never dips
            if client_id is not None:
                self._creating.pop(client_id, None)
        creating.set_result(task.task_id)
        for stream in self._rooms.streams(task.record.room_id):
            if task.wants(stream):
                await self._start_on_stream(task, stream)
        return task.task_id

    async def _insert(self, request: models.StartRecordRequest) -> ActiveTask:
        created = self._clock.wall_ms()
        record = TaskRecord(new_task_id(), request.client_task_id, request.room_id, TaskStatus.RECORDING,
                            request, created, begin_ms=created)
        await self._store.insert_task(record)
        task = ActiveTask(record, self._recording_spec(record), self._clock.monotonic())
        self._active[record.task_id] = task
        self._register_files(task)
        log.info("task_started", task_id=record.task_id, room_id=record.room_id,
                 storage=request.storage.public_view(), stream_type=request.input.stream_type,
                 output_format=request.output.output_format)
        return task

    def _register_files(self, task: ActiveTask) -> None:
        self.files.register(task.task_id, task.record.request.storage, task.record.room_id,
                            task.record.request.output.callback_url,
                            full_segment_urls=not task.record.request.output.short_fragment_path)
        self.snapshots.register(task.task_id, task.record.room_id, task.record.request.output.callback_url)

    def _recording_spec(self, record: TaskRecord) -> RecordingSpec:
        r = record.request
        return RecordingSpec(task_id=record.task_id, stream_type=r.input.stream_type,
                             output_format=r.output.output_format, output_folder=r.output.output_folder,
                             file_rule=r.output.file_rule, fragment_seconds=r.output.fragment_seconds,
                             storage=self.files.destination(record.task_id, r.storage).for_worker(),
                             realtime_playlist=r.output.realtime_upload_fragment,
                             short_segment_paths=r.output.short_fragment_path,
                             snapshot_interval_s=r.output.snapshot_interval,
                             skip_mute_audio=r.input.record_mute_audio == 2,
                             mute_split_s=r.input.mute_split_threshold if r.input.record_mute_audio == 2 else None,
                             mp4_audio=self._config.mp4_audio)

    async def _start_on_stream(self, task: ActiveTask, stream: PublishedStream) -> None:
        task.seen_streams.add(stream.stream_id)
        if stream.worker is None or task.record.status.terminal:
            return
        try:
            reply = await self._streams.request(stream, lambda rid: protocol.StartRecording(rid, task.recording_spec))
            if reply.ok and task.record.status is TaskStatus.PAUSED:
                await self._streams.request(stream, lambda rid: protocol.PauseRecording(rid, task.task_id))
        except Exception as error:  # the worker died meanwhile: its exit handler takes over
            log.warning("start_recording_failed", task_id=task.task_id, stream_id=stream.stream_id,
                        error=str(error))
            return
        if reply.ok:
            task.streams.add(stream.stream_id)

    # streams coming and going
    async def stream_ready(self, stream: PublishedStream) -> None:
        for task in list(self._active.values()):
            if task.record.room_id == stream.room_id and task.wants(stream):
                await self._start_on_stream(task, stream)

    def stream_gone(self, stream: PublishedStream) -> tuple[list[str], list[str]]:
        """The stream left its room. Returns the tasks whose recording of it stays open
        (FillBlank: the file continues if it comes back) and those whose must close."""
        keep, stop = [], []
        for task in self._active.values():
            if task.record.room_id != stream.room_id or stream.stream_id not in task.streams:
                continue
            if task.fill_blank:
                keep.append(task.task_id)
            else:
                task.streams.discard(stream.stream_id)
                stop.append(task.task_id)
        return keep, stop

    async def stream_unsupported(self, room_id: str, stream_id: str, reason: str) -> None:
        """A publisher offered media the node cannot record, and was refused. A task that
        would record the stream and records nothing else ends as unsupported media
        (quit_reason 1010); one that records other streams goes on without it."""
        for task in [t for t in self._active.values() if t.record.room_id == room_id]:
            listed = task.record.request.input.record_streams
            if listed and stream_id not in listed:
                continue
            log.warning("stream_unsupported", task_id=task.task_id, room_id=room_id, stream_id=stream_id,
                        reason=reason, task_ends=not task.streams)
            if not task.streams:
                await self._end(task, TaskStatus.ENDED_ABNORMALLY, EndReason.FAILED, QuitReason.UNSUPPORTED_FORMAT)

    def keeps_open(self, room_id: str, stream_id: str) -> bool:
        """Whether a task still holds a recording of this (departed) stream open."""
        return any(t.record.room_id == room_id and stream_id in t.streams for t in self._active.values())

    async def worker_lost(self, stream: PublishedStream) -> None:
        """The stream's worker died: what it wrote is kept (see FileBook.worker_lost)."""
        tasks = {t.task_id for t in self._active.values() if t.record.room_id == stream.room_id}
        for task_id in tasks:
            self._active[task_id].streams.discard(stream.stream_id)
        await self.files.worker_lost(lambda f: f.task_id in tasks and f.stream_id == stream.stream_id)

    # worker events
    async def on_event(self, stream: PublishedStream, event: object) -> None:
        match event:
            case protocol.FileOpened():
                writer = stream.worker.pid if stream.worker is not None else None
                await self.files.opened(event, stream.stream_id, stream.spec.user_id, stream.user_name, writer or 0)
            case protocol.FileProgress():
                await self.files.progress(event)
            case protocol.FileClosed():
                await self.files.closed(event)
            case protocol.PlaylistWritten():
                await self.files.playlist_written(event)
            case protocol.SnapshotTaken():
                await self.snapshots.taken(event, stream.stream_id, stream.spec.user_id, stream.user_name)
            case protocol.RecordingFailed():
                log.error("recording_failed", task_id=event.task_id, stream_id=stream.stream_id,
                          quit_reason=event.quit_reason, message=event.message)
                task = self._active.get(event.task_id)
                if task is not None:
                    # Not awaited here: closing waits for this very event queue to drain.
                    self._in_background(self._recording_failed(task, stream, event.quit_reason))

    async def _recording_failed(self, task: ActiveTask, stream: PublishedStream, quit_reason: QuitReason) -> None:
        """One stream's recording failed (its file cannot be opened or written). Only
        that stream leaves the task, its file closed with what was written; the task
        ends abnormally when the failure is the node's (the spool is full: every stream
        would fail) or when no other stream of the task is recording."""
        if quit_reason == QuitReason.OUT_OF_DISK_SPACE or task.streams <= {stream.stream_id}:
            await self._end(task, TaskStatus.ENDED_ABNORMALLY, EndReason.FAILED, quit_reason)
            return
        task.streams.discard(stream.stream_id)  # before any await: a second failure sees it
        try:
            await asyncio.wait_for(self._streams.request(stream, lambda rid: protocol.StopRecording(rid, task.task_id)),
                                   STOP_REPLY_TIMEOUT_S)
            await self._streams.flush(stream)
        except Exception as error:  # the worker died meanwhile: its exit handler settles the file
            log.warning("worker_request_failed", task_id=task.task_id, stream_id=stream.stream_id, error=str(error))

    def _in_background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # StopRecord and every other end: the one writer of terminal states
    async def _active_task(self, task_id: str) -> ActiveTask:
        task = self._active.get(task_id)
        if task is None:
            record = await self._store.get_task(task_id)
            if record is None:
                raise errors.TaskNotFound()
            raise errors.TaskAlreadyStopped()
        return task

    async def stop_record(self, task_id: str) -> None:
        await self._end(await self._active_task(task_id), TaskStatus.ENDED, EndReason.STOPPED)

    # PauseRecord / ResumeRecord
    async def pause_record(self, task_id: str) -> None:
        task = await self._active_task(task_id)
        if task.record.status is TaskStatus.PAUSED:
            raise errors.InvalidParameter("TaskId: the task is already paused")
        await self._set_paused(task, True)

    async def resume_record(self, task_id: str) -> None:
        task = await self._active_task(task_id)
        if task.record.status is not TaskStatus.PAUSED:
            raise errors.TaskNotPaused()
        await self._set_paused(task, False)

    # TakeSnapshot (an extension: the hosted service takes them of mixed streams only)
    async def take_snapshot(self, task_id: str) -> None:
        """A picture of every stream the task records, now: each comes with its own event 1."""
        task = await self._active_task(task_id)
        if task.record.request.input.stream_type == 1 or task.record.request.output.output_format == "mp3":
            raise errors.InvalidParameter("TaskId: the task records no video (StreamType 1 or mp3)")
        if task.record.status is TaskStatus.PAUSED:
            raise errors.InvalidParameter("TaskId: the task is paused")
        await self._on_recording_streams(task, lambda rid: protocol.TakeSnapshot(rid, task_id))
        log.info("snapshot_asked", task_id=task_id)

    async def _set_paused(self, task: ActiveTask, paused: bool) -> None:
        status = TaskStatus.PAUSED if paused else TaskStatus.RECORDING
        task.record = replace(task.record, status=status)
        await self._store.update_task(task.task_id, status=status)
        make = protocol.PauseRecording if paused else protocol.ResumeRecording
        await self._on_recording_streams(task, lambda rid: make(rid, task.task_id))
        log.info("task_paused" if paused else "task_resumed", task_id=task.task_id)
        await self._emit(task, CallbackEvent.PAUSED if paused else CallbackEvent.RESUMED, "paused" if paused else "resumed", {})

    async def _on_recording_streams(self, task: ActiveTask,
                                    make: Callable[[int], protocol.Request]) -> list[PublishedStream]:
        """Send a request to the worker of every stream the task records; returns them."""
        streams = [s for s in self._rooms.recording_streams(task.record.room_id)
                   if s.stream_id in task.streams and s.worker is not None]
        results = await asyncio.gather(
            *(asyncio.wait_for(self._streams.request(s, make), STOP_REPLY_TIMEOUT_S) for s in streams),
            return_exceptions=True)
        for stream, result in zip(streams, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("worker_request_failed", task_id=task.task_id, stream_id=stream.stream_id,
                            error=str(result))
        return streams

    # room rules, on the node's ticker
    async def tick(self) -> None:
        now, wall = self._clock.monotonic(), self._clock.wall_ms()
        for task in list(self._active.values()):
            inputs = task.record.request.input
            if wall - task.record.created_ms >= inputs.max_record_time * 1000:
                await self._end(task, TaskStatus.ENDED, EndReason.MAX_TIME, QuitReason.MAX_RECORD_TIME)
                continue
            if any(task.wants(s) for s in self._rooms.streams(task.record.room_id)):
                task.idle_since = task.next_room_empty_event = None
            else:
                if task.idle_since is None:
                    task.idle_since = now
                    task.next_room_empty_event = now + self._config.room_empty_event_s
                if now - task.idle_since >= inputs.max_idle_time:
                    await self._end(task, TaskStatus.ENDED, EndReason.IDLE, QuitReason.MAX_IDLE_TIME)
                    continue
                if task.next_room_empty_event is not None and now >= task.next_room_empty_event:
                    task.next_room_empty_event += self._config.room_empty_event_s
                    await self._emit(task, CallbackEvent.ROOM_EMPTY, "no stream in the room", {})
            if not task.missing_checked and now - task.started >= self._config.stream_missing_event_s:
                task.missing_checked = True
                for stream_id in inputs.record_streams:
                    if stream_id not in task.seen_streams:
                        await self._emit(task, CallbackEvent.STREAM_MISSING, "stream does not exist",
                                         {"stream_id": stream_id})

    async def _emit(self, task: ActiveTask, event_type: int, message: str, detail: dict) -> None:
        await self._emit_callback(task.task_id, task.record.room_id, task.record.request.output.callback_url,
                                  event_type, message, detail)

    async def _end(self, task: ActiveTask, status: TaskStatus, reason: str, quit_reason: QuitReason | None = None) -> None:
        """The one writer of terminal states, and of the end-of-task callbacks."""
        assert status.terminal
        task_id = task.record.task_id
        if self._active.pop(task_id, None) is None:
            return
        end = self._clock.wall_ms()
        task.record = replace(task.record, status=status, end_ms=end, end_reason=reason)
        await self._store.update_task(task_id, status=status, end_ms=end, end_reason=reason)
        log.info("task_ended", task_id=task_id, status=int(status), reason=reason, quit_reason=quit_reason)
        if reason == EndReason.STOPPED:
            await self._emit(task, CallbackEvent.STOPPED_UPLOADING, "stopped, files uploading", {})
        else:
            await self._emit(task, CallbackEvent.ABNORMAL_END, f"task ended: {reason}", {"quit_reason": int(quit_reason) if quit_reason is not None else None})
        streams = await self._on_recording_streams(task, lambda rid: protocol.StopRecording(rid, task_id))
        # The files' last events came before the replies: let them reach the store.
        await asyncio.gather(*(self._streams.flush(s) for s in streams))
        task.streams.clear()
        # StopRecord answers now; upload-finished (and normal-exit) follow when the bucket holds everything.
        self._in_background(self._after_uploads(task, reason))

    async def _after_uploads(self, task: ActiveTask, reason: str) -> None:
        files = await self.files.wait_settled(task.task_id)
        if reason == EndReason.STOPPED and task.record.end_ms is not None:
            metrics.STOP_TO_DURABLE.observe(max(0, self._clock.wall_ms() - task.record.end_ms) / 1000)
        await self.snapshots.wait_settled(task.task_id)
        if task.record.request.output.output_format != "jpg":  # a jpg task's pictures had an event 1 each
            uploaded = all(f.status is FileStatus.UPLOADED for f in files)
            file_info = [views.file_info(f, self.files.signed_url) for f in files]
            await self._emit(task, CallbackEvent.UPLOADED, "upload finished" if uploaded else "upload partly finished",
                             {"upload_status": 1 if uploaded else 2, "file_info": file_info})
        if reason == EndReason.STOPPED:
            await self._emit(task, CallbackEvent.NORMAL_EXIT, "normal exit", {})
        await self.files.forget(task.task_id)
        self.snapshots.forget(task.task_id)

    # Describe*
    async def describe(self, task_id: str) -> dict:
        record = await self._store.get_task(task_id)
        if record is None:
            raise errors.TaskNotFound()
        return views.task_status(record, await self._store.files_of_task(task_id), self.files.signed_url)

    async def describe_tasks(self, request: models.DescribeTasksRequest) -> dict:
        statuses = ACTIVE_TASK_STATUSES if request.status == 2 else ENDED_TASK_STATUSES
        total, records = await self._store.page_tasks(
            statuses, request.room_id, request.start_time_ms, request.end_time_ms,
            (request.page_offset - 1) * request.page_size, request.page_size)
        return views.task_page(request.page_offset, request.page_size, total, records)
