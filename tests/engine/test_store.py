"""The store, on both databases: every test runs on a SQLite file and on a fresh
PostgreSQL database (the `store_location` fixture, tests/conftest.py)."""

import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from engine import models
from engine.status import FileStatus, TaskStatus
from engine.store import SCHEMA_VERSION, Conflict, FileRecord, SchemaError, Store, StreamRecord, TaskRecord
from engine.store.database import open_database
from engine.store.schema import migrate

REQUEST = models.parse_start_record({
    "RoomId": "r1", "RecordInputParams": {"RecordMode": 1, "RecordStreamList": [{"StreamId": "s"}]},
    "StorageParams": {"Vendor": 0, "Bucket": "b", "AccessKeyId": "AK", "AccessKeySecret": "SECRET"},
})


def task(task_id="T" * 16, status=TaskStatus.RECORDING, created=1000, room="r1", client=None):
    return TaskRecord(task_id, client, room, status, REQUEST, created, begin_ms=created)


def file(name, status=FileStatus.RECORDING, task_id="T" * 16, **extra):
    return FileRecord(name, task_id, "s", "u", "u", "mp4", "file:///x", 3, 10, status, **extra)


@pytest.fixture
def store(store_location):
    store = Store(store_location)
    yield store
    store.close()


def test_roundtrip(store):
    store.insert_task(task(client="c1"))
    assert store.get_task("T" * 16) == task(client="c1")
    assert store.get_task_by_client_id("c1").task_id == "T" * 16
    store.update_task("T" * 16, status=TaskStatus.ENDED, end_ms=5, end_reason="stopped")
    assert store.get_task("T" * 16).status is TaskStatus.ENDED
    assert store.get_task("X" * 16) is None and store.get_task_by_client_id("other") is None


def test_the_sqlite_file_and_its_journals_are_private(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.insert_task(task())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in tmp_path.iterdir():
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_a_store_url_names_either_database(store_location, tmp_path):
    url = f"sqlite:///{store_location}" if isinstance(store_location, Path) else store_location
    store = Store(url)
    assert store.kind == ("sqlite" if isinstance(store_location, Path) else "postgresql")
    store.insert_task(task())
    store.close()
    assert Store(store_location).get_task("T" * 16) == task()


def test_client_task_id_unique(store):
    store.insert_task(task("A" * 16, client="c"))
    with pytest.raises(Conflict):
        store.insert_task(task("B" * 16, client="c"))
    store.insert_task(task("C" * 16, client=None))
    store.insert_task(task("D" * 16, client=None))  # no ClientTaskId is no conflict


def test_milliseconds_sizes_and_seconds_keep_their_precision(store):
    """64-bit integers and doubles on both (PostgreSQL's INTEGER and REAL are 32 bits)."""
    now_ms = 1_767_000_000_123
    store.insert_task(task(created=now_ms))
    store.upsert_file(file("big.mp4", size=5 * 1024**3, duration_ms=86_400_000))
    assert store.get_task("T" * 16).created_ms == now_ms
    assert store.files_of_task("T" * 16)[0].size == 5 * 1024**3
    assert store.claim_nonce("n", 1_767_000_000.123456, 0)
    assert store.nonces_since(0) == [("n", 1_767_000_000.123456)]
    assert store.nonces_since(float("-inf")) == [("n", 1_767_000_000.123456)]


def test_paging_filters_and_counts(store):
    for i in range(7):
        store.insert_task(task(f"{i:016d}", created=1000 + i, room="r1" if i % 2 else "r2"))
    store.insert_task(task("E" * 16, status=TaskStatus.ENDED, created=1003))
    total, page = store.page_tasks((TaskStatus.RECORDING,), None, 0, 2000, 0, 5)
    assert total == 7 and [t.task_id for t in page] == [f"{i:016d}" for i in range(5)]
    total, page = store.page_tasks((TaskStatus.RECORDING,), None, 0, 2000, 5, 5)
    assert [t.task_id for t in page] == [f"{i:016d}" for i in (5, 6)]
    total, page = store.page_tasks((TaskStatus.RECORDING,), "r1", 0, 2000, 0, 50)
    assert total == 3
    total, _ = store.page_tasks((TaskStatus.RECORDING,), None, 1002, 1004, 0, 50)
    assert total == 3
    assert store.count_tasks((TaskStatus.RECORDING, TaskStatus.ENDED, TaskStatus.PAUSED)) == {
        TaskStatus.RECORDING: 7, TaskStatus.ENDED: 1, TaskStatus.PAUSED: 0}
    assert [t.task_id for t in store.tasks_with_status((TaskStatus.ENDED,))] == ["E" * 16]


def test_files_keep_their_order(store):
    store.insert_task(task())
    for name in ("b.mp4", "a.mp4"):
        store.upsert_file(file(name))
    store.upsert_file(file("b.mp4", FileStatus.UPLOADED, size=99, sha256="ab"))
    files = store.files_of_task("T" * 16)
    assert [f.file_id for f in files] == ["b.mp4", "a.mp4"]
    assert files[0].size == 99 and files[0].status is FileStatus.UPLOADED and files[0].sha256 == "ab"
    assert [f.file_id for f in store.files_with_status((FileStatus.RECORDING,))] == ["a.mp4"]


def test_a_stream_replaces_the_one_of_its_room_and_stream(store):
    first = StreamRecord("res1", "room", "cam", "u", "u", "v=0", (40000, 40002), 1)
    store.save_stream(first)
    store.save_stream(StreamRecord("res2", "room", "mic", "u", "u", "v=0", (40004,), 2))
    again = StreamRecord("res3", "room", "cam", "u2", "u2", "v=0", (40010,), 3)
    store.save_stream(again)
    assert [s.resource_id for s in store.streams()] == ["res2", "res3"]
    assert store.streams()[1] == again
    store.delete_stream("res2")
    assert store.streams() == [again]


def test_callbacks_are_numbered_per_task_and_leave_the_outbox_when_done(store):
    assert [store.add_callback(t, 1, "http://x", {"k": t}, 0) for t in ("a", "a", "b")] == [0, 1, 0]
    pending = store.pending_callbacks()
    assert [(c.task_id, c.sequence, c.body) for c in pending] == [("a", 0, {"k": "a", "sequence": 0}),
                                                                   ("b", 0, {"k": "b", "sequence": 0})]
    store.callback_attempted(pending[0].id, True, 5)
    store.callback_attempted(pending[1].id, False, None)
    assert [(c.task_id, c.sequence, c.attempts) for c in store.pending_callbacks()] == [("a", 1, 0), ("b", 0, 1)]
    assert store.events_of_task("a") == [1, 1]


def test_newer_schema_is_refused(store_location):
    Store(store_location).close()
    db = open_database(store_location)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.close()
    with pytest.raises(SchemaError):
        Store(store_location)


def test_a_version_1_store_is_migrated(store_location):
    db = open_database(store_location)
    assert migrate(db, upto=1) == 1
    db.execute("INSERT INTO tasks (task_id, room_id, status, request_json, created_ms) VALUES ('t', 'r', 2, '{}', 0)")
    db.execute("INSERT INTO files (file_id, task_id, stream_id, user_id, user_name, output_format, file_url, "
               "media_track_type, begin_ms, status, seq) VALUES ('f', 't', 's', 'u', 'u', 'mp4', '', 3, 0, 3, 1)")
    db.close()
    store = Store(store_location)
    assert store.schema_version == SCHEMA_VERSION
    assert store.files_of_task("t")[0].sha256 == ""
    store.add_callback("t", 1, "http://x", {}, 0)
    assert store.pending_callbacks()[0].sequence == 0
    assert store.claim_nonce("n", 1.0, 0)
    assert store.nonces_since(0) == [("n", 1.0)]


def test_nodes_opening_a_new_store_together_migrate_it_once(store_location):
    """Nodes of a fleet start at once on an empty database: one migrates, the others wait, none fails."""
    opened, failed = [], []
    start = threading.Barrier(4)

    def open_one():
        start.wait()
        try:
            opened.append(Store(store_location))
        except Exception as error:  # noqa: BLE001 - what a node would die of
            failed.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == [] and all(store.schema_version == SCHEMA_VERSION for store in opened)
    for store in opened:
        store.close()


def test_used_nonces_are_kept_until_forgotten(store_location):
    store = Store(store_location)
    for nonce, seen_s in [("b", 20.5), ("a", 10.0), ("c", 30.0)]:
        assert store.claim_nonce(nonce, seen_s, 0)
    assert store.claim_nonce("a", 25.0, 15.0)  # seen before the horizon: usable again, the later time counts
    store.close()
    store = Store(store_location)
    assert store.nonces_since(0) == [("b", 20.5), ("a", 25.0), ("c", 30.0)]
    assert store.nonces_since(21) == [("a", 25.0), ("c", 30.0)]
    store.forget_nonces_before(30)
    assert store.nonces_since(0) == [("c", 30.0)]
    store.close()


def test_a_published_stream_round_trips_with_its_pinned_source(store_location):
    store = Store(store_location)
    pinned = StreamRecord("res1", "r", "s", "u", "u", "v=0\r\n", (40000, 40002), 5, source_host="192.0.2.7")
    store.save_stream(pinned)
    store.save_stream(StreamRecord("res2", "r", "s2", "u", "u", "v=0\r\n", (40004,), 6))
    store.close()
    reopened = Store(store_location)
    assert reopened.streams() == [pinned, StreamRecord("res2", "r", "s2", "u", "u", "v=0\r\n", (40004,), 6,
                                                       source_host="")]
    reopened.close()


def fill(store):
    store.insert_task(task(client="c1"))
    store.upsert_file(file("f.mp4", FileStatus.UPLOADING))
    store.save_stream(StreamRecord("res1", "r1", "cam", "u", "u", "v=0", (40000,), 1))
    store.add_callback("T" * 16, 1, "http://x", {}, 0)


def test_a_shared_store_resumes_only_each_nodes_own_rows(postgres):
    """Two nodes on one database: each resumes its own tasks, uploads, streams and
    callbacks; either answers about any task."""
    url = postgres.create_database()
    one, two = Store(url, node_id="node-1"), Store(url, node_id="node-2")
    fill(one)
    assert two.tasks_with_status((TaskStatus.RECORDING,)) == []
    assert two.files_with_status((FileStatus.UPLOADING,)) == [] and two.streams() == []
    assert two.pending_callbacks() == [] and two.count_tasks((TaskStatus.RECORDING,)) == {TaskStatus.RECORDING: 0}
    assert two.get_task("T" * 16) == replace(task(client="c1"), node_id="node-1") and [f.file_id for f in two.files_of_task("T" * 16)] == ["f.mp4"]
    assert two.page_tasks((TaskStatus.RECORDING,), None, 0, 2000, 0, 5)[0] == 1
    with pytest.raises(Conflict):  # that room's stream is node-1's
        two.save_stream(StreamRecord("res2", "r1", "cam", "u", "u", "v=0", (40002,), 2))
    assert [s.resource_id for s in one.streams()] == ["res1"]
    assert [t.task_id for t in one.tasks_with_status((TaskStatus.RECORDING,))] == ["T" * 16]
    assert len(one.files_with_status((FileStatus.UPLOADING,))) == 1 and len(one.pending_callbacks()) == 1
    one.close()
    two.close()


def test_a_sqlite_store_is_one_nodes_whatever_its_name(tmp_path):
    """A data directory moved to a host of another name goes on as before."""
    first = Store(tmp_path / "s.sqlite3", node_id="old-host")
    fill(first)
    first.close()
    moved = Store(tmp_path / "s.sqlite3", node_id="new-host")
    assert [t.task_id for t in moved.tasks_with_status((TaskStatus.RECORDING,))] == ["T" * 16]
    assert len(moved.files_with_status((FileStatus.UPLOADING,))) == 1 and len(moved.streams()) == 1
    assert len(moved.pending_callbacks()) == 1


def test_a_nonce_is_claimed_once_across_the_nodes_sharing_a_store(store_location):
    one, two = Store(store_location, node_id="node-1"), Store(store_location, node_id="node-2")
    assert one.claim_nonce("n1", 1000.0, 0.0)
    assert not two.claim_nonce("n1", 1001.0, 0.0) and not one.claim_nonce("n1", 1002.0, 0.0)
    assert two.nonces_since(0) == [("n1", 1000.0)]  # a refused claim changes nothing
    assert two.claim_nonce("n1", 2300.0, 1100.0)  # once its time is past the horizon, it is new again
    assert one.nonces_since(0) == [("n1", 2300.0)]
    one.close()
    two.close()


def test_fleet_members_renew_leases_and_leave(store_location):
    """engine.fleet's rows: a renewal is an upsert; a lease in the past is a node gone."""
    one, two = Store(store_location, "node-1"), Store(store_location, "node-2")
    try:
        one.renew_node("http://a:1", "ready", 40, 500, now_ms=1_000, lease_ms=10_000)
        two.renew_node("http://b:2", "ready", 3, 7, now_ms=2_000, lease_ms=10_000)
        one.renew_node("http://a:1", "draining", 0, 499, now_ms=5_000, lease_ms=10_000)
        members = {n.node_id: n for n in two.nodes()}
        assert members["node-1"].state == "draining" and members["node-1"].lease_until_ms == 15_000
        assert members["node-1"].started_ms == 1_000 and members["node-1"].renewed_ms == 5_000
        assert (members["node-2"].url, members["node-2"].free_streams, members["node-2"].free_tasks) == \
            ("http://b:2", 3, 7)
        two.leave_fleet(now_ms=6_000)
        gone = {n.node_id: n for n in one.nodes()}["node-2"]
        assert gone.lease_until_ms == 6_000 and gone.state == "stopped"
        two.rejoin_fleet(now_ms=7_000)
        assert {n.node_id: n for n in one.nodes()}["node-2"].started_ms == 7_000
    finally:
        one.close()
        two.close()


# A task's callbacks in a fleet: one sender per task's stream, taken over from a gone node.
def two_nodes(store_location) -> tuple[Store, Store]:
    """Two nodes' Stores on one database (both opened before any row: a SQLite store adopts every row)."""
    return Store(store_location, node_id="node-1"), Store(store_location, node_id="node-2")


def pending(store: Store) -> list[tuple[str, int]]:
    return [(c.task_id, c.sequence) for c in store.pending_callbacks()]


def deliver(store: Store) -> None:
    for callback in store.pending_callbacks():
        store.callback_attempted(callback.id, True, 1)


def test_a_tasks_callbacks_have_one_sender_whichever_node_produced_them(store_location):
    one, two = two_nodes(store_location)
    assert one.add_callback("a", 7, "http://x", {}, 0) == 0
    assert two.add_callback("a", 1, "http://x", {}, 0) == 1  # numbered after node-1's
    assert pending(one) == [("a", 0)] and pending(two) == []
    assert one.count_undone_callbacks() == two.count_undone_callbacks() == 2  # the fleet's backlog
    deliver(one)
    assert pending(one) == [("a", 1)] and pending(two) == []  # node-1 sends its backlog, node-2's event too
    deliver(one)
    assert pending(one) == pending(two) == []
    assert two.add_callback("a", 5, "http://x", {}, 0) == 2  # an idle stream: its producer sends
    assert pending(one) == [] and pending(two) == [("a", 2)]
    two.callback_attempted(two.pending_callbacks()[0].id, False, None)  # a failed try keeps it
    assert [(c.sequence, c.attempts) for c in two.pending_callbacks()] == [(2, 1)]
    one.close()
    two.close()


def test_a_gone_nodes_callbacks_are_taken_over_from_the_first_undone_one(store_location):
    one, two = two_nodes(store_location)
    one.renew_node("http://one", "ready", 1, 1, now_ms=1_000, lease_ms=10_000)
    two.renew_node("http://two", "ready", 1, 1, now_ms=5_000, lease_ms=10_000)
    for event in (7, 1, 5):
        one.add_callback("a", event, "http://x", {}, 0)
    one.add_callback("b", 7, "http://x", {}, 0)
    deliver(one)  # a#0 and b#0
    late = one.pending_callbacks()[0]  # a#1, in flight at node-1 when it stalls
    assert two.take_over_callbacks(now_ms=10_999) == []  # node-1's lease holds until 11,000
    assert two.take_over_callbacks(now_ms=11_000) == ["a"]  # b has nothing left to send
    assert pending(two) == [("a", 1)] and pending(one) == []
    assert one.take_over_callbacks(now_ms=11_000) == []  # node-2 is live
    deliver(two)
    one.callback_attempted(late.id, False, 2)  # node-1's late answer (given up) changes nothing
    assert pending(two) == [("a", 2)]
    deliver(two)
    assert pending(two) == []
    assert [(r["sequence"], r["delivered"]) for r in one.recent_callbacks(10) if r["task_id"] == "a"] == [
        (2, 1), (1, 1), (0, 1)]
    one.close()
    two.close()


def test_nodes_taking_over_at_once_take_each_stream_once(store_location):
    gone, *takers = [Store(store_location, node_id=f"node-{i}") for i in range(4)]
    for i, store in enumerate((gone, *takers)):
        store.renew_node("http://n", "ready", 1, 1, now_ms=1_000, lease_ms=10_000 if i else 1)
    tasks = [f"t{n:03d}" for n in range(60)]
    for task_id in tasks:
        gone.add_callback(task_id, 7, "http://x", {}, 0)
    taken: list[list[str]] = [[] for _ in takers]
    start = threading.Barrier(len(takers))

    def take_over(i: int) -> None:
        start.wait()
        taken[i] = takers[i].take_over_callbacks(now_ms=2_000)

    threads = [threading.Thread(target=take_over, args=(i,)) for i in range(len(takers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sum(taken, [])) == tasks  # each stream once, by one taker
    assert sorted(sum((pending(t) for t in takers), [])) == [(t, 0) for t in tasks]
    for store in (gone, *takers):
        store.close()


def test_a_store_with_callbacks_from_before_their_senders_is_migrated(store_location):
    db = open_database(store_location)
    assert migrate(db, upto=10) == 10
    for sequence, done in enumerate((5, None, None)):
        db.execute("INSERT INTO callbacks (task_id, sequence, event_type, url, body_json, created_ms, done_ms, "
                   "delivered, node_id) VALUES ('a', ?, 1, 'http://x', '{}', 0, ?, 1, 'node-1')", (sequence, done))
    db.close()
    store = Store(store_location, node_id="node-1")
    assert pending(store) == [("a", 1)] and store.count_undone_callbacks() == 2
    assert store.add_callback("a", 1, "http://x", {}, 0) == 3
    store.close()


def test_describe_tasks_of_a_room_reads_the_rooms_index(store_location):
    """benchmarks/results/fleet.md: without tasks_by_room it scanned every task of the window."""
    store = Store(store_location)
    try:
        for i in range(300):
            store.insert_task(task(task_id=f"T{i:015d}", room=f"room-{i % 30}", created=1000 + i))
        total, page = store.page_tasks((TaskStatus.RECORDING,), "room-7", 0, 10**13, 0, 20)
        assert total == 10 and {t.room_id for t in page} == {"room-7"}
        if isinstance(store_location, Path):
            plan = " ".join(str(tuple(r)) for r in store._db.execute(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM tasks WHERE status IN (1) AND created_ms BETWEEN 0 AND 1 "
                "AND room_id='room-7'"))
            assert "tasks_by_room" in plan, plan
    finally:
        store.close()
