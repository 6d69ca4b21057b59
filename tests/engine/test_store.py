import sqlite3
import stat

import pytest

from engine import models
from engine.status import FileStatus, TaskStatus
from engine.store import SCHEMA_VERSION, FileRecord, SchemaError, Store, TaskRecord

REQUEST = models.parse_start_record({
    "RoomId": "r1", "RecordInputParams": {"RecordMode": 1, "RecordStreamList": [{"StreamId": "s"}]},
    "StorageParams": {"Vendor": 0, "Bucket": "b", "AccessKeyId": "AK", "AccessKeySecret": "SECRET"},
})


def task(task_id="T" * 16, status=TaskStatus.RECORDING, created=1000, room="r1", client=None):
    return TaskRecord(task_id, client, room, status, REQUEST, created, begin_ms=created)


def test_file_mode_0600_and_roundtrip(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    store.insert_task(task(client="c1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = store.get_task("T" * 16)
    assert got == task(client="c1")
    assert store.get_task_by_client_id("c1").task_id == "T" * 16
    store.update_task("T" * 16, status=TaskStatus.ENDED, end_ms=5, end_reason="stopped")
    assert store.get_task("T" * 16).status is TaskStatus.ENDED
    for extra in tmp_path.iterdir():
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_client_task_id_unique(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.insert_task(task("A" * 16, client="c"))
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_task(task("B" * 16, client="c"))


def test_paging_filters_and_counts(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
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


def test_files_keep_their_order(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.insert_task(task())
    for name in ("b.mp4", "a.mp4"):
        store.upsert_file(FileRecord(name, "T" * 16, "s", "u", "u", "mp4", "file:///x", 3, 10, FileStatus.RECORDING))
    store.upsert_file(FileRecord("b.mp4", "T" * 16, "s", "u", "u", "mp4", "file:///x", 3, 10, FileStatus.UPLOADED,
                                 size=99))
    files = store.files_of_task("T" * 16)
    assert [f.file_id for f in files] == ["b.mp4", "a.mp4"]
    assert files[0].size == 99 and files[0].status is FileStatus.UPLOADED


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(SchemaError):
        Store(path)


def test_a_version_1_store_is_migrated(tmp_path):
    from engine.store import _SCHEMA_V1

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA_V1)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO files (file_id, task_id, stream_id, user_id, user_name, output_format, file_url, "
               "media_track_type, begin_ms, status, seq) VALUES ('f', 't', 's', 'u', 'u', 'mp4', '', 3, 0, 3, 1)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.files_of_task("t")[0].sha256 == ""
    store.add_callback("t", 1, "http://x", {}, 0)
    assert store.pending_callbacks()[0].sequence == 0
    store.remember_nonce("n", 1.0)
    assert store.nonces_since(0) == [("n", 1.0)]


def test_used_nonces_are_kept_until_forgotten(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    for nonce, seen_s in [("b", 20.5), ("a", 10.0), ("c", 30.0)]:
        store.remember_nonce(nonce, seen_s)
    store.remember_nonce("a", 25.0)  # seen again after it was forgotten in memory: the later time counts
    store.close()
    store = Store(path)
    assert store.nonces_since(0) == [("b", 20.5), ("a", 25.0), ("c", 30.0)]
    assert store.nonces_since(21) == [("a", 25.0), ("c", 30.0)]
    store.forget_nonces_before(30)
    assert store.nonces_since(0) == [("c", 30.0)]


def test_a_published_stream_round_trips_with_its_pinned_source(tmp_path):
    from engine.store import StreamRecord

    store = Store(tmp_path / "s.sqlite3")
    pinned = StreamRecord("res1", "r", "s", "u", "u", "v=0\r\n", (40000, 40002), 5, source_host="192.0.2.7")
    store.save_stream(pinned)
    store.save_stream(StreamRecord("res2", "r", "s2", "u", "u", "v=0\r\n", (40004,), 6))
    store.close()
    assert Store(tmp_path / "s.sqlite3").streams() == [pinned, StreamRecord("res2", "r", "s2", "u", "u", "v=0\r\n",
                                                                            (40004,), 6, source_host="")]
