"""An active task as a node holds it, what its workers are told to record, and
the room rules judged on the node's ticker (MaxRecordTime, MaxIdleTime, the
room-empty and stream-missing events) from the room's streams on every live node
of the fleet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from contract import protocol

from contract.storage import DestinationSpec
from contract.worker import RecordingSpec
from engine.clock import Clock
from engine.rooms import PublishedStream
from engine.store import TaskRecord


class StreamControl(Protocol):
    """What tasks need of a stream's worker (engine.events.WorkerEvents)."""

    async def request(self, stream: PublishedStream, make: Callable[[int], protocol.Request]) -> protocol.Reply:
        """Send a request to the stream's worker and wait for its reply."""

    async def flush(self, stream: PublishedStream) -> None:
        """Wait until every event the stream's worker sent so far has been handled."""


ENDED_MEMORY_S = 60.0  # far longer than a sync's read of the store takes


@dataclass
class ActiveTask:
    record: TaskRecord
    recording_spec: RecordingSpec
    started: float  # monotonic time of StartRecord
    streams: set[str] = field(default_factory=set)  # stream ids with a recording in a worker of this node
    seen_streams: set[str] = field(default_factory=set)  # wanted streams published at some point, on any node
    idle_since: float | None = None  # monotonic: since when none of its streams is in the room
    next_room_empty_event: float | None = None
    missing_checked: bool = False
    changed: int = 0  # TaskManager.changes when this node last learnt or changed its state (engine.task_sync)

    @property
    def task_id(self) -> str:
        return self.record.task_id

    @property
    def fill_blank(self) -> bool:
        return self.record.request.input.fill_blank

    def wants(self, stream: PublishedStream) -> bool:
        return self.wants_id(stream.stream_id)

    def wants_id(self, stream_id: str) -> bool:
        listed = self.record.request.input.record_streams
        return not listed or stream_id in listed


def recording_spec(record: TaskRecord, storage: DestinationSpec, mp4_audio: str) -> RecordingSpec:
    r = record.request
    return RecordingSpec(task_id=record.task_id, stream_type=r.input.stream_type,
                         output_format=r.output.output_format, output_folder=r.output.output_folder,
                         file_rule=r.output.file_rule, fragment_seconds=r.output.fragment_seconds,
                         storage=storage, realtime_playlist=r.output.realtime_upload_fragment,
                         short_segment_paths=r.output.short_fragment_path,
                         snapshot_interval_s=r.output.snapshot_interval,
                         skip_mute_audio=r.input.record_mute_audio == 2,
                         mute_split_s=r.input.mute_split_threshold if r.input.record_mute_audio == 2 else None,
                         mp4_audio=mp4_audio)


class HeldTasks:
    """The active tasks a node holds, by id, with what its task sync asks of them:
    which changed after a read of the store began (`changes` counts this node's
    changes), and which it let go lately (a read from before may still list them)."""

    def __init__(self, clock: Clock, ended_memory_s: float = ENDED_MEMORY_S):
        self._tasks: dict[str, ActiveTask] = {}
        self._let_go_at: dict[str, float] = {}  # task id -> monotonic time
        self._clock = clock
        self._memory_s = ended_memory_s
        self.changes = 0

    def get(self, task_id: str) -> ActiveTask | None:
        return self._tasks.get(task_id)

    def all(self) -> list[ActiveTask]:
        return list(self._tasks.values())

    def add(self, task: ActiveTask) -> None:
        self._tasks[task.task_id] = task
        self.touch(task)

    def touch(self, task: ActiveTask) -> None:
        """The node changed the task (or learnt of it) now."""
        self.changes += 1
        task.changed = self.changes

    def let_go(self, task_id: str) -> ActiveTask | None:
        self._let_go_at[task_id] = self._clock.monotonic()
        return self._tasks.pop(task_id, None)

    def let_go_lately(self, task_id: str) -> bool:
        horizon = self._clock.monotonic() - self._memory_s
        for old in [t for t, at in self._let_go_at.items() if at < horizon]:
            del self._let_go_at[old]
        return task_id in self._let_go_at


@dataclass(frozen=True)
class Verdict:
    max_time: bool = False  # MaxRecordTime reached: the task ends
    idle: bool = False  # MaxIdleTime reached: the task ends
    room_empty: bool = False  # send the room-empty event
    missing: tuple[str, ...] = ()  # send a stream-missing event for each


def judge(task: ActiveTask, now: float, wall_ms: int, room_stream_ids: set[str], owner: bool,
          room_empty_event_s: float, stream_missing_event_s: float) -> Verdict:
    """The rules for one task, given the ids of its room's streams on every live node.
    Events are the owner's to send (one node of the fleet); any node may end the task
    (the store lets one of them do it)."""
    inputs = task.record.request.input
    if wall_ms - task.record.created_ms >= inputs.max_record_time * 1000:
        return Verdict(max_time=True)
    wanted = {s for s in room_stream_ids if task.wants_id(s)}
    task.seen_streams |= wanted
    room_empty = False
    if wanted:
        task.idle_since = task.next_room_empty_event = None
    else:
        if task.idle_since is None:
            task.idle_since = now
            task.next_room_empty_event = now + room_empty_event_s
        if now - task.idle_since >= inputs.max_idle_time:
            return Verdict(idle=True)
        if task.next_room_empty_event is not None and now >= task.next_room_empty_event:
            task.next_room_empty_event += room_empty_event_s
            room_empty = owner
    missing: tuple[str, ...] = ()
    if owner and not task.missing_checked and now - task.started >= stream_missing_event_s:
        task.missing_checked = True
        missing = tuple(s for s in inputs.record_streams if s not in task.seen_streams)
    return Verdict(room_empty=room_empty, missing=missing)
