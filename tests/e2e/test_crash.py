"""Surviving the death of any process: the supervisor (SIGKILL, then restart), a
worker (SIGKILL), and a graceful SIGTERM."""

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from testkit import probe
from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, wait_manifest
from tests.e2e.conftest import CALLBACK_SECRET
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import publish, run_publisher



def node_on(data_dir: Path, rtp_range, log: Path, port: int | None = None) -> NodeProcess:
    return NodeProcess(data_dir, port or free_port(), rtp_range, log,
                       extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                       extra_args=("--test-limits", "--callback-retry-interval", "1.0", "--callback-retries", "8"))


def alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate, timeout=15.0, step=0.1):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)


def test_supervisor_killed_and_restarted(receiver, tmp_path):
    rtp_range = free_udp_range(40)
    first = node_on(tmp_path / "data", rtp_range, tmp_path / "a.log").start()
    spec = PublisherSpec(duration_s=16.0)
    location, targets = publish(first, "crash-room", "cam", spec)
    body = start_record_body("crash-room", MaxIdleTime=30)
    body["RecordOutputParams"]["CallbackUrl"] = receiver.url
    task_id = first.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    first.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["FileSize"] > 0)
    time.sleep(3.0)
    # a callback that is still undelivered when the node dies
    receiver.fail_next[201] = 2
    first.ok("PauseRecord", {"TaskId": task_id})
    first.ok("ResumeRecord", {"TaskId": task_id})
    time.sleep(1.5)
    worker = first.stream_stats(location)["WorkerPid"]
    began_ms = first.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"][0]["BeginTimestamp"]
    killed_at = time.time()
    first.process.kill()
    first.process.wait(10)
    wait_until(lambda: not alive(worker), timeout=10)  # no orphaned worker

    restart_began = time.monotonic()
    second = node_on(tmp_path / "data", rtp_range, tmp_path / "b.log", port=first.port).start()  # same address
    try:
        assert time.monotonic() - restart_began < 15  # goal 5 s (measured in benchmarks)
        data = second.ok("DescribeRecordStatus", {"TaskId": task_id})
        assert data["Status"] == 2  # still within its limits: still recording
        kept = data["RecordFiles"][0]
        assert kept["Status"] == 3
        path = recorded_path(second, kept)
        assert kept["FileSize"] == path.stat().st_size
        report = probe.decode_all(path)
        assert report.errors == ()
        assert report.video_last_s >= (killed_at - began_ms / 1000) - 2.0 - 1.0  # minus the paused second
        assert [t["TaskId"] for t in second.ok("DescribeTasks", {"Status": 2, "RoomId": "crash-room"})["TaskList"]] \
            == [task_id]
        # the publisher never stopped: the restored stream is recorded again, into a new file
        second.wait_task(task_id, lambda d: len(d["RecordFiles"]) == 2 and d["RecordFiles"][1]["FileSize"] > 0)
        wait_manifest(spec.manifest_path, proc=process)
        second.ok("StopRecord", {"TaskId": task_id})
        got = receiver.wait_for(task_id, lambda e: e[-3:] == [7, 1, 5], timeout=30)
        assert [r.body["event_type"] for r in got] == [201, 202, 7, 1, 5]
        assert [r.body["sequence"] for r in got] == [0, 1, 2, 3, 4] and all(r.signature_ok for r in got)
        for entry in second.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]:
            assert probe.decode_all(recorded_path(second, entry)).errors == ()
        assert second.unpublish(location).status == 200  # the Location from before the crash still works
    finally:
        second.stop()


def test_killed_worker_sends_no_abnormal_end(receiver, tmp_path):
    node = node_on(tmp_path / "data", free_udp_range(20), tmp_path / "n.log").start()
    try:
        spec = PublisherSpec(duration_s=7.0)
        location, targets = publish(node, "kill-room", "cam", spec)
        body = start_record_body("kill-room")
        body["RecordOutputParams"]["CallbackUrl"] = receiver.url
        task_id = node.ok("StartRecord", body)["TaskId"]
        process, spec = run_publisher(spec, targets, tmp_path)
        node.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["FileSize"] > 0)
        time.sleep(2.0)
        os.kill(node.stream_stats(location)["WorkerPid"], signal.SIGKILL)
        node.wait_task(task_id, lambda d: len(d["RecordFiles"]) == 2 and d["RecordFiles"][1]["FileSize"] > 0)
        wait_manifest(spec.manifest_path, proc=process)
        node.ok("StopRecord", {"TaskId": task_id})
        got = receiver.wait_for(task_id, lambda e: e[-3:] == [7, 1, 5])
        assert [r.body["event_type"] for r in got] == [7, 1, 5]  # no event 2: the task went on
        assert len(got[1].body["detail"]["file_info"]) == 2
    finally:
        node.stop()


def test_sigterm_finishes_files_and_exits_zero(tmp_path):
    node = node_on(tmp_path / "data", free_udp_range(20), tmp_path / "n.log").start()
    spec = PublisherSpec(duration_s=6.0)
    location, targets = publish(node, "term-room", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("term-room"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    node.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["FileSize"] > 0)
    time.sleep(1.0)
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(30) == 0
    process.kill()
    with sqlite3.connect(tmp_path / "data" / "recnode.sqlite3") as db:
        [(file_id, status, size)] = db.execute("SELECT file_id, status, size FROM files").fetchall()
    path = tmp_path / "data" / "storage" / "bucket" / file_id
    assert status == 3 and size == path.stat().st_size
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames > 0
    with __import__("av").open(str(path)) as container:  # finished: the trailer is there
        assert container.duration and abs(container.duration / 1e6 - report.video_duration_s) < 0.1
    assert http  # (the node is gone; nothing more to ask it)
