"""The store in a SQLite file (the default: the data directory's recnode.sqlite3).

The file holds storage credentials, so it is created with mode 0600 (SQLite
gives its journal files the database's mode). One connection, used by one
thread at a time (the lock makes that true whoever calls).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.store.database import Conflict, Executor, Rows
from engine.store.url import SQLITE, sqlite_file


class SqliteDatabase:
    kind = SQLITE
    words = {
        "auto_id": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "without_rowid": "WITHOUT ROWID",
        "lock_schema": "",  # the transaction's BEGIN IMMEDIATE is the lock
    }

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")  # what is overwritten (credentials) leaves no trace in free pages
        self._lock = threading.RLock()
        self.where = sqlite_file(path).redacted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        with self._lock:
            try:
                return Rows(self._db.execute(sql, params).fetchall())
            except sqlite3.IntegrityError as error:
                raise Conflict(str(error)) from error

    @contextmanager
    def transaction(self) -> Iterator[Executor]:
        with self._lock:
            # IMMEDIATE: the write lock from the start, so a read-then-write cannot be overtaken
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def scrub(self) -> None:
        with self._lock:  # the page images written before (the WAL's frames) held them too
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._db.close()
