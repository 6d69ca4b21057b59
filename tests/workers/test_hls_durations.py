"""The final HLS playlist lists every segment's true duration, the last one included."""

import re

import pytest

from testkit import probe
from tests.helpers.recorded import FPS, record_clip
from workers.outputs.hls import HlsWriter


# 4.0 s + one frame: the last segment holds a single key frame
@pytest.mark.parametrize("duration_s", [4.0 + 1 / FPS, 5.5])
@pytest.mark.parametrize("audio", [False, True], ids=["video", "video+audio"])
def test_every_extinf_is_what_its_segment_lasts(tmp_path, duration_s, audio):
    playlist = record_clip(HlsWriter, tmp_path, duration_s, audio=audio)
    text = playlist.read_text()
    extinf = [float(v) for v in re.findall(r"#EXTINF:([\d.]+),", text)]
    assert len(extinf) == 3 and min(extinf) > 0, text
    for index, listed in enumerate(extinf):
        video = probe.decode_all(playlist.parent / f"s_{index}.ts")
        first, last = video.video_pts_s[0], video.video_pts_s[-1]
        assert abs(listed - (last - first + 1 / FPS)) < 0.001, (index, text)
    assert abs(sum(extinf) - duration_s) < 0.001
