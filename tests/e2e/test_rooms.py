"""Room semantics with real RTP publishers, a real node (test limits) and a real
callback receiver: late joiners, RecordStreamList, MaxIdleTime, MaxRecordTime,
FillBlank, Pause/Resume, ClientTaskId across a restart, callbacks."""

import json
import time
from datetime import datetime

import numpy as np
import pytest

from engine.defaults import TICK_S
from testkit import bitstream, probe
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, wait_manifest
from tests.e2e.conftest import CALLBACK_SECRET
from tests.e2e.media_checks import recorded_path, sent_video_aus
from tests.e2e.publishing import publish, run_publisher, stop_and_describe

# Longer than a publisher process takes from its announcement to its first packet on a
# loaded machine (measured up to 3.1 s with the CPU otherwise busy): the node's
# --rtp-timeout counts from the announcement.
RTP_TIMEOUT_S = 5.0
# A limit or cadence that falls due is acted on at the engine's next tick; the rest is
# room for a loaded machine. Times are the node's own (its log's), not the callbacks' arrival.
LATE_S = TICK_S + 0.5


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("rooms")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_env={"RECNODE_CALLBACK_SECRET": CALLBACK_SECRET},
                          extra_args=("--test-limits", "--rtp-timeout", str(RTP_TIMEOUT_S),
                                      "--callback-retry-interval", "0.3")).start()
    yield process
    process.stop()


def body(room, receiver, **input_over):
    b = start_record_body(room, **input_over)
    b["RecordOutputParams"]["CallbackUrl"] = receiver.url
    return b


def queued_at(node, task_id) -> list[tuple[int, float]]:
    """(event type, wall time) of each callback the node queued for a task, from its log."""
    lines = (json.loads(line) for line in node.logs().splitlines() if line.startswith("{"))
    return [(line["event_type"], datetime.fromisoformat(line["timestamp"]).timestamp()) for line in lines
            if line.get("event") == "callback_queued" and line.get("task_id") == task_id]


def began_s(node, task_id) -> float:
    return node.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordBeginTimestamp"] / 1000


def ended_after(node, task_id, since_s: float) -> float:
    """Seconds from `since_s` (wall) to the node queueing the task's abnormal end (event 2)."""
    return next(at for event, at in queued_at(node, task_id) if event == 2) - since_s


def wait_frames(node, location, frames: int) -> None:
    """Until the stream's worker has taken `frames` video frames (the publisher is live)."""
    deadline = time.monotonic() + 20
    while node.stream_stats(location)["Tracks"]["video"]["frames"] < frames:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def check_callbacks(receiver, task_id, room):
    got = receiver.of_task(task_id)
    assert all(r.signature_ok for r in got)
    assert [r.body["sequence"] for r in got] == list(range(len(got)))
    assert all(r.body["room_id"] == room and r.body["app_id"] == 1234567 for r in got)
    return got


def test_late_joiner_is_recorded_from_its_first_key_frame(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-late", receiver))["TaskId"]
    time.sleep(0.5)
    spec = PublisherSpec(duration_s=3.0)
    location, targets = publish(node, "room-late", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    path = recorded_path(node, entry)
    assert probe.decode_all(path).video_frames == 90
    assert bitstream.h264_slice_nals_from_file(path) == bitstream.h264_slice_nals_from_aus(sent_video_aus(manifest))
    node.unpublish(location)
    got = receiver.wait_for(task_id, lambda e: e[-3:] == [7, 1, 5])
    check_callbacks(receiver, task_id, "room-late")
    # before it: an event 4 for each 2 s (test cadence) the room was empty, if the publisher took that long
    assert {r.body["event_type"] for r in got[:-3]} <= {4}
    assert got[-2].body["detail"]["upload_status"] == 1
    [info] = got[-2].body["detail"]["file_info"]
    assert info["file_id"] == entry["FileId"] and info["file_size"] == entry["FileSize"]
    assert info["file_url"] == entry["FileUrl"] and info["video_id"] == "" and "/" not in info["file_id"]


def test_a_stream_that_cannot_be_recorded_ends_the_task_waiting_for_it_with_quit_reason_1010(node, receiver):
    task_id = node.ok("StartRecord", body("room-codec", receiver))["TaskId"]
    vp8_over_plain_rtp = "v=0\r\nm=video 9 RTP/AVP 97\r\na=rtpmap:97 VP8/90000\r\n"
    refused = node.publish("room-codec", "cam", vp8_over_plain_rtp)
    assert refused.status == 400 and b"offers no H264" in refused.body  # the publisher learns why
    got = receiver.wait_for(task_id, lambda e: e == [2, 1])
    assert got[0].body["detail"] == {"quit_reason": 1010}  # and so does the task's owner
    assert got[1].body["detail"] == {"upload_status": 1, "file_info": []}
    check_callbacks(receiver, task_id, "room-codec")
    data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
    assert data["Status"] == 4 and "RecordFiles" not in data


def test_stream_outside_the_list_is_not_recorded_and_does_not_keep_the_room_busy(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-list", receiver, MaxIdleTime=4,
                                          RecordStreamList=[{"StreamId": "wanted"}]))["TaskId"]
    spec = PublisherSpec(duration_s=6.0)
    location, targets = publish(node, "room-list", "other", spec)
    process, _ = run_publisher(spec, targets, tmp_path)
    got = receiver.wait_for(task_id, lambda e: e[-2:] == [2, 1], timeout=15)
    assert 4.0 <= ended_after(node, task_id, began_s(node, task_id)) <= 4.0 + LATE_S  # idle from the start
    # "other" does not count: the room is empty for the task (4), "wanted" never came (6), both due
    # 2 s (test cadence) after the start; idle end (2, 1)
    types = [r.body["event_type"] for r in got]
    assert sorted(types[:2]) == [4, 6] and types[2:] == [2, 1]
    assert got[types.index(6)].body["detail"] == {"stream_id": "wanted"} and got[2].body["detail"]["quit_reason"] == 3
    check_callbacks(receiver, task_id, "room-list")
    data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
    assert data["Status"] == 3 and "RecordFiles" not in data  # nothing recorded: left out, as hosted
    process.wait(30)
    node.unpublish(location)


def test_max_idle_time_fires_after_the_last_stream_leaves(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-idle", receiver, MaxIdleTime=2))["TaskId"]
    spec = PublisherSpec(duration_s=2.0)
    location, targets = publish(node, "room-idle", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    wait_manifest(spec.manifest_path, proc=process)
    assert node.ok("DescribeRecordStatus", {"TaskId": task_id})["Status"] == 2
    left = time.time()
    node.unpublish(location)
    got = receiver.wait_for(task_id, lambda e: e == [2, 1])
    assert 2.0 <= ended_after(node, task_id, left) <= 2.0 + LATE_S
    assert got[0].body["detail"]["quit_reason"] == 3
    check_callbacks(receiver, task_id, "room-idle")
    data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
    assert data["Status"] == 3 and [f["Status"] for f in data["RecordFiles"]] == [3]


def test_a_publisher_that_stops_sending_leaves_the_room(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-silent", receiver, MaxIdleTime=1))["TaskId"]
    spec = PublisherSpec(duration_s=2.0)
    location, targets = publish(node, "room-silent", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    stopped = max(p.sent_wall for p in manifest.packets if p.sent_wall)  # no DELETE: the packets just stop
    receiver.wait_for(task_id, lambda e: e == [2, 1])
    # silent for --rtp-timeout: the stream leaves (noticed on the worker's read tick); then MaxIdleTime
    assert RTP_TIMEOUT_S + 1.0 <= ended_after(node, task_id, stopped) <= RTP_TIMEOUT_S + 1.0 + 0.05 + LATE_S
    assert node.unpublish(location).status == 404  # already gone


def test_max_record_time_ends_the_task(node, receiver, tmp_path):
    spec = PublisherSpec(duration_s=7.0)
    location, targets = publish(node, "room-max", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    wait_frames(node, location, 15)  # a live stream, then the task
    task_id = node.ok("StartRecord", body("room-max", receiver, MaxRecordTime=3))["TaskId"]
    got = receiver.wait_for(task_id, lambda e: e == [2, 1])
    assert got[0].body["detail"]["quit_reason"] == 4
    assert 3.0 <= ended_after(node, task_id, began_s(node, task_id)) <= 3.0 + LATE_S
    [entry] = node.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]
    report = probe.decode_all(recorded_path(node, entry))
    # from the last key frame before StartRecord (at most a GOP, 1 s, earlier) to the end
    assert report.errors == () and 3.0 - TICK_S <= report.video_duration_s <= 3.0 + 1.0 + LATE_S
    wait_manifest(spec.manifest_path, proc=process)
    node.unpublish(location)


def test_room_empty_events_then_idle_end(node, receiver):
    task_id = node.ok("StartRecord", body("room-empty", receiver, MaxIdleTime=5))["TaskId"]
    got = receiver.wait_for(task_id, lambda e: e[-2:] == [2, 1], timeout=15)
    assert [r.body["event_type"] for r in got] == [4, 4, 2, 1]
    began = began_s(node, task_id)
    # event 4 every 2 s (test cadence) of emptiness, the end at MaxIdleTime; each late by at most a tick
    # (and the second 4 counted from the first, so by two)
    due = [2.0, 4.0, 5.0]
    at = [t - began for _, t in queued_at(node, task_id)[:3]]
    assert all(d <= t <= d + late for d, t, late in zip(due, at, (LATE_S, LATE_S + TICK_S, LATE_S))), at
    check_callbacks(receiver, task_id, "room-empty")


def test_callback_refused_twice_is_retried_in_order(node, receiver):
    receiver.fail_next[7] = 2
    task_id = node.ok("StartRecord", body("room-retry", receiver))["TaskId"]
    node.ok("StopRecord", {"TaskId": task_id})
    receiver.wait_for(task_id, lambda e: e == [7, 1, 5])
    attempts = receiver.of_task(task_id, delivered_only=False)
    assert [(r.body["event_type"], r.answered) for r in attempts] == [(7, 500), (7, 500), (7, 200), (1, 200), (5, 200)]
    check_callbacks(receiver, task_id, "room-retry")


def republish(node, tmp_path, room, name, duration=2.0):
    spec = PublisherSpec(duration_s=duration)
    location, targets = publish(node, room, "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path, name=name)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    node.unpublish(location)
    return manifest


def test_fill_blank_false_gives_a_new_file_per_publish(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-fb0", receiver, FillBlank=False))["TaskId"]
    republish(node, tmp_path, "room-fb0", "first")
    node.wait_task(task_id, lambda d: [f["Status"] for f in d["RecordFiles"]] == [3])  # closed when it left
    republish(node, tmp_path, "room-fb0", "second")
    files = stop_and_describe(node, task_id)["RecordFiles"]
    assert len(files) == 2 and files[0]["FileId"] != files[1]["FileId"]
    for entry in files:
        report = probe.decode_all(recorded_path(node, entry))
        assert report.errors == () and report.video_frames == 60


def test_fill_blank_true_continues_the_file_with_silence(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-fb1", receiver, FillBlank=True, MaxIdleTime=10))["TaskId"]
    first = republish(node, tmp_path, "room-fb1", "first")
    time.sleep(1.5)  # away
    # the stream has left, its file is held open for its return
    assert [f["Status"] for f in node.ok("DescribeRecordStatus", {"TaskId": task_id})["RecordFiles"]] == [1]
    second = republish(node, tmp_path, "room-fb1", "second")
    gap = second.t0_mono - first.t0_mono - 2.0
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames == 120
    total = 4.0 + gap
    assert abs(report.video_duration_s - total) <= 0.1 and abs(report.audio_duration_s - total) <= 0.1
    # the published video, both sessions, in one file
    aus = sent_video_aus(first) + sent_video_aus(second)
    assert bitstream.h264_slice_nals_from_file(path) == bitstream.h264_slice_nals_from_aus(aus)
    # silence over the gap, beeps on both sides of it
    import av

    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])
    gap_span = samples[int(2.1 * 48000):int((2.0 + gap - 0.1) * 48000)]
    assert len(gap_span) > 0.5 * 48000 and np.abs(gap_span).max() < 1e-3
    beeps = probe.beep_times(path)
    assert any(b < 2.0 for b in beeps) and any(b > 2.0 + gap for b in beeps)


def test_pause_and_resume(node, receiver, tmp_path):
    task_id = node.ok("StartRecord", body("room-pause", receiver))["TaskId"]
    assert node.call("ResumeRecord", {"TaskId": task_id})["Code"] == 300001004
    spec = PublisherSpec(duration_s=6.0)
    location, targets = publish(node, "room-pause", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    wait_frames(node, location, 45)
    node.ok("PauseRecord", {"TaskId": task_id})
    assert node.ok("DescribeRecordStatus", {"TaskId": task_id})["Status"] == 5
    assert node.ok("DescribeTasks", {"Status": 2, "RoomId": "room-pause"})["TaskList"][0]["Status"] == 5
    assert node.call("PauseRecord", {"TaskId": task_id})["Code"] == 300000004
    time.sleep(1.5)
    node.ok("ResumeRecord", {"TaskId": task_id})
    manifest = wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == ()
    sent = bitstream.h264_slice_nals_from_aus(sent_video_aus(manifest))  # one slice per frame here
    got = bitstream.h264_slice_nals_from_file(path)
    # the file is frames [0, a) and [b, end): nothing from the paused span, resumed on a key frame
    a = next(i for i, (x, y) in enumerate(zip(got, sent)) if x != y)
    b = len(sent) - (len(got) - a)
    assert got == sent[:a] + sent[b:] and b % 30 == 0 and (b - a) / 30 >= 1.4
    # and no gap in the file's timeline where the pause was
    steps = np.diff(report.video_pts_s)
    assert steps.max() <= 2.5 / 30
    assert abs(report.video_duration_s - len(got) / 30) <= 0.05
    assert abs(report.audio_duration_s - report.video_duration_s) <= 0.1
    got_events = receiver.wait_for(task_id, lambda e: e[-3:] == [7, 1, 5])
    assert [r.body["event_type"] for r in got_events] == [201, 202, 7, 1, 5]


def test_client_task_id_survives_a_node_restart(tmp_path):
    data = tmp_path / "data"
    first = NodeProcess(data, free_port(), free_udp_range(20), tmp_path / "a.log").start()
    body_ = {**start_record_body("room-client"), "ClientTaskId": "job-42"}
    try:
        task_id = first.ok("StartRecord", body_)["TaskId"]
    finally:
        first.stop()
    second = NodeProcess(data, free_port(), free_udp_range(20), tmp_path / "b.log").start()
    try:
        assert second.ok("StartRecord", body_)["TaskId"] == task_id
        assert second.ok("DescribeTasks", {"Status": 2, "RoomId": "room-client"})["TotalCount"] == 1
    finally:
        second.stop()


def test_realtime_hls_playlist_events(node, receiver, tmp_path):
    spec = PublisherSpec(duration_s=6.0)
    location, targets = publish(node, "room-hls", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    wait_frames(node, location, 15)  # live before the task: the room is never empty for it (no event 4)
    b = body("room-hls", receiver)
    b["RecordOutputParams"].update(OutputFileFormat="hls", FragmentSeconds=2, RealtimeUploadFragment=True)
    task_id = node.ok("StartRecord", b)["TaskId"]
    got = receiver.wait_for(task_id, lambda e: e.count(102) >= 2, timeout=15)
    wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    events = receiver.wait_for(task_id, lambda e: e[-3:] == [7, 1, 5])
    first = next(r for r in got if r.body["event_type"] == 102)
    unsigned = {**first.body["detail"], "file_url": first.body["detail"]["file_url"].split("?")[0]}
    assert unsigned == {"stream_id": "cam", "file_id": entry["FileId"], "file_url": entry["FileUrl"].split("?")[0],
                        "media_track_type": 3}  # each link is signed when it is handed out
    assert [r.body["event_type"] for r in events][-3:] == [7, 1, 5]
    assert all(r.body["event_type"] == 102 for r in events[:-3])
