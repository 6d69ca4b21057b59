"""A task belongs to a room, not to a node: three real `recnode serve` processes on
one PostgreSQL (tests/conftest.py), a StartRecord sent to one recording the streams
published to the others (plain RTP and WHIP), and a node killed (SIGKILL) while it
records into moto's S3, then brought back to finish its upload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from testkit import bitstream, probe
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, wait_manifest
from testkit.whip import PublisherSpec as WhipSpec
from testkit.whip import read_manifest, start_publisher
from tests.e2e.conftest import CALLBACK_SECRET
from tests.e2e.media_checks import assert_slices_equal, recorded_path, sent_video_aus
from tests.e2e.publishing import publish, run_publisher

LEASE_S = 2.0
UPLOADED, ABNORMAL_END, NORMAL_EXIT, STOPPED_UPLOADING = 1, 2, 5, 7
INTERRUPTED = 5  # file Status: upload failed, until the node that holds it comes back


@pytest.fixture(scope="module")
def fleet(postgres, moto_server, tmp_path_factory):
    """Nodes A, B and C on one database, with a short lease (the suite's time), and
    moto's S3 on loopback as a bucket they may reach."""
    url = postgres.create_database()
    base = tmp_path_factory.mktemp("fleet")
    nodes = {name: NodeProcess(base / name, free_port(), free_udp_range(20), base / f"{name}.log",
                               extra_env={"RECNODE_STORE_URL": url, "RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                               extra_args=("--test-limits", "--node-id", name, "--node-lease", str(LEASE_S),
                                           "--callback-retry-interval", "1.0", "--storage-endpoint",
                                           f"1={moto_server.endpoint}", "--storage-endpoint-allow", "127.0.0.0/8"))
             for name in "ABC"}
    for node in nodes.values():
        node.start()
    yield nodes
    for node in nodes.values():
        node.stop()


def wait_until(predicate, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)
    return value


def task_body(room: str, receiver, **inputs) -> dict:
    body = start_record_body(room, **inputs)
    body["RecordOutputParams"]["CallbackUrl"] = receiver.url
    return body


def s3_task_body(room: str, receiver, moto_server, bucket: str, **inputs) -> dict:
    body = task_body(room, receiver, **inputs)
    body["RecordOutputParams"]["OutputFolder"] = f"{room}/"
    body["StorageParams"] = {"Vendor": 1, "Region": "us-east-1", "Bucket": bucket,
                             "AccessKeyId": moto_server.access_key_id,
                             "AccessKeySecret": moto_server.access_key_secret}
    return body


def holds(node: NodeProcess, task_id: str) -> bool:
    """The node took in a task another node created (engine.task_sync)."""
    return any('"task_adopted"' in line and task_id in line for line in node.logs().splitlines())


def whip(node: NodeProcess, room: str, stream: str, manifest: Path, frames: int):
    """Publish with aiortc (its own process) to the end; what it sent, or why it could not."""
    spec = WhipSpec(url=f"{node.base_url}/whip/{room}/{stream}?UserId=u-{stream}", manifest=str(manifest),
                    video_frames=frames)

    async def run() -> int | None:
        process = await start_publisher("aiortc", spec)
        return await asyncio.wait_for(process.wait(), 60)

    asyncio.run(run())
    return read_manifest(manifest)


def by_stream(files: list[dict]) -> dict[str, dict]:
    return {f["StreamId"]: f for f in files}


def test_a_task_records_its_room_on_every_node(fleet, receiver, tmp_path):
    a, b, c = fleet["A"], fleet["B"], fleet["C"]
    room = "fleet-room"
    asked = time.monotonic()
    task_id = a.ok("StartRecord", task_body(room, receiver))["TaskId"]
    wait_until(lambda: holds(b, task_id) and holds(c, task_id), timeout=5)
    learnt_s = time.monotonic() - asked
    assert learnt_s < 2.0, learnt_s  # goal: within 1 s (NOTIFY wakes the others at once)
    assert [t["TaskId"] for t in b.ok("DescribeTasks", {"Status": 2, "RoomId": room})["TaskList"]] == [task_id]

    spec = PublisherSpec(duration_s=4.0)
    location, targets = publish(b, room, "cam-b", spec)  # plain RTP to B
    rtp_publisher, spec = run_publisher(spec, targets, tmp_path)
    refused = whip(c, room, "cam-b", tmp_path / "twice.json", frames=1)  # one publisher per stream id, fleet-wide
    assert refused.error.startswith("409"), refused.error
    sent_webrtc = whip(c, room, "cam-c", tmp_path / "whip.json", frames=90)  # WebRTC to C, meanwhile
    assert not sent_webrtc.error, sent_webrtc.error
    sent_rtp = wait_manifest(spec.manifest_path, proc=rtp_publisher)

    files = by_stream(c.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"])
    assert set(files) == {"cam-b", "cam-c"}  # C lists B's file too
    b.ok("StopRecord", {"TaskId": task_id})  # to another node than the one that started it
    done = a.wait_task(task_id, lambda d: d["Status"] == 3 and all(f["Status"] == 3 for f in d["RecordFiles"]))
    files = by_stream(done["RecordFiles"])
    rtp_path, webrtc_path = recorded_path(b, files["cam-b"]), recorded_path(c, files["cam-c"])
    for path, entry in ((rtp_path, files["cam-b"]), (webrtc_path, files["cam-c"])):
        assert probe.decode_all(path).errors == () and entry["FileSize"] == path.stat().st_size
    assert_slices_equal(rtp_path, sent_video_aus(sent_rtp))
    sent, got = bitstream.h264_slice_nals_from_aus(sent_webrtc.video_annexb()), bitstream.h264_slice_nals_from_file(
        webrtc_path)
    assert got == sent[len(sent) - len(got):] and len(got) >= len(sent) - 30  # from the first key frame on

    events = receiver.wait_for(task_id, lambda e: NORMAL_EXIT in e)
    assert [r.body["event_type"] for r in events] == [STOPPED_UPLOADING, UPLOADED, NORMAL_EXIT]  # each once
    [uploaded] = [r.body for r in events if r.body["event_type"] == UPLOADED]
    assert uploaded["detail"]["upload_status"] == 1
    assert sorted(f["stream_id"] for f in uploaded["detail"]["file_info"]) == ["cam-b", "cam-c"]
    assert b.unpublish(location).status in (200, 404)  # 404: it left when its publisher stopped


def test_a_killed_node_leaves_the_task_to_the_others(fleet, receiver, moto_server, s3_bucket, tmp_path):
    a, b, c = fleet["A"], fleet["B"], fleet["C"]
    room = "fleet-kill"
    spec_b, spec_c = (PublisherSpec(duration_s=30.0, loop_clip_s=2.0) for _ in "bc")  # a 2 s clip, repeated
    _, targets_b = publish(b, room, "cam-b", spec_b)
    location_c, targets_c = publish(c, room, "cam-c", spec_c)
    publishers = [run_publisher(spec_b, targets_b, tmp_path, "b")[0], run_publisher(spec_c, targets_c, tmp_path, "c")[0]]
    try:
        # streams already in the room on B and C: both start recording them once they learn of the task
        task_id = a.ok("StartRecord", s3_task_body(room, receiver, moto_server, s3_bucket, MaxIdleTime=2))["TaskId"]
        a.wait_task(task_id, lambda d: len(d.get("RecordFiles", [])) == 2 and all(
            f["Duration"] >= 1500 for f in d["RecordFiles"]))
        killed = time.monotonic()
        b.process.kill()
        b.process.wait(10)
        wait_until(lambda: by_stream(a.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"])["cam-b"][
            "Status"] == INTERRUPTED, timeout=LEASE_S + 5)
        gone_s = time.monotonic() - killed
        assert gone_s < LEASE_S + 2, gone_s
        data = c.ok("DescribeRecordStatus", {"TaskId": task_id})
        assert data["Status"] == 2 and by_stream(data["RecordFiles"])["cam-c"]["Status"] == 1  # C goes on
        # B's stream id is free again: a live node takes it over (while B lived: 409)
        location_a, _ = publish(a, room, "cam-b", PublisherSpec(duration_s=1.0))
        assert a.unpublish(location_a).status == 200
        assert c.unpublish(location_c).status == 200  # the last stream leaves: MaxIdleTime ends the task
        ended = a.wait_task(task_id, lambda d: d["Status"] == 3, timeout=10)
        assert by_stream(ended["RecordFiles"])["cam-c"]["Status"] == 3
    finally:
        for publisher in publishers:
            publisher.kill()
    events = receiver.wait_for(task_id, lambda e: UPLOADED in e)
    assert [r.body["event_type"] for r in events] == [ABNORMAL_END, UPLOADED]
    assert events[0].body["detail"]["quit_reason"] == 3  # MaxIdleTime
    assert events[1].body["detail"]["upload_status"] == 2  # partly: B's file was interrupted
    assert {f["stream_id"]: f["status"] for f in events[1].body["detail"]["file_info"]} == {
        "cam-b": INTERRUPTED, "cam-c": 3}

    # B's worker finished its file when B died, with no uploader left to send the rest
    b.start()  # on its data dir, with its node id: it finishes the upload and settles the file
    settled = b.wait_task(task_id, lambda d: by_stream(d["RecordFiles"])["cam-b"]["Status"] == 3, timeout=30)
    entry = by_stream(settled["RecordFiles"])["cam-b"]
    path = tmp_path / entry["FileId"]
    path.write_bytes(moto_server.client().get_object(Bucket=s3_bucket, Key=f"{room}/{entry['FileId']}")["Body"].read())
    assert entry["FileSize"] == path.stat().st_size and entry["Duration"] > 0
    assert probe.decode_all(path).video_frames > 0
    assert receiver.events(task_id) == [ABNORMAL_END, UPLOADED]  # upload-finished was sent once
