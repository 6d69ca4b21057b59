"""Nodes on a PostgreSQL store (`--store-url`): a real `recnode serve` recording a
real RTP stream with its state in the session's private PostgreSQL
(tests/conftest.py), through a restart; and two nodes sharing one database."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg

from engine import defaults
from engine.auth import signed_query
from testkit import probe
from testkit.node import APP_ID, SERVER_SECRET, NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp, wait_manifest
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import publish, run_publisher
from tests.e2e.test_node_process import assert_one_line_naming, run_serve


def node_on(store_url: str, data_dir: Path, log: Path, port: int | None = None,
            rtp_range: tuple[int, int] | None = None, node_id: str = "node-1") -> NodeProcess:
    return NodeProcess(data_dir, port or free_port(), rtp_range or free_udp_range(20), log,
                       extra_env={"RECNODE_STORE_URL": store_url}, extra_args=("--test-limits", "--node-id", node_id))


def rows(store_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(store_url) as connection:
        return connection.execute(sql).fetchall()


def test_a_node_on_postgresql_records_and_its_state_survives_a_restart(postgres, tmp_path):
    url = postgres.create_database()
    rtp_range = free_udp_range(20)
    first = node_on(url, tmp_path / "data", tmp_path / "a.log", rtp_range=rtp_range).start()
    spec = PublisherSpec(duration_s=8.0)
    location, targets = publish(first, "pg-room", "cam", spec)
    body = {**start_record_body("pg-room"), "ClientTaskId": "pg-client-1"}
    task_id = first.ok("StartRecord", body)["TaskId"]
    publisher, spec = run_publisher(spec, targets, tmp_path)
    first.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["FileSize"] > 0)
    # the state is in PostgreSQL, not in the data directory
    assert not (tmp_path / "data" / "recnode.sqlite3").exists()
    assert rows(url, f"SELECT status FROM tasks WHERE task_id='{task_id}'") == [(2,)]
    # the password is a secret: not in the node's environment, not in its logs
    environ = Path(f"/proc/{first.process.pid}/environ").read_bytes()
    assert postgres.app_password.encode() not in environ
    assert first.stop() == 0
    logs = first.logs()
    assert postgres.app_password not in logs
    assert f'"store": "postgresql://recnode@127.0.0.1:{postgres.port}/' in logs  # where, without the password

    second = node_on(url, tmp_path / "data", tmp_path / "b.log", port=first.port, rtp_range=rtp_range).start()
    try:
        data = second.ok("DescribeRecordStatus", {"TaskId": task_id})
        assert data["Status"] == 2 and data["RecordFiles"][0]["Status"] == 3  # the task goes on; its file is done
        assert second.ok("StartRecord", body)["TaskId"] == task_id  # ClientTaskId still known
        listed = second.ok("DescribeTasks", {"Status": 2, "RoomId": "pg-room"})["TaskList"]
        assert [t["TaskId"] for t in listed] == [task_id]
        # the restored stream is recorded again, into a new file
        second.wait_task(task_id, lambda d: len(d["RecordFiles"]) == 2 and d["RecordFiles"][1]["FileSize"] > 0)
        wait_manifest(spec.manifest_path, proc=publisher)
        second.ok("StopRecord", {"TaskId": task_id})
        done = second.wait_task(task_id, lambda d: d["Status"] == 3 and all(f["Status"] == 3
                                                                            for f in d["RecordFiles"]))
        for entry in done["RecordFiles"]:
            path = recorded_path(second, entry)
            assert entry["FileSize"] == path.stat().st_size
            assert probe.decode_all(path).errors == ()
        assert sorted(rows(url, f"SELECT file_id FROM files WHERE task_id='{task_id}'")) == sorted(
            (f"rec/{entry['FileId']}",) for entry in done["RecordFiles"])  # the store keys files by object key
        assert second.unpublish(location).status == 200
    finally:
        publisher.kill()
        second.stop()


def test_two_nodes_on_one_database_answer_for_each_others_tasks(postgres, tmp_path):
    """What a fleet behind one API needs from the shared store today: any node
    describes any task, and a ClientTaskId names one task whichever node is asked."""
    url = postgres.create_database()
    one = node_on(url, tmp_path / "one", tmp_path / "one.log", node_id="node-1").start()
    two = node_on(url, tmp_path / "two", tmp_path / "two.log", node_id="node-2").start()
    try:
        spec = PublisherSpec(duration_s=4.0)
        location, targets = publish(one, "shared-room", "cam", spec)
        again = two.publish("shared-room", "cam", offer_sdp(spec, True, True), user_id="someone-else")
        assert again.status == 409 and b"another node" in again.body
        assert "\nrecnode_streams 0.0\n" in http("GET", two.base_url + "/metrics").body.decode()  # nothing left behind
        body = {**start_record_body("shared-room"), "ClientTaskId": "fleet-client-1"}
        task_id = one.ok("StartRecord", body)["TaskId"]
        assert two.ok("StartRecord", body)["TaskId"] == task_id
        # a signed call served by one node is a replay to the other
        query = signed_query("DescribeRecordStatus", APP_ID, SERVER_SECRET)
        describe = json.dumps({"TaskId": task_id}).encode()
        assert one.post_action(query, describe).json()["Code"] == 0
        assert two.post_action(query, describe).json()["Code"] == 100000005
        publisher, spec = run_publisher(spec, targets, tmp_path)
        one.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["FileSize"] > 0)
        deadline = time.monotonic() + 10
        while (seen := two.ok("DescribeRecordStatus", {"TaskId": task_id}))["RecordFiles"][0]["FileSize"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert seen["Status"] == 2 and seen["RecordFiles"][0]["FileId"] == one.ok(
            "DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"][0]["FileId"]
        assert [t["TaskId"] for t in two.ok("DescribeTasks", {"Status": 2, "RoomId": "shared-room"})["TaskList"]] \
            == [task_id]
        # a restart of the other node leaves this node's task and stream alone
        two.stop()
        two.start()
        assert '"stream_restored"' not in two.logs() and '"stream_not_restored"' not in two.logs()
        assert 'recnode_tasks{status="recording"} 0' in http("GET", two.base_url + "/metrics").body.decode()
        assert rows(url, "SELECT node_id FROM streams") == [("node-1",)]
        files = one.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]
        assert len(files) == 1 and files[0]["Status"] == 1  # still being recorded, by node-1
        wait_manifest(spec.manifest_path, proc=publisher)
        one.ok("StopRecord", {"TaskId": task_id})
        two.wait_task(task_id, lambda d: d["Status"] == 3 and all(f["Status"] == 3 for f in d["RecordFiles"]))
        assert one.unpublish(location).status == 200
    finally:
        one.stop()
        two.stop()


def test_a_client_task_id_sent_to_two_nodes_at_once_is_one_task(postgres, tmp_path):
    """The store's unique ClientTaskId decides a race between nodes: both answer
    the same TaskId. Rounds go on until the race was seen a few times."""
    url = postgres.create_database()
    nodes = [node_on(url, tmp_path / f"n{i}", tmp_path / f"n{i}.log", node_id=f"node-{i}").start() for i in (1, 2)]
    try:
        for round_ in range(200):
            body = {**start_record_body(f"race-{round_}"), "ClientTaskId": f"race-{round_}"}
            answers: list[dict] = [{}, {}]
            together = threading.Barrier(2)

            def start(i: int) -> None:
                together.wait()
                answers[i] = nodes[i].call("StartRecord", body)

            threads = [threading.Thread(target=start, args=(i,)) for i in (0, 1)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers[0]["Code"] == answers[1]["Code"] == 0, answers
            assert answers[0]["Data"]["TaskId"] == answers[1]["Data"]["TaskId"]
            if sum(node.logs().count('"client_task_id_taken"') for node in nodes) >= 3:
                break
        else:
            raise AssertionError("the two nodes never raced: the test proved nothing")
        assert rows(url, "SELECT COUNT(*), COUNT(DISTINCT client_task_id) FROM tasks") == [(round_ + 1, round_ + 1)]
    finally:
        for node in nodes:
            node.stop()


def test_a_node_that_cannot_reach_its_database_says_why_in_one_line(postgres, tmp_path):
    """After the wait (defaults.STORE_CONNECT_TIMEOUT_S), exit status 2, the reason, no password."""
    url = postgres.create_database().replace(postgres.app_password, "wrong-password-51c2")
    started = time.monotonic()
    done = run_serve(tmp_path, env={"RECNODE_STORE_URL": url, "RECNODE_SERVER_SECRET": "x" * 16})
    assert time.monotonic() - started >= defaults.STORE_CONNECT_TIMEOUT_S
    line = assert_one_line_naming(done, "--store-url", "RECNODE_STORE_URL")
    assert "password authentication failed" in line and "wrong-password-51c2" not in done.stderr + done.stdout
