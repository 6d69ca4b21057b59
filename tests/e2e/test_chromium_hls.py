"""HLS from a real browser: headless Chromium sends one key frame in ~30 s unless
asked, so the node asks for one (PLI over WebRTC) whenever a segment is due, and
the segments stay within FragmentSeconds + 1 s."""

import re

import av
import pytest

from testkit.node import start_record_body
from tests.e2e.media_checks import recorded_path
from tests.e2e.publishing import stop_and_describe
from tests.helpers import chromium

pytestmark = pytest.mark.skipif(
    not chromium.available(), reason=f"no Chromium at {chromium.CHROMIUM} (.ci/install-browser installs Debian's)")

SECONDS = 12.0
FRAGMENT_SECONDS = 2
MIN_SEGMENTS = 5


def test_segments_of_a_chromium_stream_keep_their_length(node, tmp_path):
    body = start_record_body("chromium-hls")
    body["RecordOutputParams"].update(OutputFileFormat="hls", FragmentSeconds=FRAGMENT_SECONDS)
    task_id = node.ok("StartRecord", body)["TaskId"]
    run = chromium.publish(f"{node.base_url}/whip/chromium-hls/cam?UserId=u-cam", tmp_path, SECONDS)
    assert not run.errors and run.done, run.describe()
    [entry] = stop_and_describe(node, task_id)["RecordFiles"]
    playlist = recorded_path(node, entry)
    lines = playlist.read_text().splitlines()
    durations = [float(re.match(r"#EXTINF:([\d.]+),", line).group(1)) for line in lines if line.startswith("#EXTINF")]
    segments = [line.rsplit("/", 1)[-1] for line in lines if line and not line.startswith("#")]
    assert len(segments) >= MIN_SEGMENTS, (durations, run.outbound("video"))
    assert max(durations[:-1]) <= FRAGMENT_SECONDS + 1, durations  # the last one ends where publishing did
    assert run.outbound("video")["pliCount"] >= MIN_SEGMENTS - 1
    for name in segments:
        with av.open(str(playlist.parent / name)) as segment:
            first = next(p for p in segment.demux(video=0) if p.size)
            assert first.is_keyframe, name
        with av.open(str(playlist.parent / name)) as segment:
            assert next(segment.decode(video=0)).key_frame, name  # decodes from its first frame
