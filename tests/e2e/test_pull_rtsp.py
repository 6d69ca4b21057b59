"""Pulling from RTSP: a real node subscribes (FFmpeg's RTSP client, in the stream's worker)
to real RTSP servers from Debian's packages (`.ci/install-media-tools`): GStreamer's RTSP
server (TCP interleaved or UDP; H.264, H.265, G.711, linear PCM) and rtsp-server-perl relaying
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
from tests.e2e.pulling import pull_ok, source_state, wait_source, workers

pytestmark = pytest.mark.skipif(not gst_available(), reason="GStreamer's RTSP server is not installed "
                                                            "(bash .ci/install-media-tools)")
CAMERA_PASSWORD = "cam-pw-51be"
L16_ONLY = ("( audiotestsrc is-live=true ! audioconvert ! audio/x-raw,format=S16BE,rate=16000,channels=1 ! "
            "rtpL16pay name=pay0 )")  # linear PCM: FFmpeg reads it, we do not record it


def h264_and_g711(clip) -> str:
    """The clip's H.264 with a tone as G.711 mu-law (8 kHz), as many cameras send."""
    return (f"( filesrc location={clip.path} ! tsdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 "
            "audiotestsrc ! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 )")


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


def test_h265_into_mp4_and_flv(node, processes, clips):
    room = "rtsp-h265"
    clip = hevc_clip(clips)
    url = gst_server(processes, file_launch(clip.path, "h265"))
    tasks = []
    for output_format in ("mp4", "flv"):
        body = start_record_body(room)
        body["RecordOutputParams"]["OutputFileFormat"] = output_format
        tasks.append(node.ok("StartRecord", body)["TaskId"])
    location = pull_ok(node, room, "cam", {"Url": url, "Kind": "rtsp"})
    live = wait_source(location, lambda s: s["State"] == "live", timeout=20)
    assert [t["Codec"] for t in live["Tracks"]] == ["H265", "aac"]
    time.sleep(clip.duration_s - 2)
    assert http("DELETE", location).status == 200
    for task_id, suffix in zip(tasks, (".mp4", ".flv")):
        [entry] = stop_and_describe(node, task_id)["RecordFiles"]
        assert (entry["ResolutionWidth"], entry["ResolutionHeight"]) == (320, 240)
        path = recorded_path(node, entry)
        assert path.suffix == suffix
        report = probe.decode_all(path)
        assert report.errors == () and (report.video_codec, report.audio_codec) == ("hevc", "aac")
        got = bitstream.hevc_slice_nals_from_file(path)
        assert len(got) >= 90 and got == clip.video_slices[:len(got)]


def test_g711_camera_that_stalls_is_retried_and_max_idle_ends_the_task(node, processes, clips):
    """G.711 becomes AAC for FLV. The camera then stops answering without closing
    (SIGSTOP): after --rtp-timeout (3 s here) it has left the room, it is retried (each
    attempt timing out), and MaxIdleTime ends the task; once it answers again it is live."""
    room = "rtsp-stall"
    url = gst_server(processes, h264_and_g711(h264_aac_clip(clips)))
    body = start_record_body(room, MaxIdleTime=4)
    body["RecordOutputParams"]["OutputFileFormat"] = "flv"
    task_id = node.ok("StartRecord", body)["TaskId"]
    location = pull_ok(node, room, "cam", {"Url": url, "Kind": "rtsp"})
    live = wait_source(location, lambda s: s["State"] == "live", timeout=20)
    assert [(t["Codec"], t["ClockRate"]) for t in live["Tracks"]] == [("H264", 90000), ("aac", 8000)]
    time.sleep(3)
    processes[-1].send_signal(signal.SIGSTOP)
    stalled = time.monotonic()
    down = wait_source(location, lambda s: s["State"] == "retrying", timeout=15)
    assert down["LastError"].startswith("dropped: inactive:"), down["LastError"]
    data = node.wait_task(task_id, lambda d: d["Status"] == 3, timeout=30)
    assert time.monotonic() - stalled < 3 + 4 + 6  # inactivity, then MaxIdleTime, then the tick
    [entry] = data["RecordFiles"]
    report = probe.decode_all(recorded_path(node, entry))
    assert report.errors == () and (report.video_codec, report.audio_codec) == ("h264", "aac")
    assert report.audio_rate == 8000 and report.audio_duration_s > 2
    processes[-1].send_signal(signal.SIGCONT)
    back = wait_source(location, lambda s: s["State"] == "live", timeout=40)
    assert back["Connects"] == 2 and back["Drops"] == 1
    assert http("DELETE", location).status == 200


def test_unsupported_codec_and_unreachable_camera(node, processes, closed_port):
    room = "rtsp-bad"
    url = gst_server(processes, L16_ONLY)
    location = pull_ok(node, room, "cam", {"Url": url, "Kind": "rtsp"})
    state = wait_source(location, lambda s: s["State"] == "retrying", timeout=20)
    assert state["LastError"].startswith("nothing recordable: the source offers audio pcm_s16be"), state["LastError"]
    assert http("DELETE", location).status == 200
    refused = pull_ok(node, room, "cam", {"Url": f"rtsp://user:{CAMERA_PASSWORD}@127.0.0.1:{closed_port}/x",
                                          "Kind": "rtsp", "Transport": "udp"})
    state = wait_source(refused, lambda s: s["State"] == "retrying", timeout=20)
    assert state["LastError"] == "cannot connect: Connection refused", state["LastError"]
    assert http("DELETE", refused).status == 200
    deadline = time.monotonic() + 10
    while workers(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers(node) == 0 and http("GET", node.base_url + "/readyz").status == 200
    assert CAMERA_PASSWORD not in node.logs()
