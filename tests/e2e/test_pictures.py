"""jpg tasks and TakeSnapshot on a real node with a real RTP publisher: a JPEG every
SnapshotInterval, each with its own event-1 callback, no RecordFiles.

The clip flashes white on every whole second and is dark with a moving square
otherwise; key frames come every 3 s. A jpg task started before publishing begins
at the key frame of second 0, so every picture (0, 5, 10 s) must show a flash: a
picture one frame off shows the dark picture instead."""

import io

import av
import pytest

from testkit.node import start_record_body
from testkit.rtp import ClipSpec, PublisherSpec, offer_sdp, parse_answer, wait_manifest
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import run_publisher

CLIP = ClipSpec(keyint=90, flash_period_s=1.0, flash_offset_s=0.0)
INTERVAL_S = 5


def picture_luma(node, info: dict) -> float:
    path = recorded_path(node, {"FileUrl": info["file_url"]})  # the node's signed link to the picture
    assert path.stat().st_size == info["file_size"]
    with av.open(io.BytesIO(path.read_bytes())) as container:
        assert container.format.name == "jpeg_pipe"
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (info["resolution_width"], info["resolution_height"]) == (320, 240)
    return float(frame.to_ndarray(format="gray").mean())


def pictures_of(receiver, task_id) -> list[dict]:
    return [r.body["detail"]["file_info"][0] for r in receiver.of_task(task_id) if r.body["event_type"] == 1]


def test_a_jpg_task_takes_the_frame_at_every_interval(node, receiver, tmp_path):
    spec = PublisherSpec(duration_s=12.0, clip=CLIP)
    answer = node.publish("pictures", "cam", offer_sdp(spec, True, True), user_id="u-cam")
    body = start_record_body("pictures")
    body["RecordOutputParams"].update(OutputFileFormat="jpg", SnapshotInterval=INTERVAL_S, CallbackUrl=receiver.url)
    task_id = node.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    receiver.wait_for(task_id, lambda events: events.count(1) == 3)  # uploaded as taken
    assert "RecordFiles" not in node.ok("DescribeRecordStatus", {"TaskId": task_id})  # none for a jpg task
    node.ok("StopRecord", {"TaskId": task_id})
    events = [r.body["event_type"] for r in receiver.wait_for(task_id, lambda events: 5 in events)]
    assert events == [1, 1, 1, 7, 5]  # one event 1 per picture, none for the task's end
    pictures = pictures_of(receiver, task_id)
    times = [p["begin_timestamp"] for p in pictures]
    assert [t - times[0] for t in times] == [0, 5000, 10000]  # exactly: the stream's own timestamps
    # the first picture's wall-clock time is the arrival of the key frame captured at t0
    assert -1 <= times[0] - manifest.t0_wall * 1000 <= 150, (times[0], manifest.t0_wall)  # ms, truncated
    for info in pictures:
        assert info["output_file_format"] == "jpg" and info["media_track_type"] == 2 and info["status"] == 3
        assert "_V_" in info["file_id"] and info["file_id"].endswith(".jpg")
        assert picture_luma(node, info) > 200, info  # the flash of that very second
    node.unpublish(answer.headers["Location"])


def test_take_snapshot_of_a_task_that_records_files(node, receiver, tmp_path):
    spec = PublisherSpec(duration_s=6.0, clip=ClipSpec(keyint=30))
    answer = node.publish("snap-mp4", "cam", offer_sdp(spec, True, True), user_id="u-cam")
    body = start_record_body("snap-mp4")
    body["RecordOutputParams"]["CallbackUrl"] = receiver.url
    task_id = node.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path)
    node.wait_task(task_id, lambda d: d["RecordFiles"] and d["RecordFiles"][0]["Duration"] >= 2000)
    assert node.call("TakeSnapshot", {"TaskId": task_id})["Code"] == 0
    receiver.wait_for(task_id, lambda events: events == [1])
    [picture] = pictures_of(receiver, task_id)
    assert picture["output_file_format"] == "jpg" and 20 < picture_luma(node, picture) < 100  # a dark frame
    wait_manifest(spec.manifest_path, proc=process)
    node.ok("StopRecord", {"TaskId": task_id})
    received = receiver.wait_for(task_id, lambda events: 5 in events)
    assert [r.body["event_type"] for r in received] == [1, 7, 1, 5]
    assert [f["output_file_format"] for f in received[2].body["detail"]["file_info"]] == ["mp4"]
    refused = node.call("TakeSnapshot", {"TaskId": task_id})
    assert refused["Code"] == 300001001  # already stopped
    node.unpublish(answer.headers["Location"])


@pytest.mark.parametrize("body, code", [({"TaskId": "NoSuchTask000000"}, 300001000), ({}, 300000004)])
def test_take_snapshot_answers_like_the_other_task_actions(node, body, code):
    assert node.call("TakeSnapshot", body)["Code"] == code

