"""Pulling from RTSP: a real node subscribes (FFmpeg's RTSP client, in the stream's worker)
to real RTSP servers from Debian's packages (`.ci/install-media-tools`): GStreamer's RTSP
server (TCP interleaved or UDP; H.264, H.265, G.711, MJPEG) and rtsp-server-perl relaying
what FFmpeg pushes to it (UDP)."""

from __future__ import annotations

import signal
import time

import pytest

from testkit import bitstream, probe
from testkit.node import NodeProcess, http, start_record_body
from testkit.ports import free_port, free_udp_range
from testkit.rtsp.clips import h264_aac_clip, hevc_clip
from testkit.rtsp.servers import file_launch, gst_available, relay_available, start_gst_server, start_relay
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import stop_and_describe
from tests.e2e.pulling import pull, pull_ok, source_state, wait_source, workers

pytestmark = pytest.mark.skipif(not gst_available(), reason="GStreamer's RTSP server is not installed "
                                                            "(bash .ci/install-media-tools)")
CAMERA_PASSWORD = "cam-pw-51be"
MJPEG_ONLY = "( videotestsrc is-live=true ! video/x-raw,width=320,height=240 ! jpegenc ! rtpjpegpay name=pay0 )"
H264_AND_G711 = ("( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 ! "
                 "x264enc tune=zerolatency key-int-max=30 ! rtph264pay name=pay0 pt=96 "
                 "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 )")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("pull-rtsp")
    process = NodeProcess(base / "data", free_port(), free_udp_range(), base / "node.log",
                          extra_args=("--test-limits", "--rtp-timeout", "3")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tmp_path_factory.mktemp("rtsp-clips")


@pytest.fixture
def processes():
    """Servers started by a test, ended after it (SIGCONT first: a test may have stopped one)."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.wait()


def gst_server(processes, launch: str, **options) -> str:
    port = free_port()
    processes.append(start_gst_server(port, launch, **options))
    return f"rtsp://127.0.0.1:{port}/cam"


def contiguous_in(got: list[bytes], looped: list[bytes]) -> int:
    """Where `got` starts in `looped` (it must be one unbroken run of it)."""
    starts = [i for i in range(len(looped) - len(got) + 1) if looped[i:i + len(got)] == got]
    assert starts, "the recording is not an unbroken run of the clip"
    return starts[0]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_h264_and_aac_recorded_as_sent(node, processes, clips, transport):
    """TCP interleaved (the default) and UDP, from GStreamer's server: every video slice
    and every AAC frame as the camera sent it (AAC is not transcoded into MP4)."""
    room = f"rtsp-{transport}"
    clip = h264_aac_clip(clips)
    url = gst_server(processes, file_launch(clip.path), protocols=transport)
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    body = {"Url": url.replace("rtsp://", f"rtsp://viewer:{CAMERA_PASSWORD}@"), "Kind": "rtsp"}
    if transport == "udp":
        body["Transport"] = "udp"
    location = pull_ok(node, room, "cam", body)
    live = wait_source(location, lambda s: s["State"] == "live", timeout=20)
    assert [(t["Codec"], t["ClockRate"]) for t in live["Tracks"]] == [("H264", 90000), ("aac", 48000)]
    assert live["Transport"] == transport
    time.sleep(clip.duration_s - 1.5)  # most of the clip (the server ends the session at its end)
    assert http("DELETE", location).status == 200
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == () and (report.video_codec, report.audio_codec) == ("h264", "aac")
    got = bitstream.h264_slice_nals_from_file(path)
    assert len(got) >= 90 and got == clip.video_slices[:len(got)]  # from the clip's first frame on
    frames = bitstream.aac_frames_from_file(path)
    assert len(frames) >= 150 and contiguous_in(frames, clip.audio_frames) <= 2
    offsets = probe.av_offsets(path)
    assert len(offsets) >= 3 and max(abs(o) for o in offsets) <= 0.020, offsets
    assert CAMERA_PASSWORD not in node.logs() + str(source_state(location))


@pytest.mark.skipif(not relay_available(), reason="rtsp-server-perl / ffmpeg not installed")
def test_rtsp_server_perl_relay_over_udp(node, processes, clips):
    room = "rtsp-relay"
    clip = h264_aac_clip(clips)
    port = free_port()
    processes.extend(start_relay(clip.path, port))
    body = start_record_body(room)
    body["RecordOutputParams"]["OutputFileFormat"] = "flv"  # AAC as sent into FLV too
    task_id = node.ok("StartRecord", body)["TaskId"]
    location = pull_ok(node, room, "cam", {"Url": f"rtsp://127.0.0.1:{port}/cam", "Kind": "rtsp",
                                           "Transport": "udp"})
    wait_source(location, lambda s: s["State"] == "live", timeout=20)
    time.sleep(5)
    assert http("DELETE", location).status == 200
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    path = recorded_path(node, entry)
    report = probe.decode_all(path)
    assert report.errors == () and report.video_frames >= 100
    got = bitstream.h264_slice_nals_from_file(path)
    contiguous_in(got, clip.video_slices * 4)  # joined the loop at a key frame, nothing lost
