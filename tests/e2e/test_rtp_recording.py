"""One live RTP stream recorded end to end: real publisher process, real UDP,
real worker process, file checked by decoding it."""

import os
import signal
import time

import av
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket

from testkit import probe
from testkit.node import http, start_record_body
from testkit.rtp import (
    ClipSpec,
    PublisherSpec,
    Quirks,
    RtcpSpec,
    offer_sdp,
    parse_answer,
    wait_manifest,
)
from tests.e2e.media_checks import (
    assert_lost_at_most_a_fragment,
    assert_opus_tail_equal,
    assert_slices_equal,
    duration_tolerance,
    recorded_frame_indices,
    recorded_path,
    sent_video_aus,
)
from tests.e2e.publishing import publish, run_publisher, stop_and_describe, worker_exit

JITTER_MAX_WAIT_S = 0.25  # README: the jitter buffer waits at most 250 ms for a missing packet
READ_TICK_S = 0.05  # README: a worker reads its sockets every 50 ms
LOAD_ALLOWANCE_S = 0.2  # a worker's tick running late on a busy machine


def test_stream_recorded_exactly_with_lip_sync(node, tmp_path):
    spec = PublisherSpec(duration_s=6.0, quirks=Quirks(audio_delay_s=0.2, ts_wrap_soon=True, seq_wrap_soon=True))
    location, targets = publish(node, "room-main", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("room-main"))["TaskId"]
    assert len(task_id) == 16
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    assert process.wait(30) == 0
    data = stop_and_describe(node, task_id)

    assert data["Status"] == 3 and data["RoomId"] == "room-main" and data["StreamType"] == 3
    [entry] = data["RecordFiles"]
    path = recorded_path(node, entry)
    # as in the hosted service: FileId is the name (OutputFileRule 1), FileUrl the whole location
    assert entry["FileId"].startswith(f"{task_id}_room-main_user-cam_cam_VA_")
    assert entry["FileId"].endswith(".mp4") and entry["OutputFileFormat"] == "mp4"
    assert path == node.data_dir / "storage" / "bucket" / "rec" / entry["FileId"]
    assert entry["VideoId"] == ""
    assert entry["FileSize"] == path.stat().st_size > 0
    assert (entry["ResolutionWidth"], entry["ResolutionHeight"]) == (320, 240)
    assert entry["MediaTrackType"] == 3 and entry["UserId"] == "user-cam" and entry["StreamId"] == "cam"
    assert abs(entry["BeginTimestamp"] / 1000 - manifest.t0_wall) < 1.0

    report = probe.decode_all(path)
    assert report.errors == ()
    media = spec.media()
    assert report.video_frames == len(media.video)
    assert_slices_equal(path, sent_video_aus(manifest))
    assert_opus_tail_equal(path, manifest)
    tolerance = duration_tolerance(spec.clip.fps)
    assert abs(report.video_duration_s - spec.duration_s) <= tolerance
    assert abs(report.audio_duration_s - spec.duration_s) <= tolerance
    assert abs(entry["Duration"] / 1000 - spec.duration_s) <= tolerance
    with av.open(str(path)) as container:  # what a player shows
        assert abs(container.duration / 1e6 - spec.duration_s) <= tolerance

    offsets = probe.av_offsets(path)
    assert len(offsets) == len(media.flash_times)
    assert max(abs(o) for o in offsets) <= 0.020, offsets
    node.unpublish(location)


def test_task_started_mid_gop_begins_at_the_last_key_frame(node, tmp_path):
    spec = PublisherSpec(duration_s=5.0, clip=ClipSpec(keyint=60))
    location, targets = publish(node, "room-gop", "cam", spec)
    process, spec = run_publisher(spec, targets, tmp_path)
    deadline = time.monotonic() + 20
    while node.stream_stats(location)["Tracks"]["video"]["frames"] < 75:  # 2.5 s in: key frames at 0 and 2 s
        assert time.monotonic() < deadline
        time.sleep(0.05)
    task_id = node.ok("StartRecord", start_record_body("room-gop"))["TaskId"]
    manifest = wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == ()
    assert report.video_frames == len(spec.media().video) - 60
    assert_slices_equal(path, sent_video_aus(manifest)[60:])
    node.unpublish(location)


def test_unrepairable_loss_never_stalls_and_decodes_cleanly(node, tmp_path):
    # a middle packet of the key frame at 30 (5 packets), the only packet of frame 75, an audio packet
    spec = PublisherSpec(duration_s=4.0, quirks=Quirks(drop=(("video", 30, 2), ("video", 75, 0), ("audio", 70, 0))))
    location, targets = publish(node, "room-loss", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("room-loss"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    stats = node.stream_stats(location)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]

    video = stats["Tracks"]["video"]
    assert video["jitter_lost_packets"] == 2 and video["jitter_dropped_frames"] == 1
    assert video["dropped_waiting_keyframe"] == 29 + 14
    assert stats["Tracks"]["audio"]["jitter_lost_packets"] == 1
    # the frame after each hole waited the whole 250 ms for it (kernel arrival times), and not much longer
    for kind in ("video", "audio"):
        waited = stats["Tracks"][kind]["max_release_delay_s"]
        assert JITTER_MAX_WAIT_S <= waited <= JITTER_MAX_WAIT_S + READ_TICK_S + LOAD_ALLOWANCE_S, (kind, waited)
    assert video["keyframe_requests"] >= 1
    plis = [p for _, _, data in manifest.feedback for p in RtcpPacket.parse(data)
            if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]
    assert len(plis) == 2 and {p.media_ssrc for p in plis} == {manifest.ssrcs["video"]}  # one per loss

    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == ()
    # what depends on a broken frame cannot be decoded: left out until the next key frame
    assert_slices_equal(path, sent_video_aus(manifest, skip_frames={*range(30, 60), *range(75, 90)}))
    assert report.video_frames == 120 - 30 - 15
    node.unpublish(location)


def test_garbage_and_foreign_datagrams_are_counted_and_ignored(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0, quirks=Quirks(garbage_datagrams=25, foreign_datagrams=25))
    location, targets = publish(node, "room-junk", "cam", spec, sprop=False)
    task_id = node.ok("StartRecord", start_record_body("room-junk"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    video = node.stream_stats(location)["Tracks"]["video"]
    assert video["garbage"] == manifest.garbage_sent == 25
    assert video["foreign"] == manifest.foreign_sent == 25
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    path = recorded_path(node, entry)
    assert probe.decode_all(path).errors == ()
    assert_slices_equal(path, sent_video_aus(manifest))
    node.unpublish(location)


def test_killed_worker_keeps_what_it_wrote_and_node_goes_on(node, tmp_path):
    spec = PublisherSpec(duration_s=9.0, clip=ClipSpec(keyint=90))  # 3 s GOPs: fragments are cut by time

    location, targets = publish(node, "room-kill", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("room-kill"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    deadline = time.monotonic() + 20
    while node.stream_stats(location)["Tracks"]["video"]["frames"] < 165:  # 5.5 s: 2.5 s since the key frame
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = node.stream_stats(location)["WorkerPid"]
    killed_mono = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    # the node keeps serving and the task shows what was kept
    assert http("GET", node.base_url + "/healthz").status == 200
    data = node.wait_task(task_id, lambda d: d["RecordFiles"][0]["Status"] == 3)
    assert data["Status"] == 2
    kept = data["RecordFiles"][0]
    path = recorded_path(node, kept)
    assert kept["FileSize"] == path.stat().st_size > 0
    report = probe.decode_all(path)
    assert report.errors == ()

    # the stream is still published: a new worker records it into a new file
    data = node.wait_task(task_id, lambda d: len(d["RecordFiles"]) == 2 and d["RecordFiles"][1]["FileSize"] > 0)
    assert node.stream_stats(location)["WorkerPid"] != pid
    manifest = wait_manifest(spec.manifest_path, proc=process)
    # everything sent up to one fragment before the kill is in the kept file, from its first frame
    assert recorded_frame_indices(path, manifest)[0] == 0
    assert_lost_at_most_a_fragment(path, manifest, killed_mono)
    data = stop_and_describe(node, task_id)
    second = recorded_path(node, data["RecordFiles"][1])
    assert second != path
    assert probe.decode_all(second).errors == ()
    assert probe.decode_all(second).video_frames > 0
    node.unpublish(location)


def record_whole(node, tmp_path, room, spec, sprop=True):
    """Publish, record from before the first packet, stop: (manifest, file entry, path)."""
    location, targets = publish(node, room, "cam", spec, sprop=sprop)
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    return manifest, entry, recorded_path(node, entry)


def test_parameter_sets_only_in_the_sdp_are_put_on_key_frames(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0, quirks=Quirks(in_band_parameter_sets=False))
    manifest, _, path = record_whole(node, tmp_path, "room-sprop", spec)
    sent_types = {p.payload[0] & 0x1F for p in manifest.track_packets("video")}
    assert not sent_types & {7, 8}  # no SPS/PPS was sent in band, not even in a STAP-A
    assert not any(p.payload[0] & 0x1F == 24 and p.payload[3] & 0x1F in (7, 8)
                   for p in manifest.track_packets("video"))
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames == 90
    assert_slices_equal(path, sent_video_aus(manifest))


def test_without_rtcp_tracks_are_aligned_by_arrival(node, tmp_path):
    spec = PublisherSpec(duration_s=4.0, rtcp=RtcpSpec(sender_reports=False))
    _, entry, path = record_whole(node, tmp_path, "room-nosr", spec)
    assert probe.decode_all(path).errors == ()
    offsets = probe.av_offsets(path)
    assert len(offsets) == 4 and max(abs(o) for o in offsets) <= 0.020, offsets


def test_audio_only_stream(node, tmp_path):
    spec = PublisherSpec(duration_s=3.0)
    answer = node.publish("room-audio", "mic", offer_sdp(spec, False, True), user_id="u")
    assert answer.status == 201
    task_id = node.ok("StartRecord", start_record_body("room-audio"))["TaskId"]
    process, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path)  # the answer: audio only
    manifest = wait_manifest(spec.manifest_path, proc=process)
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(answer.headers["Location"])
    assert entry["MediaTrackType"] == 1 and "_A_" in entry["FileId"]
    path = recorded_path(node, entry)
    assert probe.decode_all(path).errors == ()
    assert_opus_tail_equal(path, manifest, max_skipped=1)


def test_a_resolution_change_starts_a_new_file(node, tmp_path):
    spec = PublisherSpec(duration_s=4.0, clip=ClipSpec(switch_to=(160, 120), switch_at_s=2.0))
    location, targets = publish(node, "room-resize", "cam", spec)
    task_id = node.ok("StartRecord", start_record_body("room-resize"))["TaskId"]
    process, spec = run_publisher(spec, targets, tmp_path)
    manifest = wait_manifest(spec.manifest_path, proc=process)
    first, second = stop_and_describe(node, task_id)["RecordFiles"]
    node.unpublish(location)
    assert (first["ResolutionWidth"], first["ResolutionHeight"]) == (320, 240)
    assert (second["ResolutionWidth"], second["ResolutionHeight"]) == (160, 120)
    aus = sent_video_aus(manifest)
    for entry, part in ((first, aus[:60]), (second, aus[60:])):
        path = recorded_path(node, entry)
        report = probe.decode_all(path)
        assert report.errors == () and report.video_frames == 60
        assert (report.width, report.height) == (entry["ResolutionWidth"], entry["ResolutionHeight"])
        assert_slices_equal(path, part)


def test_a_worker_imports_no_module_after_the_fork(node, tmp_path):
    """Every module a recording worker uses was imported by the template before the fork
    (shared by all workers), none by the worker itself (private to it), not even the
    node's own __main__ (engine.cli), which multiprocessing would run again in a child."""
    location, targets = publish(node, "room-imports", "cam", PublisherSpec(duration_s=2.0))
    task_id = node.ok("StartRecord", start_record_body("room-imports"))["TaskId"]
    process, _ = run_publisher(PublisherSpec(duration_s=2.0), targets, tmp_path)
    assert process.wait(30) == 0
    stop_and_describe(node, task_id)
    assert http("DELETE", location if location.startswith("http") else node.base_url + location).status == 200
    assert worker_exit(node, "room-imports")["imported_after_fork"] == []
