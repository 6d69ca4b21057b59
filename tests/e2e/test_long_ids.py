"""Identifiers as long as the contract allows, with every special character it
allows, recorded on the node's disk; and one stream that cannot be recorded does not
end its room's other recordings. Real node, real RTP publishers, files decoded."""


from testkit import probe
from testkit.node import start_record_body
from testkit.rtp import PublisherSpec, Quirks, offer_sdp, parse_answer, wait_manifest
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import run_publisher

SPECIALS = "~!@#$%^&*()_+=-`;',.<>/\\"


def long_id(tag: str) -> str:
    """128 bytes: a tag, then every allowed special character over and over."""
    return (tag + SPECIALS * 6)[:128]


ROOM = long_id("room")


def publish(node, room, stream_id, user_id, spec, sprop=True):
    answer = node.publish(room, stream_id, offer_sdp(spec, True, True, sprop=sprop), user_id=user_id)
    assert answer.status == 201, answer
    return answer.headers["Location"], parse_answer(answer.body.decode())


def recording_body(room, fmt):
    body = start_record_body(room)
    body["RecordOutputParams"].update(OutputFileFormat=fmt, FragmentSeconds=2)
    return body


def test_two_publishers_with_the_longest_ids_are_recorded(node, tmp_path):
    spec = PublisherSpec(duration_s=4.0)
    streams = [(long_id(f"stream-{n}"), long_id(f"user-{n}")) for n in (1, 2)]
    published = [publish(node, ROOM, stream_id, user_id, spec) for stream_id, user_id in streams]
    tasks = [node.ok("StartRecord", recording_body(ROOM, fmt))["TaskId"] for fmt in ("mp4", "hls")]
    runs = [run_publisher(spec, targets, tmp_path, name=f"m{n}") for n, (_, targets) in enumerate(published)]
    for process, run_spec in runs:
        wait_manifest(run_spec.manifest_path, proc=process)
    for task_id in tasks:
        data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
        assert data["Status"] == 2 and len(data["RecordFiles"]) == 2, data
    for task_id in tasks:
        node.ok("StopRecord", {"TaskId": task_id})
        data = node.wait_task(task_id, lambda d: all(f["Status"] == 3 for f in d["RecordFiles"]))
        assert data["Status"] == 3
        assert sorted((f["StreamId"], f["UserId"]) for f in data["RecordFiles"]) == sorted(streams)
        for entry in data["RecordFiles"]:
            path = recorded_path(node, entry)
            assert all(len(part.encode()) <= 255 for part in path.parts)
            report = probe.decode_all(path)
            assert report.errors == () and report.video_frames > 0 and report.audio_frames > 0
    for location, _ in published:
        node.unpublish(location)


def test_a_stream_that_cannot_be_recorded_leaves_the_others_recording(node, tmp_path):
    """The second publisher sends no SPS at all (none in the SDP either): nothing could
    play its file, so its recording fails as unsupported media (1010). The first
    stream's file goes on; the task stays 2."""
    good = PublisherSpec(duration_s=5.0)
    broken = PublisherSpec(duration_s=5.0, quirks=Quirks(in_band_parameter_sets=False))
    good_location, good_targets = publish(node, "room-broken", "good", "user-good", good)
    broken_location, broken_targets = publish(node, "room-broken", "broken", "user-broken", broken, sprop=False)
    task_id = node.ok("StartRecord", recording_body("room-broken", "mp4"))["TaskId"]
    runs = [run_publisher(good, good_targets, tmp_path, name="good"),
            run_publisher(broken, broken_targets, tmp_path, name="broken")]
    for process, run_spec in runs:
        wait_manifest(run_spec.manifest_path, proc=process)
    failures = [line for line in node.logs().splitlines()
                if '"recording_failed"' in line and task_id in line and '"stream_id": "broken"' in line]
    assert failures and '"quit_reason": 1010' in failures[0]  # the broken stream did fail ...
    data = node.ok("DescribeRecordStatus", {"TaskId": task_id})
    assert data["Status"] == 2, data  # ... and the task goes on
    node.ok("StopRecord", {"TaskId": task_id})
    data = node.wait_task(task_id, lambda d: all(f["Status"] == 3 for f in d["RecordFiles"]))
    [entry] = data["RecordFiles"]
    assert data["Status"] == 3 and entry["StreamId"] == "good"
    report = probe.decode_all(recorded_path(node, entry))
    assert report.errors == () and report.video_frames == len(good.media().video)
    for location in (good_location, broken_location):
        node.unpublish(location)
