"""The store's schema, written once for SQLite and PostgreSQL: a base (version 1)
and numbered migrations, each taking it from version N to N + 1.

Portable SQL, with these rules: whole numbers are BIGINT (SQLite reads it as
INTEGER; PostgreSQL's INTEGER is 32 bits, too small for milliseconds or sizes),
fractions are DOUBLE PRECISION (PostgreSQL's REAL is 32 bits), text is TEXT, and
a script holds no ';' inside a statement. The few things the two spell
differently are `{words}` each Database fills in (its `words`). The version is
kept in `meta`; every migration runs in one transaction, under a lock, so nodes
starting together on one database migrate it once.
"""

from __future__ import annotations

from engine.store.database import Database, statements

SCHEMA_VERSION = 12

BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    client_task_id TEXT UNIQUE,
    room_id TEXT NOT NULL,
    status BIGINT NOT NULL,
    request_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    begin_ms BIGINT,
    end_ms BIGINT,
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
    size BIGINT NOT NULL DEFAULT 0,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    width BIGINT NOT NULL DEFAULT 0,
    height BIGINT NOT NULL DEFAULT 0,
    media_track_type BIGINT NOT NULL,
    begin_ms BIGINT NOT NULL,
    status BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_task ON files (task_id, seq);
"""

MIGRATIONS = {
    1: """
CREATE TABLE callbacks (
    id {auto_id},
    task_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event_type BIGINT NOT NULL,
    url TEXT NOT NULL,
    body_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    done_ms BIGINT,
    delivered BIGINT NOT NULL DEFAULT 0,
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
    published_ms BIGINT NOT NULL,
    UNIQUE (room_id, stream_id)
);
""",
    4: """
CREATE TABLE nonces (nonce TEXT PRIMARY KEY, seen_s DOUBLE PRECISION NOT NULL) {without_rowid};
CREATE INDEX nonces_by_seen ON nonces (seen_s);
""",
    5: """
ALTER TABLE streams ADD COLUMN source_host TEXT NOT NULL DEFAULT '';
""",
    # which node of a fleet owns each row: the one that resumes it after a restart
    6: """
ALTER TABLE tasks ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE files ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE streams ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
ALTER TABLE callbacks ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
CREATE INDEX tasks_by_node ON tasks (node_id, status);
CREATE INDEX files_by_node ON files (node_id, status);
DROP INDEX callbacks_pending;
CREATE INDEX callbacks_pending ON callbacks (node_id, id) WHERE done_ms IS NULL;
CREATE INDEX callbacks_undone ON callbacks (task_id, sequence) WHERE done_ms IS NULL;
""",
    # the worker that wrote each file, and whether it never said the file closed (engine.settle)
    7: """
ALTER TABLE files ADD COLUMN writer_pid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN unsettled INTEGER NOT NULL DEFAULT 0;
""",
    # the fleet's members (engine.fleet): each renews its lease; a node whose lease
    # ran out is gone, and so are its streams
    8: """
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    free_streams BIGINT NOT NULL,
    free_tasks BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    renewed_ms BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL
);
""",
    # every published stream is in `streams` (WHIP too: the fleet counts a room's streams
    # and keeps one publisher per stream id from it); only plain RTP is listened for again
    9: """
ALTER TABLE streams ADD COLUMN kind TEXT NOT NULL DEFAULT 'rtp';
CREATE INDEX tasks_by_status ON tasks (status);
""",
    # each task's callback stream (engine.callbacks): the node that sends it (one at a time, taken
    # over from a node whose lease ran out), the sequence of its first event not done (delivered
    # or given up: the sender's cursor) and how many from there are not done (0: idle). A count,
    # not a second sequence: the planner estimates `backlog > 0`, never a column against a column.
    10: """
CREATE TABLE callback_senders (
    task_id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    next_to_send BIGINT NOT NULL,
    backlog BIGINT NOT NULL
);
INSERT INTO callback_senders (task_id, node_id, next_to_send, backlog)
SELECT task_id, MAX(node_id), COALESCE(MIN(CASE WHEN done_ms IS NULL THEN sequence END), MAX(sequence) + 1),
       COUNT(*) - COUNT(done_ms)
FROM callbacks GROUP BY task_id;
CREATE INDEX callback_senders_busy ON callback_senders (node_id) WHERE backlog > 0;
DROP INDEX callbacks_pending;
DROP INDEX callbacks_undone;
""",
    # DescribeTasks with a RoomId: an index scan, not every task of the window (benchmarks/results/fleet.md)
    11: """
CREATE INDEX tasks_by_room ON tasks (room_id, created_ms);
""",
}


class SchemaError(RuntimeError):
    pass


def migrate(db: Database, upto: int = SCHEMA_VERSION) -> int:
    """Bring the schema to version `upto` (tests stop early to make an old store); returns it."""
    with db.transaction() as tx:
        if db.words["lock_schema"]:
            tx.execute(db.words["lock_schema"])
        for statement in statements(BASE_SCHEMA):
            tx.execute(statement)
        row = tx.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        version = 1 if row is None else int(row["value"])
        if version > SCHEMA_VERSION:
            raise SchemaError(f"store schema {version} is newer than this node ({SCHEMA_VERSION})")
        while version < upto:
            for statement in statements(MIGRATIONS[version].format(**db.words)):
                tx.execute(statement)
            version += 1
        tx.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
    return version


def schema_version(db: Database) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()["value"])
