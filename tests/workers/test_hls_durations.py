"""The final HLS playlist lists every segment's true duration, the last one included."""

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage_adapters.local import LocalAdapter
from testkit import probe
from testkit.media import make_test_media
from workers.codecs import opus
from workers.outputs.hls import HlsWriter
from workers.outputs.params import AudioParams, VideoParams, WriterOptions
from workers.sink import FileObjects

FPS = 30


def record_hls(root, duration_s: float, audio: bool):
    media = make_test_media(duration_s, fps=FPS)
    with ThreadPoolExecutor(1) as uploader:
        files = FileObjects(LocalAdapter(root, "b"), "f/", uploader)
        writer = HlsWriter(files, "s", VideoParams("h264", 320, 240),
                           AudioParams("opus", 48000, 2, opus.opus_head(2)) if audio else None,
                           WriterOptions(fragment_seconds=2))
        events = [(v.time_s, 0, v) for v in media.video]
        events += [(a.time_s, 1, a) for a in media.audio if audio and a.time_s >= 0]
        for time_s, kind, item in sorted(events, key=lambda e: e[:2]):
            if kind == 0:
                writer.write_video(item.data, round(time_s * 90000), item.keyframe)
            else:
                writer.write_audio(item.data, round(time_s * 48000), 960)
        writer.close()
        for future in files.close():
            assert future.result() is not None
    return root / "b" / "f" / "s.m3u8"


# 4.0 s + one frame: the last segment holds a single key frame
@pytest.mark.parametrize("duration_s", [4.0 + 1 / FPS, 5.5])
@pytest.mark.parametrize("audio", [False, True], ids=["video", "video+audio"])
def test_every_extinf_is_what_its_segment_lasts(tmp_path, duration_s, audio):
    playlist = record_hls(tmp_path, duration_s, audio)
    text = playlist.read_text()
    extinf = [float(v) for v in re.findall(r"#EXTINF:([\d.]+),", text)]
    assert len(extinf) == 3 and min(extinf) > 0, text
    for index, listed in enumerate(extinf):
        video = probe.decode_all(playlist.parent / f"s_{index}.ts")
        first, last = video.video_pts_s[0], video.video_pts_s[-1]
        assert abs(listed - (last - first + 1 / FPS)) < 0.001, (index, text)
    assert abs(sum(extinf) - duration_s) < 0.001
