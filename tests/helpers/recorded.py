"""Files written by the workers' container writers from the test clip, without a
worker: what settling reads back and what playlists are checked against."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from storage_adapters.local import LocalAdapter
from testkit.media import make_test_media
from workers.codecs import opus
from workers.outputs.base import ContainerWriter
from workers.outputs.params import AudioParams, VideoParams, WriterOptions
from workers.sink import FileObjects

FPS = 30
OPUS = AudioParams("opus", 48000, 2, opus.opus_head(2))


def record_clip(writer_type: type[ContainerWriter], root: Path, duration_s: float, *, audio: bool = True,
                video: bool = True, options: WriterOptions = WriterOptions(fragment_seconds=2)) -> Path:
    """`duration_s` of the clip (H.264 + Opus from its first key frame) written to
    <root>/b/f/ by `writer_type`; returns the file's path."""
    media = make_test_media(duration_s, fps=FPS)
    with ThreadPoolExecutor(1) as uploader:
        files = FileObjects(LocalAdapter(root, "b"), "f/", uploader)
        writer = writer_type(files, "s", VideoParams("h264", 320, 240) if video else None,
                             OPUS if audio else None, options)
        events = [(v.time_s, 0, v) for v in media.video if video]
        events += [(a.time_s, 1, a) for a in media.audio if audio and a.time_s >= 0]
        for time_s, kind, item in sorted(events, key=lambda e: e[:2]):
            if kind == 0:
                writer.write_video(item.data, round(time_s * 90000), item.keyframe)
            else:
                writer.write_audio(item.data, round(time_s * 48000), 960)
        writer.close()
        for future in files.close():
            assert future.result() is not None
    return root / "b" / "f" / writer.name
