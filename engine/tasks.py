"""Task lifecycle on a node: StartRecord / StopRecord / PauseRecord / ResumeRecord,
the tasks of the fleet this node records (engine.task_sync keeps them in step with
the store), and the one place that writes terminal states."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from contract import protocol
from contract.codes import CallbackEvent, QuitReason
from contract.worker import RecordingSpec
from engine import checks, errors, models
from engine.active_task import ActiveTask, HeldTasks, StreamControl, judge, recording_spec
from engine.clock import SYSTEM_CLOCK, Clock
from engine.config import NodeConfig
from engine.files import FileBook
from engine.rooms import PublishedStream, Rooms
from engine.snapshots import SnapshotBook
from engine.start_gate import StartGate, new_task_id
from engine.status import ACTIVE_TASK_STATUSES, EndReason, FileStatus, TaskStatus
from engine.store import AsyncStore, TaskRecord
from engine.task_end import after_uploads, settle_here

log = structlog.get_logger("tasks")

STOP_REPLY_TIMEOUT_S = 10.0


Emit = Callable[[str, str, str, int, str, dict], Awaitable[None]]


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
        self.held = HeldTasks(clock)  # the fleet's active tasks this node follows (engine.task_sync reads it too)
        self._gate = StartGate(store)
        # the ids of a room's streams on the fleet's other live nodes (engine.task_sync)
        self.streams_elsewhere: Callable[[str], set[str]] = lambda room_id: set()

    @property
    def node_id(self) -> str:
        return self._config.node_id

    def _owned(self) -> list[ActiveTask]:
        """The tasks this node owns (created, or took over from a node that died)."""
        return [t for t in self.held.all() if t.record.node_id == self.node_id]

    async def load(self) -> None:
        for record in await self._store.tasks_with_status(ACTIVE_TASK_STATUSES):
            self._hold(record)
        await self._reconcile_files(self._clock.monotonic())

    def _hold(self, record: TaskRecord) -> ActiveTask:
        """An active task of the store (this node's, or one it learnt of) held here."""
        started = self._clock.monotonic() - (self._clock.wall_ms() - record.created_ms) / 1000
        task = ActiveTask(record, self._recording_spec(record), started)
        self.held.add(task)
        self._register_files(task)
        return task

    async def adopt(self, record: TaskRecord) -> ActiveTask:
        """A task of the fleet this node had not met: it records the room's streams it holds."""
        task = self._hold(record)
        log.info("task_adopted", task_id=record.task_id, room_id=record.room_id, owner=record.node_id)
        for stream in self._rooms.streams(record.room_id):
            if task.wants(stream):
                await self._start_on_stream(task, stream)
        return task

    async def _reconcile_files(self, now: float) -> None:
        """Files a previous run left recording or uploading: settle them, and send the
        end-of-task events it still owed."""
        unsettled = await self._store.files_with_status((FileStatus.RECORDING, FileStatus.UPLOADING))
        # marked interrupted by another node while this one was away: settled as left recording
        unsettled += [replace(f, status=FileStatus.RECORDING) for f in await self._store.interrupted_files()]
        for task_id in {f.task_id for f in unsettled}:
            record = await self._store.get_task(task_id)
            if record is None:
                continue
            task = self.held.get(task_id) or ActiveTask(record, self._recording_spec(record), now)
            self._register_files(task)
            if not record.status.terminal:
                continue
            if record.node_id == self.node_id and CallbackEvent.UPLOADED not in await self._store.events_of_task(
                    task_id):
                self._in_background(self._after_uploads(task, record.end_reason or ""))
            else:  # its owner sent (or sends) its events: this node only finishes its own files
                self._in_background(self._settle_here(task))
        await self.files.reconcile(unsettled)

    def status_counts(self) -> dict[TaskStatus, int]:
        counts = {status: 0 for status in ACTIVE_TASK_STATUSES}
        for task in self._owned():
            counts[task.record.status] += 1
        return counts

    # StartRecord
    async def start_record(self, request: models.StartRecordRequest, admit: Callable[[int], None]) -> str:
        """A new task, once `admit(tasks active or being created)` lets it in (it raises
        otherwise). A ClientTaskId already known, or being created right now, answers
        that task without asking `admit`: a repeat is never refused for capacity."""
        async def create() -> str:
            await checks.check_storage(self._config, request)
            await checks.check_callback_url(self._config, request.output.callback_url)
            return (await self._insert(request)).task_id

        task_id, created = await self._gate.enter(request.client_task_id,
                                                  lambda creating: admit(len(self._owned()) + creating), create)
        task = self.held.get(task_id)
        if created and task is not None:
            for stream in self._rooms.streams(task.record.room_id):
                if task.wants(stream):
                    await self._start_on_stream(task, stream)
        return task_id

    async def _insert(self, request: models.StartRecordRequest) -> ActiveTask:
        created = self._clock.wall_ms()
        record = TaskRecord(new_task_id(), request.client_task_id, request.room_id, TaskStatus.RECORDING,
                            request, created, begin_ms=created, node_id=self.node_id)
        await self._store.insert_task(record)
        task = self._hold(record)
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
        return recording_spec(record, self.files.destination(record.task_id, record.request.storage).for_worker(),
                              self._config.mp4_audio)

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
        for task in self.held.all():
            if task.record.room_id == stream.room_id and task.wants(stream):
                await self._start_on_stream(task, stream)

    def stream_gone(self, stream: PublishedStream) -> tuple[list[str], list[str]]:
        """The stream left its room. Returns the tasks whose recording of it stays open
        (FillBlank: the file continues if it comes back) and those whose must close."""
        keep, stop = [], []
        for task in self.held.all():
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
        for task in [t for t in self.held.all() if t.record.room_id == room_id]:
            listed = task.record.request.input.record_streams
            if listed and stream_id not in listed:
                continue
            alone = not task.streams and not self._recorded_elsewhere(task)
            log.warning("stream_unsupported", task_id=task.task_id, room_id=room_id, stream_id=stream_id,
                        reason=reason, task_ends=alone)
            if alone:
                await self._end(task, TaskStatus.ENDED_ABNORMALLY, EndReason.FAILED, QuitReason.UNSUPPORTED_FORMAT)

    def _recorded_elsewhere(self, task: ActiveTask) -> bool:
        """Whether another live node of the fleet holds a stream the task records."""
        return any(task.wants_id(s) for s in self.streams_elsewhere(task.record.room_id))

    def keeps_open(self, room_id: str, stream_id: str) -> bool:
        """Whether a task still holds a recording of this (departed) stream open."""
        return any(t.record.room_id == room_id and stream_id in t.streams for t in self.held.all())

    async def worker_lost(self, stream: PublishedStream) -> None:
        """The stream's worker died: what it wrote is kept (see FileBook.worker_lost)."""
        tasks = {t.task_id for t in self.held.all() if t.record.room_id == stream.room_id}
        for task_id in tasks:
            self.held.get(task_id).streams.discard(stream.stream_id)
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
                task = self.held.get(event.task_id)
                if task is not None:
                    # Not awaited here: closing waits for this very event queue to drain.
                    self._in_background(self._recording_failed(task, stream, event.quit_reason))

    async def _recording_failed(self, task: ActiveTask, stream: PublishedStream, quit_reason: QuitReason) -> None:
        """One stream's recording failed (its file cannot be opened or written). Only
        that stream leaves the task, its file closed with what was written; the task
        ends abnormally when the failure is the node's (the spool is full: every stream
        would fail) or when no other stream of the task is recording."""
        alone = task.streams <= {stream.stream_id} and not self._recorded_elsewhere(task)
        if quit_reason == QuitReason.OUT_OF_DISK_SPACE or alone:
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
        """A task of the fleet, held here (one created on another node a moment ago is taken in now)."""
        task = self.held.get(task_id)
        if task is None:
            record = await self._store.get_task(task_id)
            if record is None:
                raise errors.TaskNotFound()
            if record.status.terminal:
                raise errors.TaskAlreadyStopped()
            task = self.held.get(task_id) or await self.adopt(record)
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
        """Pause or resume on every node: the store says whether this call did it (the
        other nodes apply it on their next sync); the node that did sends the event."""
        was, status = (TaskStatus.RECORDING, TaskStatus.PAUSED) if paused else (TaskStatus.PAUSED, TaskStatus.RECORDING)
        if not await self._store.change_task_status(task.task_id, was, status):
            record = await self._store.get_task(task.task_id)
            if record is None or record.status.terminal:
                raise errors.TaskAlreadyStopped()
            raise errors.InvalidParameter("TaskId: the task is already paused") if paused else errors.TaskNotPaused()
        await self.apply_status(task, status)
        await self._emit(task, CallbackEvent.PAUSED if paused else CallbackEvent.RESUMED, "paused" if paused else "resumed", {})

    async def apply_status(self, task: ActiveTask, status: TaskStatus) -> None:
        """Paused or recording, as the store says: this node's recordings of the task follow."""
        task.record = replace(task.record, status=status)
        self.held.touch(task)
        make = protocol.PauseRecording if status is TaskStatus.PAUSED else protocol.ResumeRecording
        await self._on_recording_streams(task, lambda rid: make(rid, task.task_id))
        log.info("task_paused" if status is TaskStatus.PAUSED else "task_resumed", task_id=task.task_id)

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

    # room rules, on the node's ticker, with the room's streams on every live node
    async def tick(self) -> None:
        now, wall, config = self._clock.monotonic(), self._clock.wall_ms(), self._config
        for task in self.held.all():
            room = task.record.room_id
            here = {s.stream_id for s in self._rooms.streams(room)}
            verdict = judge(task, now, wall, here | self.streams_elsewhere(room), task.record.node_id == self.node_id,
                            config.room_empty_event_s, config.stream_missing_event_s)
            if verdict.max_time:
                await self._end(task, TaskStatus.ENDED, EndReason.MAX_TIME, QuitReason.MAX_RECORD_TIME)
            elif verdict.idle:
                await self._end(task, TaskStatus.ENDED, EndReason.IDLE, QuitReason.MAX_IDLE_TIME)
            elif verdict.room_empty:
                await self._emit(task, CallbackEvent.ROOM_EMPTY, "no stream in the room", {})
            for stream_id in verdict.missing:
                await self._emit(task, CallbackEvent.STREAM_MISSING, "stream does not exist", {"stream_id": stream_id})

    async def _emit(self, task: ActiveTask, event_type: int, message: str, detail: dict) -> None:
        await self._emit_callback(task.task_id, task.record.room_id, task.record.request.output.callback_url,
                                  event_type, message, detail)

    async def _end(self, task: ActiveTask, status: TaskStatus, reason: str, quit_reason: QuitReason | None = None) -> None:
        """The one writer of terminal states, and of the end-of-task callbacks: of the
        nodes that would end the task, the one whose conditional write did sends them."""
        assert status.terminal
        task_id = task.record.task_id
        if self.held.let_go(task_id) is None:
            return
        end = self._clock.wall_ms()
        if not await self._store.end_task(task_id, status, end, reason):  # another node ended it a moment ago
            log.info("task_ended_elsewhere", task_id=task_id, would_have=reason)
            await self._close_here(task)
            self._in_background(self._settle_here(task))
            return
        task.record = replace(task.record, status=status, end_ms=end, end_reason=reason)
        log.info("task_ended", task_id=task_id, status=int(status), reason=reason, quit_reason=quit_reason)
        if reason == EndReason.STOPPED:
            await self._emit(task, CallbackEvent.STOPPED_UPLOADING, "stopped, files uploading", {})
        else:
            await self._emit(task, CallbackEvent.ABNORMAL_END, f"task ended: {reason}", {"quit_reason": int(quit_reason) if quit_reason is not None else None})
        await self._close_here(task)
        # StopRecord answers now; upload-finished (and normal-exit) follow when the bucket holds everything.
        self._in_background(self._after_uploads(task, reason))

    async def ended_elsewhere(self, task_id: str) -> None:
        """Another node ended the task (engine.task_sync): this node closes its files of it."""
        task = self.held.let_go(task_id)
        if task is not None:
            log.info("task_ended_elsewhere", task_id=task_id)
            await self._close_here(task)
            self._in_background(self._settle_here(task))

    async def _close_here(self, task: ActiveTask) -> None:
        streams = await self._on_recording_streams(task, lambda rid: protocol.StopRecording(rid, task.task_id))
        # The files' last events came before the replies: let them reach the store.
        await asyncio.gather(*(self._streams.flush(s) for s in streams))
        task.streams.clear()

    async def _after_uploads(self, task: ActiveTask, reason: str) -> None:
        await after_uploads(task, reason, self.files, self.snapshots, self._clock,
                            lambda *event: self._emit(task, *event))

    async def _settle_here(self, task: ActiveTask) -> None:
        await settle_here(task, self.files, self.snapshots)
