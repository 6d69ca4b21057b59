"""SQLite state under the data directory: the only module that speaks SQL.

The database file holds storage credentials, so it is created with mode 0600
(SQLite gives its journal files the database's mode). Calls are blocking; the
engine reaches them through `AsyncStore`, one thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import models
from engine.status import FileStatus, TaskStatus

SCHEMA_VERSION = 6

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    client_task_id TEXT UNIQUE,
    room_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    request_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    begin_ms INTEGER,
    end_ms INTEGER,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks (created_ms);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (task_id),
    stream_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    output_format TEXT NOT NULL,
    file_url TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    media_track_type INTEGER NOT NULL,
    begin_ms INTEGER NOT NULL,
    status INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_task ON files (task_id, seq);
"""

# Each entry takes the schema from version N to N + 1.
_MIGRATIONS = {
    1: """
CREATE TABLE callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_type INTEGER NOT NULL,
    url TEXT NOT NULL,
    body_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    done_ms INTEGER,
    delivered INTEGER NOT NULL DEFAULT 0,
    UNIQUE (task_id, sequence)
);
CREATE INDEX callbacks_pending ON callbacks (done_ms, id);
""",
    2: """
ALTER TABLE files ADD COLUMN sha256 TEXT NOT NULL DEFAULT '';
""",
    3: """
CREATE TABLE streams (
    resource_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    offer TEXT NOT NULL,
    ports_json TEXT NOT NULL,
    published_ms INTEGER NOT NULL,
    UNIQUE (room_id, stream_id)
);
""",
    4: """
CREATE TABLE nonces (nonce TEXT PRIMARY KEY, seen_s REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX nonces_by_seen ON nonces (seen_s);
""",
    5: """
ALTER TABLE streams ADD COLUMN source_host TEXT NOT NULL DEFAULT '';
""",
}


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    client_task_id: str | None
    room_id: str
    status: TaskStatus
    request: models.StartRecordRequest
    created_ms: int
    begin_ms: int | None = None
    end_ms: int | None = None
    end_reason: str | None = None


@dataclass(frozen=True)
class FileRecord:
    file_id: str  # the object key
    task_id: str
    stream_id: str
    user_id: str
    user_name: str
    output_format: str
    file_url: str
    media_track_type: int
    begin_ms: int
    status: FileStatus
    size: int = 0
    duration_ms: int = 0
    width: int = 0
    height: int = 0
    sha256: str = ""  # of all the bytes the worker wrote (for HLS: of the playlist)


def _request_to_json(request: models.StartRecordRequest) -> str:
    return json.dumps(dataclasses.asdict(request))


def _request_from_json(text: str) -> models.StartRecordRequest:
    raw = json.loads(text)
    raw["input"]["record_streams"] = tuple(raw["input"]["record_streams"])
    return models.StartRecordRequest(
        room_id=raw["room_id"],
        input=models.RecordInput(**raw["input"]),
        output=models.RecordOutput(**raw["output"]),
        storage=models.Storage(**raw["storage"]),
        client_task_id=raw["client_task_id"],
    )


@dataclass(frozen=True)
class StreamRecord:
    resource_id: str
    room_id: str
    stream_id: str
    user_id: str
    user_name: str
    offer: str
    ports: tuple[int, ...]
    published_ms: int
    source_host: str = ""  # --rtp-pin-source: the announcer, the stream's only source host


@dataclass(frozen=True)
class CallbackRecord:
    id: int
    task_id: str
    sequence: int
    event_type: int
    url: str
    body: dict
    attempts: int


class SchemaError(RuntimeError):
    pass


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        self._db.executescript(_SCHEMA_V1)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
            version = 1
        else:
            version = int(row["value"])
        if version > SCHEMA_VERSION:
            raise SchemaError(f"store schema {version} is newer than this node ({SCHEMA_VERSION})")
        while version < SCHEMA_VERSION:
            self._db.executescript("BEGIN;" + _MIGRATIONS[version] +
                                   f"UPDATE meta SET value='{version + 1}' WHERE key='schema_version'; COMMIT;")
            version += 1

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    # tasks
    def insert_task(self, task: TaskRecord) -> None:
        self._db.execute(
            "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?)",
            (task.task_id, task.client_task_id, task.room_id, int(task.status), _request_to_json(task.request),
             task.created_ms, task.begin_ms, task.end_ms, task.end_reason),
        )

    def update_task(self, task_id: str, **changes: Any) -> None:
        allowed = {"status", "begin_ms", "end_ms", "end_reason"}
        if not changes or not set(changes) <= allowed:
            raise ValueError(f"cannot update task fields {sorted(changes)}")
        assignments = ", ".join(f"{name}=?" for name in changes)
        values = [int(v) if isinstance(v, TaskStatus) else v for v in changes.values()]
        self._db.execute(f"UPDATE tasks SET {assignments} WHERE task_id=?", (*values, task_id))

    def get_task(self, task_id: str) -> TaskRecord | None:
        row = self._db.execute("SELECT * FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return self._task(row) if row else None

    def get_task_by_client_id(self, client_task_id: str) -> TaskRecord | None:
        row = self._db.execute("SELECT * FROM tasks WHERE client_task_id=?", (client_task_id,)).fetchone()
        return self._task(row) if row else None

    def tasks_with_status(self, statuses: tuple[TaskStatus, ...]) -> list[TaskRecord]:
        marks = ",".join("?" * len(statuses))
        rows = self._db.execute(f"SELECT * FROM tasks WHERE status IN ({marks}) ORDER BY created_ms",
                                tuple(int(s) for s in statuses))
        return [self._task(row) for row in rows]

    def page_tasks(self, statuses: tuple[TaskStatus, ...], room_id: str | None, start_ms: int, end_ms: int,
                   offset: int, limit: int) -> tuple[int, list[TaskRecord]]:
        marks = ",".join("?" * len(statuses))
        where = f"status IN ({marks}) AND created_ms BETWEEN ? AND ?"
        params: list[Any] = [*(int(s) for s in statuses), start_ms, end_ms]
        if room_id is not None:
            where += " AND room_id=?"
            params.append(room_id)
        total = self._db.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()[0]
        rows = self._db.execute(
            f"SELECT * FROM tasks WHERE {where} ORDER BY created_ms, task_id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return total, [self._task(row) for row in rows]

    def recent_tasks(self, statuses: tuple[TaskStatus, ...], room_id: str | None, limit: int) -> list[TaskRecord]:
        """The newest tasks with these statuses (in a room), newest first (for the console)."""
        marks = ",".join("?" * len(statuses))
        where = f"status IN ({marks})" + (" AND room_id=?" if room_id is not None else "")
        params: list[Any] = [*(int(s) for s in statuses), *((room_id,) if room_id is not None else ())]
        rows = self._db.execute(f"SELECT * FROM tasks WHERE {where} ORDER BY created_ms DESC, task_id LIMIT ?",
                                (*params, limit))
        return [self._task(row) for row in rows]

    def count_tasks(self, statuses: tuple[TaskStatus, ...]) -> dict[TaskStatus, int]:
        marks = ",".join("?" * len(statuses))
        rows = self._db.execute(f"SELECT status, COUNT(*) FROM tasks WHERE status IN ({marks}) GROUP BY status",
                                tuple(int(s) for s in statuses))
        counts = {status: 0 for status in statuses}
        counts.update({TaskStatus(status): count for status, count in rows})
        return counts

    @staticmethod
    def _task(row: sqlite3.Row) -> TaskRecord:
        return TaskRecord(
            task_id=row["task_id"], client_task_id=row["client_task_id"], room_id=row["room_id"],
            status=TaskStatus(row["status"]), request=_request_from_json(row["request_json"]),
            created_ms=row["created_ms"], begin_ms=row["begin_ms"], end_ms=row["end_ms"],
            end_reason=row["end_reason"],
        )

    # files
    def upsert_file(self, file: FileRecord) -> None:
        seq_row = self._db.execute("SELECT seq FROM files WHERE file_id=?", (file.file_id,)).fetchone()
        if seq_row is None:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM files WHERE task_id=?",
                                   (file.task_id,)).fetchone()[0]
        else:
            seq = seq_row[0]
        self._db.execute(
            "INSERT OR REPLACE INTO files (file_id, task_id, stream_id, user_id, user_name, output_format, "
            "file_url, size, duration_ms, width, height, media_track_type, begin_ms, status, seq, sha256) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (file.file_id, file.task_id, file.stream_id, file.user_id, file.user_name, file.output_format,
             file.file_url, file.size, file.duration_ms, file.width, file.height, file.media_track_type,
             file.begin_ms, int(file.status), seq, file.sha256),
        )

    def files_of_task(self, task_id: str) -> list[FileRecord]:
        return self._files("SELECT * FROM files WHERE task_id=? ORDER BY seq", (task_id,))

    def files_with_status(self, statuses: tuple[FileStatus, ...]) -> list[FileRecord]:
        marks = ",".join("?" * len(statuses))
        return self._files(f"SELECT * FROM files WHERE status IN ({marks}) ORDER BY task_id, seq",
                           tuple(int(s) for s in statuses))

    def _files(self, query: str, params: tuple) -> list[FileRecord]:
        rows = self._db.execute(query, params)
        return [
            FileRecord(
                file_id=r["file_id"], task_id=r["task_id"], stream_id=r["stream_id"], user_id=r["user_id"],
                user_name=r["user_name"], output_format=r["output_format"], file_url=r["file_url"],
                media_track_type=r["media_track_type"], begin_ms=r["begin_ms"], status=FileStatus(r["status"]),
                size=r["size"], duration_ms=r["duration_ms"], width=r["width"], height=r["height"],
                sha256=r["sha256"],
            )
            for r in rows
        ]

    # published RTP streams, so a restarted node listens for them again
    def save_stream(self, stream: StreamRecord) -> None:
        self._db.execute("INSERT OR REPLACE INTO streams (resource_id, room_id, stream_id, user_id, user_name, "
                         "offer, ports_json, published_ms, source_host) VALUES (?,?,?,?,?,?,?,?,?)",
                         (stream.resource_id, stream.room_id, stream.stream_id, stream.user_id, stream.user_name,
                          stream.offer, json.dumps(list(stream.ports)), stream.published_ms, stream.source_host))

    def delete_stream(self, resource_id: str) -> None:
        self._db.execute("DELETE FROM streams WHERE resource_id=?", (resource_id,))

    def streams(self) -> list[StreamRecord]:
        rows = self._db.execute("SELECT * FROM streams ORDER BY published_ms")
        return [StreamRecord(r["resource_id"], r["room_id"], r["stream_id"], r["user_id"], r["user_name"],
                             r["offer"], tuple(json.loads(r["ports_json"])), r["published_ms"], r["source_host"])
                for r in rows]

    def events_of_task(self, task_id: str) -> list[int]:
        return [r[0] for r in self._db.execute(
            "SELECT event_type FROM callbacks WHERE task_id=? ORDER BY sequence", (task_id,))]

    # signature nonces already used, so a replay is refused after a restart too
    def remember_nonce(self, nonce: str, seen_s: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO nonces VALUES (?,?)", (nonce, seen_s))

    def nonces_since(self, since_s: float) -> list[tuple[str, float]]:
        rows = self._db.execute("SELECT nonce, seen_s FROM nonces WHERE seen_s >= ? ORDER BY seen_s", (since_s,))
        return [(r[0], r[1]) for r in rows]

    def forget_nonces_before(self, before_s: float) -> None:
        self._db.execute("DELETE FROM nonces WHERE seen_s < ?", (before_s,))

    # callbacks: events are written to this outbox first, delivered from it
    def add_callback(self, task_id: str, event_type: int, url: str, body: dict, created_ms: int) -> int:
        """Store an event with the task's next sequence number; returns that number."""
        sequence = self._db.execute("SELECT COALESCE(MAX(sequence), -1) + 1 FROM callbacks WHERE task_id=?",
                                    (task_id,)).fetchone()[0]
        body = {**body, "sequence": sequence}
        self._db.execute(
            "INSERT INTO callbacks (task_id, sequence, event_type, url, body_json, created_ms) VALUES (?,?,?,?,?,?)",
            (task_id, sequence, event_type, url, json.dumps(body), created_ms))
        return sequence

    def pending_callbacks(self, limit: int = 100) -> list[CallbackRecord]:
        """The oldest undone callback of each task (so each task's stay in order)."""
        rows = self._db.execute(
            "SELECT c.* FROM callbacks c JOIN (SELECT task_id, MIN(sequence) AS s FROM callbacks "
            "WHERE done_ms IS NULL GROUP BY task_id) p ON c.task_id = p.task_id AND c.sequence = p.s "
            "ORDER BY c.id LIMIT ?", (limit,))
        return [CallbackRecord(r["id"], r["task_id"], r["sequence"], r["event_type"], r["url"],
                               json.loads(r["body_json"]), r["attempts"]) for r in rows]

    def callback_attempted(self, callback_id: int, delivered: bool, done_ms: int | None) -> None:
        self._db.execute("UPDATE callbacks SET attempts = attempts + 1, delivered=?, done_ms=? WHERE id=?",
                         (int(delivered), done_ms, callback_id))

    def count_undone_callbacks(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM callbacks WHERE done_ms IS NULL").fetchone()[0]

    def recent_callbacks(self, limit: int) -> list[dict]:
        """The newest callbacks, newest first, with their delivery state (for the console)."""
        rows = self._db.execute(
            "SELECT task_id, sequence, event_type, url, created_ms, attempts, done_ms, delivered FROM callbacks "
            "ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in rows]


class AsyncStore:
    """The Store's methods as coroutines, run one at a time on a dedicated thread."""

    def __init__(self, store: Store):
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: method(*args, **kwargs))

        return call

    def close(self) -> None:
        self._executor.submit(self._store.close).result()
        self._executor.shutdown()
