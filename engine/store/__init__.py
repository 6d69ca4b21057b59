"""The node's state: the only package that speaks SQL.

    Store (queries.py)      every query, written once
    schema.py               the base schema and numbered migrations, written once
    Database (database.py)  SQLite (sqlite.py, the default: a file in the data dir)
                            or PostgreSQL (postgres.py, shared by a fleet), by URL (url.py)
    AsyncStore              the Store's methods as coroutines, off the event loop
"""

from engine.store.asyncstore import AsyncStore
from engine.store.database import Conflict
from engine.store.queries import Store
from engine.store.records import CallbackRecord, FileRecord, NodeRecord, StreamRecord, TaskRecord
from engine.store.schema import SCHEMA_VERSION, SchemaError

__all__ = ["SCHEMA_VERSION", "AsyncStore", "CallbackRecord", "Conflict", "FileRecord", "NodeRecord", "SchemaError", "Store",
           "StreamRecord", "TaskRecord"]
