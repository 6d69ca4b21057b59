"""The narrow waist under the store: run one statement, or several in one
transaction, on SQLite or PostgreSQL, with `?` placeholders and rows read by
name or position either way. The SQL itself is written once (engine.store.queries,
engine.store.schema); a Database only connects, runs and translates errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from engine.store import url as store_url


class Conflict(Exception):
    """A write broke a uniqueness rule (a ClientTaskId already taken, ...), whichever database said so."""


class Row(tuple):
    """A result row read by position or by column name, as sqlite3.Row is."""

    _names: Mapping[str, int]

    def __new__(cls, values: Sequence[Any], names: Mapping[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._names[key] if isinstance(key, str) else key)


class Rows(list):
    """A statement's result rows (empty for a statement without any)."""

    def fetchone(self) -> Any:
        return self[0] if self else None


class Executor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...


class Database(Executor, Protocol):
    """`execute` runs one statement in a transaction of its own; `transaction()`
    gives an Executor whose statements commit together (or none does)."""

    kind: str  # engine.store.url.SQLITE or POSTGRESQL
    where: str  # the location without its password, for logs
    words: Mapping[str, str]  # the schema's dialect words (engine.store.schema)

    def transaction(self) -> AbstractContextManager[Executor]: ...

    def scrub(self) -> None:
        """After a secret was overwritten: drop the old copies the database keeps where it can."""

    def close(self) -> None: ...


def statements(script: str) -> Iterator[str]:
    """A script's statements (the schema's scripts hold no ';' inside a statement)."""
    return (statement.strip() for statement in script.split(";") if statement.strip())


def open_database(location: Path | str) -> Database:
    """A Path is a SQLite file; a string is a store URL (engine.store.url)."""
    where = store_url.sqlite_file(location) if isinstance(location, Path) else store_url.parse(location)
    if where.kind == store_url.SQLITE:
        from engine.store.sqlite import SqliteDatabase

        return SqliteDatabase(where.path)  # type: ignore[arg-type]
    from engine.store.postgres import PostgresDatabase  # psycopg is imported only for a PostgreSQL store

    return PostgresDatabase(where)
