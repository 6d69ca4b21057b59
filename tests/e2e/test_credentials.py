"""A task's storage credentials stay on the node only while something may still go
to its bucket: once it has ended and every file is uploaded, not a byte of them is
left in the store's files (the database and its write-ahead log)."""

import sqlite3
import time

from testkit.node import NodeProcess
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec
from tests.e2e.conftest import CALLBACK_SECRET
from tests.e2e.test_storage import record, s3_body, storage_args


def store_bytes(data_dir) -> bytes:
    """Every byte SQLite keeps for the store: the database, its WAL and shared memory."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("recnode.sqlite3*")))


def stored_secret(data_dir, task_id) -> str:
    with sqlite3.connect(f"file:{data_dir / 'recnode.sqlite3'}?mode=ro", uri=True) as db:
        [request] = db.execute("SELECT json_extract(request_json, '$.storage.access_key_secret') FROM tasks "
                               "WHERE task_id=?", (task_id,)).fetchone()
    return request


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def node_on(data_dir, log, moto_server, oss_server):
    return NodeProcess(data_dir, free_port(), free_udp_range(20), log,
                       extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                       extra_args=storage_args(moto_server, oss_server)).start()


def test_credentials_are_dropped_once_a_task_has_ended_and_uploaded(moto_server, oss_server, s3_bucket, receiver,
                                                                    tmp_path):
    data_dir = tmp_path / "data"
    secret = moto_server.access_key_secret.encode()
    node = node_on(data_dir, tmp_path / "a.log", moto_server, oss_server)
    try:
        body = s3_body("cred-room", moto_server, s3_bucket)
        body["RecordOutputParams"]["CallbackUrl"] = receiver.url
        try:
            # the bucket away before the file closes (at the unpublish): its upload is still owed at StopRecord
            # (paused after, a loaded machine could upload the whole file first, and the task end drop them)
            [task_id], _ = record(node, "cred-room", [body], PublisherSpec(duration_s=3.0), tmp_path,
                                  during=lambda tasks: moto_server.pause())
            node.ok("StopRecord", {"TaskId": task_id})
            time.sleep(1.0)  # uploads are retried meanwhile: the task still needs its bucket
            assert stored_secret(data_dir, task_id) == moto_server.access_key_secret
        finally:
            moto_server.resume()
        receiver.wait_for(task_id, lambda events: 1 in events, timeout=60)
        wait_until(lambda: secret not in store_bytes(data_dir))
        assert stored_secret(data_dir, task_id) == ""
        [entry] = node.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]
        assert entry["Status"] == 3
    finally:
        node.stop()
    assert not any((data_dir / "spool").iterdir())  # nothing left that would need them
    again = node_on(data_dir, tmp_path / "b.log", moto_server, oss_server)
    try:
        data = again.ok("DescribeRecordStatus", {"TaskId": task_id})
        assert data["Status"] == 3 and data["RecordFiles"] == [entry]
        assert secret not in store_bytes(data_dir)
    finally:
        again.stop()
    assert "upload_failed" not in again.logs()
