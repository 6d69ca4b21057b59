"""Every query the node makes, written once for SQLite and PostgreSQL (the
portable subset: `?` placeholders, ON CONFLICT upserts, no INSERT OR REPLACE).

Calls are blocking; the engine reaches them through `AsyncStore`, one thread,
off the event loop. Each method is one transaction.

A store may be shared by a fleet: each task, file, stream and callback row
names the node that owns it (`node_id`). What a node resumes after a restart
(its active tasks, files to upload, streams to listen for) is its own; what it
answers about (any task, its files) is the fleet's; a task's callbacks are sent
by one node at a time, whichever produced them (`callback_senders`, below). A
SQLite store is one node's: it takes every row as its own when opened, so a
data directory moved to another host (another default node id) goes on as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog

from engine.status import FileStatus, TaskStatus
from engine.store import schema
from engine.store.database import Database, Row, open_database
from engine.store.fleet_queries import OPEN_FILE_STATUSES, FleetQueries
from engine.store.records import (
    CallbackRecord,
    FileRecord,
    NodeRecord,
    StreamRecord,
    TaskRecord,
    request_from_json,
    request_to_json,
)
from engine.store.url import SQLITE

log = structlog.get_logger("store")

_FILE_COLUMNS = ("file_id", "task_id", "stream_id", "user_id", "user_name", "output_format", "file_url", "size",
                 "duration_ms", "width", "height", "media_track_type", "begin_ms", "status", "sha256", "node_id",
                 "writer_pid", "unsettled")
_OWNED_TABLES = ("tasks", "files", "streams", "callbacks", "callback_senders")


def _marks(values: tuple) -> str:
    return ",".join("?" * len(values))


class Store(FleetQueries):
    def __init__(self, location: Path | str | Database, node_id: str = ""):
        """A Path is a SQLite file, a string a store URL (sqlite:///..., postgresql://...);
        `node_id` is the node this Store works for (engine.config.NodeConfig.node_id)."""
        self._db = location if not isinstance(location, (Path, str)) else open_database(location)
        self.node_id = node_id
        try:
            version = schema.migrate(self._db)
            if self._db.kind == SQLITE:
                self._adopt_every_row()
        except BaseException:
            self._db.close()
            raise
        log.info("store_opened", store=self._db.where, schema_version=version, node_id=node_id)

    def _adopt_every_row(self) -> None:
        with self._db.transaction() as tx:
            for table in _OWNED_TABLES:
                tx.execute(f"UPDATE {table} SET node_id=? WHERE node_id<>?", (self.node_id, self.node_id))

    @property
    def kind(self) -> str:
        return self._db.kind

    @property
    def schema_version(self) -> int:
        return schema.schema_version(self._db)

    def close(self) -> None:
        self._db.close()

    # tasks
    def insert_task(self, task: TaskRecord) -> None:
        """Raises database.Conflict when the ClientTaskId (or the TaskId) is taken."""
        self._db.execute(
            "INSERT INTO tasks (task_id, client_task_id, room_id, status, request_json, created_ms, begin_ms, "
            "end_ms, end_reason, node_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (task.task_id, task.client_task_id, task.room_id, int(task.status), request_to_json(task.request),
             task.created_ms, task.begin_ms, task.end_ms, task.end_reason, self.node_id),
        )
        self.tasks_changed()

    def update_task(self, task_id: str, **changes: Any) -> None:
        allowed = {"status", "begin_ms", "end_ms", "end_reason"}
        if not changes or not set(changes) <= allowed:
            raise ValueError(f"cannot update task fields {sorted(changes)}")
        assignments = ", ".join(f"{name}=?" for name in changes)
        values = [int(v) if isinstance(v, TaskStatus) else v for v in changes.values()]
        self._db.execute(f"UPDATE tasks SET {assignments} WHERE task_id=?", (*values, task_id))

    # A task's storage credentials are kept only while something may still go to its bucket.
    def forget_credentials(self, task_id: str | None = None) -> int:
        """Blank the credentials in the stored request of `task_id` (None: of every task of
        this node) that has ended with no file still recording or uploading on any node, nor
        interrupted (a node that comes back uploads it), leaving no copy in the database's
        files where the database allows it; returns how many tasks lost theirs."""
        open_file = (f"NOT EXISTS (SELECT 1 FROM files f WHERE f.task_id = tasks.task_id AND "
                     f"(f.status IN ({_marks(OPEN_FILE_STATUSES)}) OR f.unsettled <> 0))")
        rows = self._db.execute(
            f"SELECT task_id, request_json FROM tasks WHERE {'task_id' if task_id else 'node_id'}=? "
            f"AND status IN (?, ?) AND {open_file}",
            (task_id or self.node_id, int(TaskStatus.ENDED), int(TaskStatus.ENDED_ABNORMALLY),
             *(int(s) for s in OPEN_FILE_STATUSES)))
        changed = 0
        for row in rows:
            request = json.loads(row["request_json"])
            storage = request["storage"]
            if not storage.get("access_key_id") and not storage.get("access_key_secret"):
                continue
            storage["access_key_id"] = storage["access_key_secret"] = ""
            self._db.execute("UPDATE tasks SET request_json=? WHERE task_id=?", (json.dumps(request), row["task_id"]))
            changed += 1
        if changed:
            self._db.scrub()
        return changed

    def get_task(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute("SELECT * FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return self._task(row) if row else None

    def get_task_by_client_id(self, client_task_id: str) -> TaskRecord | None:
        row = self._db.execute("SELECT * FROM tasks WHERE client_task_id=?", (client_task_id,)).fetchone()
        return self._task(row) if row else None

    def tasks_with_status(self, statuses: tuple[TaskStatus, ...]) -> list[TaskRecord]:
        """This node's tasks in these states."""
        rows = self._db.execute(
            f"SELECT * FROM tasks WHERE node_id=? AND status IN ({_marks(statuses)}) ORDER BY created_ms",
            (self.node_id, *(int(s) for s in statuses)))
        return [self._task(row) for row in rows]

    def page_tasks(self, statuses: tuple[TaskStatus, ...], room_id: str | None, start_ms: int, end_ms: int,
                   offset: int, limit: int) -> tuple[int, list[TaskRecord]]:
        where = f"status IN ({_marks(statuses)}) AND created_ms BETWEEN ? AND ?"
        params: list[Any] = [*(int(s) for s in statuses), start_ms, end_ms]
        if room_id is not None:
            where += " AND room_id=?"
            params.append(room_id)
        with self._db.transaction() as tx:  # the count and the page from one moment
            total = tx.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()[0]
            rows = tx.execute(f"SELECT * FROM tasks WHERE {where} ORDER BY created_ms, task_id LIMIT ? OFFSET ?",
                              (*params, limit, offset))
        return total, [self._task(row) for row in rows]

    def recent_tasks(self, statuses: tuple[TaskStatus, ...], room_id: str | None, limit: int) -> list[TaskRecord]:
        """The newest tasks with these statuses (in a room), newest first (for the console)."""
        where = f"status IN ({_marks(statuses)})" + (" AND room_id=?" if room_id is not None else "")
        params: list[Any] = [*(int(s) for s in statuses), *((room_id,) if room_id is not None else ())]
        rows = self._db.execute(f"SELECT * FROM tasks WHERE {where} ORDER BY created_ms DESC, task_id LIMIT ?",
                                (*params, limit))
        return [self._task(row) for row in rows]

    def count_undone_callbacks(self) -> int:
        """Events of the whole fleet not yet delivered or given up."""
        return self._db.execute(
            "SELECT COALESCE(SUM(backlog), 0) FROM callback_senders WHERE backlog > 0").fetchone()[0]

    def recent_callbacks(self, limit: int) -> list[dict]:
        """The newest callbacks, newest first, with their delivery state (for the console)."""
        columns = ("task_id", "sequence", "event_type", "url", "created_ms", "attempts", "done_ms", "delivered")
        rows = self._db.execute(f"SELECT {', '.join(columns)} FROM callbacks ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def count_tasks(self, statuses: tuple[TaskStatus, ...]) -> dict[TaskStatus, int]:
        """This node's tasks in these states, by state (its metrics)."""
        rows = self._db.execute(
            f"SELECT status, COUNT(*) FROM tasks WHERE node_id=? AND status IN ({_marks(statuses)}) GROUP BY status",
            (self.node_id, *(int(s) for s in statuses)))
        counts = {status: 0 for status in statuses}
        counts.update({TaskStatus(status): count for status, count in rows})
        return counts

    @staticmethod
    def _task(row: Row) -> TaskRecord:
        return TaskRecord(
            task_id=row["task_id"], client_task_id=row["client_task_id"], room_id=row["room_id"],
            status=TaskStatus(row["status"]), request=request_from_json(row["request_json"]),
            created_ms=row["created_ms"], begin_ms=row["begin_ms"], end_ms=row["end_ms"],
            end_reason=row["end_reason"], node_id=row["node_id"],
        )

    # files
    def upsert_file(self, file: FileRecord) -> None:
        """A new file takes the task's next `seq` (its place in RecordFiles); a known one keeps its place."""
        columns = ", ".join(_FILE_COLUMNS)
        updates = ", ".join(f"{name}=excluded.{name}" for name in _FILE_COLUMNS[1:])
        self._db.execute(
            f"INSERT INTO files ({columns}, seq) VALUES ({_marks(_FILE_COLUMNS)}, "
            f"(SELECT COALESCE(MAX(seq), 0) + 1 FROM files WHERE task_id=?)) "
            f"ON CONFLICT (file_id) DO UPDATE SET {updates}",
            (file.file_id, file.task_id, file.stream_id, file.user_id, file.user_name, file.output_format,
             file.file_url, file.size, file.duration_ms, file.width, file.height, file.media_track_type,
             file.begin_ms, int(file.status), file.sha256, self.node_id, file.writer_pid, int(file.unsettled),
             file.task_id),
        )

    def files_of_task(self, task_id: str) -> list[FileRecord]:
        return self._files("SELECT * FROM files WHERE task_id=? ORDER BY seq", (task_id,))

    def files_with_status(self, statuses: tuple[FileStatus, ...]) -> list[FileRecord]:
        """This node's files in these states (those its spool holds)."""
        return self._files(
            f"SELECT * FROM files WHERE node_id=? AND status IN ({_marks(statuses)}) ORDER BY task_id, seq",
            (self.node_id, *(int(s) for s in statuses)))

    def _files(self, query: str, params: tuple) -> list[FileRecord]:
        rows = self._db.execute(query, params)
        return [
            FileRecord(
                file_id=r["file_id"], task_id=r["task_id"], stream_id=r["stream_id"], user_id=r["user_id"],
                user_name=r["user_name"], output_format=r["output_format"], file_url=r["file_url"],
                media_track_type=r["media_track_type"], begin_ms=r["begin_ms"], status=FileStatus(r["status"]),
                size=r["size"], duration_ms=r["duration_ms"], width=r["width"], height=r["height"],
                sha256=r["sha256"], writer_pid=r["writer_pid"], unsettled=bool(r["unsettled"]),
            )
            for r in rows
        ]

    # published RTP streams, so a restarted node listens for them again
    def save_stream(self, stream: StreamRecord, now_ms: int = 0) -> None:
        """Replaces this node's row of the same resource, or of the same room and
        stream, and another node's of that stream whose lease ran out before `now_ms`
        (the stream is taken over); raises database.Conflict when a live node has it."""
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM streams WHERE node_id=? AND (resource_id=? OR (room_id=? AND stream_id=?))",
                       (self.node_id, stream.resource_id, stream.room_id, stream.stream_id))
            tx.execute("DELETE FROM streams WHERE room_id=? AND stream_id=? AND node_id IN "
                       "(SELECT node_id FROM nodes WHERE lease_until_ms <= ?)",
                       (stream.room_id, stream.stream_id, now_ms))
            tx.execute("INSERT INTO streams (resource_id, room_id, stream_id, user_id, user_name, offer, ports_json, "
                       "published_ms, source_host, node_id, kind) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (stream.resource_id, stream.room_id, stream.stream_id, stream.user_id, stream.user_name,
                        stream.offer, json.dumps(list(stream.ports)), stream.published_ms, stream.source_host,
                        self.node_id, stream.kind))

    def delete_stream(self, resource_id: str) -> None:
        self._db.execute("DELETE FROM streams WHERE resource_id=?", (resource_id,))

    def streams(self) -> list[StreamRecord]:
        """This node's published streams."""
        rows = self._db.execute("SELECT * FROM streams WHERE node_id=? ORDER BY published_ms", (self.node_id,))
        return [StreamRecord(r["resource_id"], r["room_id"], r["stream_id"], r["user_id"], r["user_name"],
                             r["offer"], tuple(json.loads(r["ports_json"])), r["published_ms"], r["source_host"],
                             r["kind"])
                for r in rows]

    def room_nodes(self, room_id: str) -> set[str]:
        """The nodes (live or not) with a stream of this room in the store."""
        return {r[0] for r in self._db.execute("SELECT DISTINCT node_id FROM streams WHERE room_id=?", (room_id,))}

    def events_of_task(self, task_id: str) -> list[int]:
        return [r[0] for r in self._db.execute(
            "SELECT event_type FROM callbacks WHERE task_id=? ORDER BY sequence", (task_id,))]

    # the fleet's members (engine.fleet)
    def renew_node(self, url: str, state: str, free_streams: int, free_tasks: int, now_ms: int,
                   lease_ms: int) -> None:
        """This node is alive until now + lease_ms, reachable at `url`, with this much room."""
        self._db.execute(
            "INSERT INTO nodes (node_id, url, state, free_streams, free_tasks, started_ms, renewed_ms, lease_until_ms) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (node_id) DO UPDATE SET url=excluded.url, state=excluded.state, "
            "free_streams=excluded.free_streams, free_tasks=excluded.free_tasks, renewed_ms=excluded.renewed_ms, "
            "lease_until_ms=excluded.lease_until_ms",
            (self.node_id, url, state, free_streams, free_tasks, now_ms, now_ms, now_ms + lease_ms))

    def rejoin_fleet(self, now_ms: int) -> None:
        """A (re)started node: its membership starts now."""
        self._db.execute("UPDATE nodes SET started_ms=? WHERE node_id=?", (now_ms, self.node_id))

    def leave_fleet(self, now_ms: int) -> None:
        """A node that stopped: its lease ends now (its row stays, for the record)."""
        self._db.execute("UPDATE nodes SET lease_until_ms=?, state='stopped' WHERE node_id=?",
                         (now_ms, self.node_id))

    def nodes(self) -> list[NodeRecord]:
        """Every node that ever joined, live or not (a lease in the past: gone)."""
        rows = self._db.execute("SELECT * FROM nodes ORDER BY node_id")
        return [NodeRecord(r["node_id"], r["url"], r["state"], r["free_streams"], r["free_tasks"], r["started_ms"],
                           r["renewed_ms"], r["lease_until_ms"]) for r in rows]

    # signature nonces already used, so a replay is refused after a restart too
    def claim_nonce(self, nonce: str, seen_s: float, horizon_s: float) -> bool:
        """Remember a nonce unless it was seen at or after `horizon_s`: True when it
        was not (the request may be served), False for a replay, whichever node of
        the fleet saw it first (the insert decides, atomically)."""
        return bool(self._db.execute(
            "INSERT INTO nonces (nonce, seen_s) VALUES (?,?) ON CONFLICT (nonce) DO UPDATE "
            "SET seen_s=excluded.seen_s WHERE nonces.seen_s < ? RETURNING nonce", (nonce, seen_s, horizon_s)))

    def nonces_since(self, since_s: float) -> list[tuple[str, float]]:
        rows = self._db.execute("SELECT nonce, seen_s FROM nonces WHERE seen_s >= ? ORDER BY seen_s", (since_s,))
        return [(r[0], r[1]) for r in rows]

    def forget_nonces_before(self, before_s: float) -> None:
        self._db.execute("DELETE FROM nonces WHERE seen_s < ?", (before_s,))

    # callbacks: events are written to this outbox first, delivered from it. Each task's
    # events form one stream with one sender at a time (callback_senders.node_id): the node
    # that produced the event that found the stream idle, until it finishes the stream's
    # backlog or its lease runs out and a live node takes the stream over.
    def add_callback(self, task_id: str, event_type: int, url: str, body: dict, created_ms: int) -> int:
        """Store an event with the task's next sequence number; returns that number. This node
        becomes the stream's sender unless another is still sending earlier events."""
        with self._db.transaction() as tx:
            # one upsert numbers the event and locks the stream: nodes adding at once queue here
            sequence = tx.execute(
                "INSERT INTO callback_senders (task_id, node_id, next_to_send, backlog) VALUES (?,?,0,1) "
                "ON CONFLICT (task_id) DO UPDATE SET backlog = callback_senders.backlog + 1, "
                "node_id = CASE WHEN callback_senders.backlog = 0 THEN excluded.node_id "
                "ELSE callback_senders.node_id END "
                "RETURNING next_to_send + backlog - 1", (task_id, self.node_id)).fetchone()[0]
            body = {**body, "sequence": sequence}
            tx.execute("INSERT INTO callbacks (task_id, sequence, event_type, url, body_json, created_ms, node_id) "
                       "VALUES (?,?,?,?,?,?,?)",
                       (task_id, sequence, event_type, url, json.dumps(body), created_ms, self.node_id))
        return sequence

    def pending_callbacks(self, limit: int = 100) -> list[CallbackRecord]:
        """The first undone event of each stream this node sends, oldest first (so each task's
        go in order). Reads only this node's streams with a backlog (an index of them), one
        lookup each, however many events wait or were delivered: ~2 ms on either database for
        500 such streams with 23,000 undone events beside 520,000 delivered (results in
        benchmarks/results/callback-outbox.md, on a loaded 2-core machine)."""
        # MATERIALIZED: every head first, then the oldest of them. Left free, PostgreSQL's plan for
        # a LIMIT it cannot see walks the whole outbox in id order, delivered events and all.
        rows = self._db.execute(
            "WITH heads AS MATERIALIZED (SELECT c.* FROM callback_senders s JOIN callbacks c "
            "ON c.task_id = s.task_id AND c.sequence = s.next_to_send WHERE s.node_id=? AND s.backlog > 0) "
            "SELECT * FROM heads ORDER BY id LIMIT ?", (self.node_id, limit))
        return [CallbackRecord(r["id"], r["task_id"], r["sequence"], r["event_type"], r["url"],
                               json.loads(r["body_json"]), r["attempts"]) for r in rows]

    def callback_attempted(self, callback_id: int, delivered: bool, done_ms: int | None) -> None:
        """One delivery attempt; `done_ms` when the event is done (delivered or given up), which
        moves its stream on. An event already done stays as it was (a late answer from a node
        whose stream was taken over does not undo the new sender's)."""
        with self._db.transaction() as tx:
            done = tx.execute("UPDATE callbacks SET attempts = attempts + 1, delivered=?, done_ms=? "
                              "WHERE id=? AND done_ms IS NULL RETURNING task_id, sequence",
                              (int(delivered), done_ms, callback_id)).fetchone()
            if done is not None and done_ms is not None:
                tx.execute("UPDATE callback_senders SET next_to_send = next_to_send + 1, backlog = backlog - 1 "
                           "WHERE task_id=? AND next_to_send=?", (done["task_id"], done["sequence"]))

    def take_over_callbacks(self, now_ms: int) -> list[str]:
        """Make this node the sender of every stream with a backlog whose sender is not a live
        member of the fleet (its lease ran out at `now_ms`, or it never joined); returns
        those tasks. Conditional, so of nodes taking over at once each stream goes to one."""
        rows = self._db.execute(
            "UPDATE callback_senders SET node_id=? WHERE backlog > 0 AND node_id<>? "
            "AND node_id NOT IN (SELECT node_id FROM nodes WHERE lease_until_ms > ?) RETURNING task_id",
            (self.node_id, self.node_id, now_ms))
        return sorted(r[0] for r in rows)
