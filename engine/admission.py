"""Whether the node takes new work: one place for publishing and for StartRecord.

A node takes work once it has started and until it drains. Past its capacity
(engine.capacity: counts and CPU) it answers busy, publishing with 503 +
Retry-After and StartRecord with 300010001, rather than degrading every stream
it already records. A busy answer names the limit hit, and every refusal is logged.
"""

from __future__ import annotations

import enum

import structlog

from engine import errors, models
from engine.capacity import Capacity

log = structlog.get_logger("admission")

RETRY_AFTER_S = 5  # what a busy publishing answer asks the publisher to wait


class NodeState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class Admission:
    def __init__(self, capacity: Capacity):
        self.capacity = capacity
        self.state = NodeState.STARTING

    def open(self) -> None:
        self.state = NodeState.READY

    def drain(self) -> None:
        self.state = NodeState.DRAINING

    @property
    def draining(self) -> bool:
        return self.state is NodeState.DRAINING

    def stream_refusal(self, streams: int) -> str | None:
        """Why a publish is not taken, with `streams` published or being published now; None: it is."""
        if self.state is not NodeState.READY:
            return "node is draining or starting"
        limit = self.capacity.stream_refusal(streams)
        return limit and f"node at capacity: {limit}"

    def admit_stream(self, streams: int, room_id: str, stream_id: str) -> None:
        """Publishing, with `streams` published or being published now."""
        busy = self.stream_refusal(streams)
        if busy:
            log.warning("publish_refused", room_id=room_id, stream_id=stream_id, reason=busy)
            raise errors.IngestError(503, busy, retry_after=RETRY_AFTER_S)

    def admit_task(self, tasks: int, request: models.StartRecordRequest) -> None:
        """StartRecord of a new task, with `tasks` active or being created now (a repeat
        of a known ClientTaskId only answers its task and is not asked about)."""
        busy: str | None
        if self.draining:
            busy = "node is draining"
        else:
            limit = self.capacity.task_refusal(tasks)
            busy = limit and f"node at capacity: {limit}"
        if busy:
            log.warning("start_record_refused", room_id=request.room_id, reason=busy)
            raise errors.NodeBusy(busy)
