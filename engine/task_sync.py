"""A task belongs to a room, not to a node: every node of the fleet follows every
active task in the shared store, and records the streams of the task's room it holds.

Each sync reads the fleet's active tasks and the streams the other live nodes hold,
then, on this node: takes in a task it had not met (it starts recording the room's
streams published here), applies a pause or resume another node made, and closes
its recordings of a task another node ended. It runs every TASK_SYNC_POLL_S, and at
once when PostgreSQL says (LISTEN/NOTIFY) that a task changed, so a node learns of
new, stopped, paused and resumed tasks within a second.

The same sync keeps the fleet whole when a node dies (its lease runs out): its
streams stop counting in their rooms, its open files are marked interrupted
(engine.store.fleet_queries.INTERRUPTED) and a live node takes over the tasks it
owned, so their room events still come from one node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import structlog

from engine import defaults
from engine.clock import SYSTEM_CLOCK, Clock
from engine.fleet import Fleet
from engine.store import AsyncStore, TaskRecord
from engine.tasks import TaskManager

log = structlog.get_logger("task_sync")


class TaskSync:
    def __init__(self, store: AsyncStore, tasks: TaskManager, fleet: Fleet, clock: Clock = SYSTEM_CLOCK,
                 poll_s: float = defaults.TASK_SYNC_POLL_S):
        self._store = store
        self._tasks = tasks
        self._fleet = fleet
        self._clock = clock
        self.poll_s = poll_s  # read at each round
        self.rounds = 0  # syncs done
        self._wake = asyncio.Event()
        self._elsewhere: dict[str, set[str]] = {}  # room id -> stream ids on the other live nodes
        self._runner: asyncio.Task | None = None
        self._stop_listening: Callable[[], None] | None = None
        tasks.streams_elsewhere = lambda room_id: self._elsewhere.get(room_id, set())

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop_listening = await self._store.listen_for_tasks(lambda: loop.call_soon_threadsafe(self._wake.set))
        await self.sync()
        self._runner = loop.create_task(self._run())

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        if self._stop_listening is not None:
            self._stop_listening()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.sync()
            except Exception:  # the store is away: the next round tries again
                log.exception("task_sync_failed")

    async def sync(self) -> None:
        """One round: what the store says of the fleet's tasks and streams, applied here."""
        self.rounds += 1
        read_at, now_ms = self._tasks.held.changes, self._clock.wall_ms()
        records = await self._store.fleet_active_tasks()
        elsewhere: dict[str, set[str]] = {}
        for room_id, stream_id in await self._store.live_streams_elsewhere(now_ms):
            elsewhere.setdefault(room_id, set()).add(stream_id)
        self._elsewhere = elsewhere
        gone = {n.node_id for n in self._fleet.gone()}
        if gone:
            interrupted = await self._store.interrupt_files_of_gone_nodes(now_ms)
            if interrupted:
                log.warning("files_interrupted", files=interrupted, gone_nodes=sorted(gone))
        active = {r.task_id for r in records}
        for record in records:
            if record.node_id in gone:
                record = await self._take_over(record)
            await self._follow(record, read_at)
        for task in self._tasks.held.all():
            # a task this node took in or changed after the read is newer than what was read
            if task.task_id not in active and task.changed <= read_at:
                await self._tasks.ended_elsewhere(task.task_id)

    async def _take_over(self, record: TaskRecord) -> TaskRecord:
        if await self._store.take_over_task(record.task_id, record.node_id):
            log.warning("task_taken_over", task_id=record.task_id, gone_owner=record.node_id)
            return replace(record, node_id=self._fleet.node_id)
        return record  # another live node was faster: the next read says which

    async def _follow(self, record: TaskRecord, read_at: int) -> None:
        task = self._tasks.held.get(record.task_id)
        if task is None:
            if not self._tasks.held.let_go_lately(record.task_id):
                await self._tasks.adopt(record)
            return
        if task.changed > read_at:
            return
        if task.record.node_id != record.node_id:
            task.record = replace(task.record, node_id=record.node_id)
        if task.record.status is not record.status:
            await self._tasks.apply_status(task, record.status)
