"""A real browser publishing into the node: Debian's headless Chromium sends its
fake camera (640x480, 30 fps) and microphone over WHIP from a page on another
origin (CORS for real), as a web application would. The page copies every frame
its senders send (an encoded transform that changes nothing), so the files are
compared with them byte for byte, and it reports its senders' getStats()."""

import re

import av
import pytest

from testkit import bitstream, probe
from testkit.node import start_record_body
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import stop_and_describe, worker_line
from tests.helpers import chromium

pytestmark = pytest.mark.skipif(
    not chromium.available(), reason=f"no Chromium at {chromium.CHROMIUM} (.ci/install-browser installs Debian's)")

SECONDS = 5.0
FPS = 30
MAX_SKIPPED_VIDEO = FPS  # frames sent before the node's first key frame (in practice none)
MAX_SKIPPED_AUDIO = 25  # Opus packets (20 ms) that arrive before the first video key frame (in practice 0-2)


def publish_and_record(node, tmp_path, room, codec=None):  # node: the e2e conftest's, one per module
    """StartRecord, let Chromium publish for SECONDS, StopRecord: (what the page reported, the one file)."""
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    run = chromium.publish(f"{node.base_url}/whip/{room}/cam?UserId=u-cam", tmp_path, SECONDS, codec)
    assert not run.errors and run.done, run.describe()
    assert run.done["deleteStatus"] == 200
    data = stop_and_describe(node, task_id)
    assert len(data["RecordFiles"]) == 1, (data, run.describe())
    [entry] = data["RecordFiles"]
    assert entry["UserId"] == "u-cam" and entry["MediaTrackType"] == 3
    return run, recorded_path(node, entry)


def video_payloads(path):
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def media_section(sdp: str, kind: str) -> str:
    return re.search(rf"^m={kind} .*?(?=^m=|\Z)", sdp, re.M | re.S).group(0)


def codec_names(section: str) -> set[str]:
    return set(re.findall(r"^a=rtpmap:\d+ ([^/]+)/", section, re.M))


def assert_like_what_was_sent(run, path, video_codec):
    """Decodes cleanly, and holds what the page sent, from (nearly) its first frames to its last."""
    report = probe.decode_all(path)
    assert report.errors == (), report.errors
    assert (report.video_codec, report.audio_codec) == (video_codec, "opus")
    capture, video = run.stats["capture"], run.outbound("video")
    assert (capture["width"], capture["height"], capture["frameRate"]) == (640, 480, FPS)
    assert (report.width, report.height) == (video["frameWidth"], video["frameHeight"]) == (640, 480)
    # loopback only: Chromium's side may be this machine's own address; the node's is 127.0.0.1
    assert run.stats["path"]["remote"].startswith("udp 127.0.0.1:"), run.stats["path"]

    sent_video, sent_audio = run.sent("video"), run.sent("audio")
    assert len(sent_video) == video["framesSent"] == video["framesEncoded"]
    assert len(sent_audio) == run.outbound("audio")["packetsSent"]
    skipped = len(sent_video) - report.video_frames
    assert 0 <= skipped <= MAX_SKIPPED_VIDEO and run.frame_type("video", skipped) == "key", (skipped, video)
    got_audio = bitstream.opus_packets_from_file(path)
    assert 0 <= len(sent_audio) - len(got_audio) <= MAX_SKIPPED_AUDIO
    assert got_audio == sent_audio[len(sent_audio) - len(got_audio):]
    published = run.stats["published"]
    assert abs(report.video_duration_s - published) <= 1.0 and abs(report.audio_duration_s - published) <= 1.0
    # the encoder drops frames (never the picture size) only if the machine is starved
    assert report.video_frames >= 0.5 * FPS * published, (report.video_frames, published)
    return sent_video[skipped:]


def test_h264_from_chromium_recorded_exactly(node, tmp_path):
    run, path = publish_and_record(node, tmp_path, "chromium-h264")
    offered = media_section(run.offer, "video")
    assert offered.index(" VP8/90000") < offered.index(" H264/90000")  # Chromium's order; H.264 is chosen
    answered = media_section(run.answer, "video")
    assert codec_names(answered) == {"H264", "rtx"}
    [profile] = re.findall(r"profile-level-id=([0-9a-fA-F]{6})", answered)
    assert f"profile-level-id={profile}" in offered
    assert run.outbound("video")["codec"] == "video/H264" and profile in run.outbound("video")["sdpFmtpLine"]
    assert path.suffix == ".mp4"

    sent = assert_like_what_was_sent(run, path, "h264")
    assert bitstream.h264_slice_nals_from_file(path) == bitstream.h264_slice_nals_from_aus(sent)
    # placed by Chromium's Sender Reports (its audio's first comes seconds after its video's), not by arrival
    assert worker_line(node, "chromium-h264", "file_opened")["basis"] == "sender"
    with av.open(str(path)) as container:
        avcc = container.streams.video[0].codec_context.extradata
    assert avcc[1] == int(profile[:2], 16)  # the profile Chromium encoded, recorded as sent


def test_vp8_only_offer_recorded_as_webm(node, tmp_path):
    run, path = publish_and_record(node, tmp_path, "chromium-vp8", codec="vp8")
    assert codec_names(media_section(run.offer, "video")) == {"VP8", "rtx"}
    assert run.outbound("video")["codec"] == "video/VP8"
    assert path.suffix == ".webm"
    sent = assert_like_what_was_sent(run, path, "vp8")
    assert video_payloads(path) == sent  # VP8 frames as sent, in WebM blocks
