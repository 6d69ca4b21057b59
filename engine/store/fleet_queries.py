"""The queries by which the nodes of a fleet share their tasks (engine.task_sync):
every node reads the fleet's active tasks and the streams its live members hold,
and a change of a task's state is decided once, by a conditional UPDATE whose
returned rows say which node made it.

A mixin of engine.store.queries.Store (its `_db`, `node_id` and row readers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.status import ACTIVE_TASK_STATUSES, FileStatus, TaskStatus
from engine.store.url import POSTGRESQL

if TYPE_CHECKING:
    from engine.store.database import Database, Row
    from engine.store.records import FileRecord, TaskRecord

TASKS_CHANNEL = "recnode_tasks"  # PostgreSQL NOTIFY channel: a task was created or changed its state
OPEN_FILE_STATUSES = (FileStatus.RECORDING, FileStatus.UPLOADING)
# A file whose node's lease ran out while it was open. The API has no status for it:
# upload failed (5) is what it is until that node comes back, settles it (it stays
# `unsettled` meanwhile) and says uploaded (3), or failed for good.
INTERRUPTED = FileStatus.UPLOAD_FAILED

_ACTIVE = ",".join(str(int(s)) for s in ACTIVE_TASK_STATUSES)


class FleetQueries:
    _db: Database
    node_id: str

    if TYPE_CHECKING:  # Store's
        @staticmethod
        def _task(row: Row) -> TaskRecord: ...

        def _files(self, query: str, params: tuple) -> list[FileRecord]: ...

    def tasks_changed(self) -> None:
        """Wake the other nodes' task sync now (PostgreSQL); on SQLite they poll."""
        if self._db.kind == POSTGRESQL:
            self._db.execute("SELECT pg_notify(?, '')", (TASKS_CHANNEL,))

    def listen_for_tasks(self, heard: Callable[[], None]) -> Callable[[], None] | None:
        """`heard()` at each change of a task on another node (PostgreSQL; None on SQLite); returns a stop."""
        listen = getattr(self._db, "listen", None)
        return listen(TASKS_CHANNEL, heard) if listen is not None else None

    def fleet_active_tasks(self) -> list[TaskRecord]:
        """Every active task of the fleet, whichever node created it."""
        rows = self._db.execute(f"SELECT * FROM tasks WHERE status IN ({_ACTIVE}) ORDER BY created_ms")
        return [self._task(row) for row in rows]

    def end_task(self, task_id: str, status: TaskStatus, end_ms: int, end_reason: str) -> bool:
        """End an active task; True for the one node whose call did it (it sends the end events)."""
        won = bool(self._db.execute(
            f"UPDATE tasks SET status=?, end_ms=?, end_reason=? WHERE task_id=? AND status IN ({_ACTIVE}) "
            "RETURNING task_id", (int(status), end_ms, end_reason, task_id)))
        if won:
            self.tasks_changed()
        return won

    def change_task_status(self, task_id: str, was: TaskStatus, status: TaskStatus) -> bool:
        """Pause or resume: True when the task was in `was` and this call moved it."""
        changed = bool(self._db.execute("UPDATE tasks SET status=? WHERE task_id=? AND status=? RETURNING task_id",
                                        (int(status), task_id, int(was))))
        if changed:
            self.tasks_changed()
        return changed

    def take_over_task(self, task_id: str, gone_owner: str) -> bool:
        """Become the owner of an active task whose owner's lease ran out; True for the node that did."""
        return bool(self._db.execute(
            f"UPDATE tasks SET node_id=? WHERE task_id=? AND node_id=? AND status IN ({_ACTIVE}) RETURNING task_id",
            (self.node_id, task_id, gone_owner)))

    def live_streams_elsewhere(self, now_ms: int) -> list[tuple[str, str]]:
        """(room id, stream id) of the streams published on the other nodes whose lease runs past now."""
        rows = self._db.execute(
            "SELECT s.room_id, s.stream_id FROM streams s JOIN nodes n ON n.node_id = s.node_id "
            "WHERE s.node_id <> ? AND n.lease_until_ms > ?", (self.node_id, now_ms))
        return [(r[0], r[1]) for r in rows]

    def interrupt_files_of_gone_nodes(self, now_ms: int) -> list[str]:
        """Mark the open files of nodes whose lease ran out as interrupted; returns their ids."""
        rows = self._db.execute(
            f"UPDATE files SET status=?, unsettled=1 WHERE status IN (?, ?) AND node_id <> ? AND node_id IN "
            f"(SELECT node_id FROM nodes WHERE lease_until_ms <= ?) RETURNING file_id",
            (int(INTERRUPTED), *(int(s) for s in OPEN_FILE_STATUSES), self.node_id, now_ms))
        return [r[0] for r in rows]

    def interrupted_files(self) -> list[FileRecord]:
        """This node's files another node marked interrupted while it was gone."""
        return self._files("SELECT * FROM files WHERE node_id=? AND status=? AND unsettled<>0 ORDER BY task_id, seq",
                           (self.node_id, int(INTERRUPTED)))
