"""Audio outputs on a real node with a real RTP publisher: mp3 files (the published
tone recovered from the decoded MP3; muted audio left out, a file per sound with
RecordMuteAudioSplitThreshold 0) and MP4 with AAC (`--mp4-audio aac`).

The clip is digital silence with a 60 ms 1 kHz beep every second."""

import numpy as np
import pytest

from testkit import bitstream, probe
from testkit.node import NodeProcess, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtp import PublisherSpec, offer_sdp, parse_answer, wait_manifest
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import run_publisher, stop_and_describe
from tests.e2e.test_containers import decoded_mono, tone_correlation


def record(node, room, tmp_path, bodies, duration_s=5.0):
    """Publish the clip once into `room`, recorded by one task per body: (media, {name: RecordFiles})."""
    spec = PublisherSpec(duration_s=duration_s)
    answer = node.publish(room, "cam", offer_sdp(spec, True, True), user_id="u-cam")
    tasks = {}
    for name, change in bodies.items():
        body = start_record_body(room)
        change(body)
        tasks[name] = node.ok("StartRecord", body)["TaskId"]
    process, spec = run_publisher(spec, parse_answer(answer.body.decode()), tmp_path)
    wait_manifest(spec.manifest_path, proc=process)
    files = {name: stop_and_describe(node, task_id)["RecordFiles"] for name, task_id in tasks.items()}
    node.unpublish(answer.headers["Location"])
    return spec.media(), files


def mp3(stream_type, **inputs):
    def change(body):
        body["RecordInputParams"].update(StreamType=stream_type, **inputs)
        body["RecordOutputParams"]["OutputFileFormat"] = "mp3"
    return change


def test_mp3_files(node, tmp_path):
    media, files = record(node, "mp3", tmp_path, {
        "audio": mp3(1), "both": mp3(3), "mute-split": mp3(3, RecordMuteAudio=2, RecordMuteAudioSplitThreshold=0)})
    for name in ("audio", "both"):  # StreamType 3: the audio only, as for 1
        [entry] = files[name]
        assert (entry["OutputFileFormat"], entry["MediaTrackType"]) == ("mp3", 1) and "_A_" in entry["FileId"]
        path = recorded_path(node, entry)
        assert path.suffix == ".mp3" and entry["FileSize"] == path.stat().st_size
        report = probe.decode_all(path)
        assert report.errors == () and report.audio_codec.startswith("mp3") and report.video_frames == 0
        assert abs(report.audio_duration_s - media.duration_s) <= 0.1
        beeps = probe.beep_times(path)  # the published tone, recovered from the MP3
        assert len(beeps) == len(media.flash_times) and np.allclose(np.diff(beeps), 1.0, atol=0.002)
        assert tone_correlation(decoded_mono(path), media.pcm) >= 0.9
    split = files["mute-split"]  # every beep its own file: the mute between them left out and split on
    assert len(split) == len(media.flash_times)
    for entry in split:
        assert entry["OutputFileFormat"] == "mp3" and entry["Status"] == 3
        assert len(probe.beep_times(recorded_path(node, entry))) == 1
    begins = [e["BeginTimestamp"] for e in split]
    assert np.allclose(np.diff(begins), 1000, atol=50)  # each file begins when its sound did


@pytest.fixture(scope="module")
def aac_node(tmp_path_factory):
    """A node started with --mp4-audio aac."""
    base = tmp_path_factory.mktemp("aac-node")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_args=("--mp4-audio", "aac")).start()
    yield process
    process.stop()


def test_mp4_audio_aac(aac_node, tmp_path):
    def separate(body):
        body["RecordInputParams"]["StreamType"] = 4

    media, files = record(aac_node, "mp4-aac", tmp_path, {"av": lambda body: None, "separate": separate})
    [entry] = files["av"]
    path = recorded_path(aac_node, entry)
    report = probe.decode_all(path)
    assert report.errors == () and (report.video_codec, report.audio_codec) == ("h264", "aac")
    assert report.video_frames == len(media.video)
    offsets = probe.av_offsets(path)
    assert len(offsets) == len(media.flash_times) and max(abs(o) for o in offsets) <= 0.020, offsets
    assert [recorded_path(aac_node, e).suffix for e in files["separate"]] == [".mp4", ".aac"]
    video_only = recorded_path(aac_node, files["separate"][0])
    assert probe.decode_all(video_only).audio_frames == 0
    assert bitstream.h264_slice_nals_from_file(video_only) == bitstream.h264_slice_nals_from_aus(
        au.data for au in media.video)
