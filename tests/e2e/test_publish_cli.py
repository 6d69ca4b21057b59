"""`recnode publish` against a real node: the test pattern and a media file, over
plain RTP and over WHIP, each recorded into a file that decodes whole."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from testkit import probe
from testkit.node import REPO, start_record_body
from tests.e2e.media_checks import recorded_path


def _clip(path, seconds: int = 2, fps: int = 25) -> None:
    """A small MP4 (H.264 High + AAC) made here, as a user's file would be."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=48000, layout="mono")
        for i in range(seconds * fps):
            picture = np.full((240, 320, 3), (i * 7) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        samples = np.sin(np.arange(seconds * 48000) * 2 * np.pi * 440 / 48000).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, start
            out.mux(audio.encode(frame))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


@pytest.mark.parametrize("whip, from_file", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["rtp-pattern", "whip-pattern", "rtp-file", "whip-file"])
def test_publish_sends_a_pattern_or_a_file_that_is_recorded(node, tmp_path, whip, from_file):
    room = f"room-publish-{int(whip)}{int(from_file)}"
    task_id = node.ok("StartRecord", start_record_body(room))["TaskId"]
    args = ["publish", "--node", node.base_url, "--room", room, "--stream", "cli", "--duration", "2"]
    if whip:
        args.append("--whip")
    if from_file:
        _clip(tmp_path / "clip.mp4")
        args += ["--file", str(tmp_path / "clip.mp4")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECNODE_")}
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert ("over WHIP" if whip else "over RTP") in done.stderr
    node.ok("StopRecord", {"TaskId": task_id})
    data = node.wait_task(task_id, lambda d: d["RecordFiles"] and all(f["Status"] == 3 for f in d["RecordFiles"]))
    [entry] = data["RecordFiles"]
    assert entry["StreamId"] == "cli" and entry["MediaTrackType"] == 3
    report = probe.decode_all(recorded_path(node, entry))
    assert report.errors == () and report.audio_frames > 0
    assert report.video_frames >= 25  # the first key frame on, about 2 s of pictures
