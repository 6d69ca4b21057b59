"""Container writers: codec guards, the Opus -> AAC path, and WebM (VP8 + Opus)."""

from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

from storage_adapters.local import LocalAdapter
from storage_adapters.memory import MemoryAdapter
from testkit import bitstream, probe
from testkit.media import make_test_media
from workers.codecs import opus, vp8
from workers.outputs.adts import AdtsWriter
from workers.outputs.flv import FlvWriter
from workers.outputs.hls import HlsWriter
from workers.outputs.mp4 import FragmentedMp4Writer
from workers.outputs.params import AudioParams, VideoParams, WriterOptions
from workers.outputs.webm import WebmWriter
from workers.sink import FileObjects

OPUS = AudioParams("opus", 48000, 2, opus.opus_head(2))


@pytest.fixture
def objects():
    with ThreadPoolExecutor(1) as uploader:
        adapter = MemoryAdapter()
        yield FileObjects(adapter, "f/", uploader), adapter


@pytest.mark.parametrize("writer", [FlvWriter, HlsWriter, FragmentedMp4Writer, AdtsWriter])
def test_codecs_a_container_cannot_take_are_refused_before_ffmpeg(objects, writer):
    with pytest.raises(ValueError):
        writer(objects[0], "s", VideoParams("vp8", 64, 64), None)
    with pytest.raises(ValueError):
        writer(objects[0], "s", None, AudioParams("pcm_s16le", 48000, 2, b""))


def test_webm_takes_only_vp8(objects):
    with pytest.raises(ValueError):
        WebmWriter(objects[0], "s", VideoParams("h264", 64, 64), None)


def test_adts_takes_no_video(objects):
    with pytest.raises(ValueError):
        AdtsWriter(objects[0], "s", VideoParams("h264", 64, 64), None)


def decoded_samples(data: bytes, tmp_path) -> np.ndarray:
    path = tmp_path / "a.aac"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])


def test_a_gap_in_opus_becomes_silence_in_aac(objects, tmp_path):
    files, adapter = objects
    media = make_test_media(3.0)
    writer = AdtsWriter(files, "s", None, OPUS)
    packets = [p for p in media.audio if not 1.0 <= p.time_s < 1.5]  # half a second never arrived
    for packet in packets:
        writer.write_audio(packet.data, round((packet.time_s + 0.0065) * 48000), 960)
    writer.close()
    for future in files.close():
        future.result()
    samples = decoded_samples(adapter.objects["f/s.aac"], tmp_path)
    # the timeline stays whole: 3 s of audio (plus encoder priming/padding), silence over the gap
    sent = len(media.audio) * 960  # every packet's span, the missing ones included
    assert sent + 1024 <= len(samples) <= sent + 2 * 1024  # + encoder priming, + padding of the last frame
    priming = 1024
    gap = samples[priming + int(1.05 * 48000): priming + int(1.45 * 48000)]
    assert np.abs(gap).max() < 1e-3
    assert np.abs(samples[priming + int(1.5 * 48000):]).max() > 0.1  # the beep at 2.5 s is there


def test_webm_holds_vp8_and_opus_exactly_and_streams_while_written(objects, tmp_path):
    files, adapter = objects
    media = make_test_media(3.0, video_codec="vp8")
    writer = WebmWriter(files, "s", VideoParams("vp8", *vp8.keyframe_size(media.video[0].data)),
                        AudioParams("opus", 48000, 1, opus.opus_head(1)))
    audio = [p for p in media.audio if p.time_s >= 0]  # the file starts at the first key frame
    events = sorted([(au.time_s, 0, au) for au in media.video] + [(p.time_s, 1, p) for p in audio],
                    key=lambda e: e[:2])
    written_before = {}
    for time_s, kind, item in events:
        if kind == 0:
            writer.write_video(item.data, round(time_s * 90000), item.keyframe)
        else:
            writer.write_audio(item.data, round(time_s * 48000), 960)
        files.pump()
        written_before[round(time_s, 3)] = writer.out.written_bytes
    writer.close()
    for future in files.close():
        future.result()
    # clusters leave the muxer at least every second, not only at the end
    assert written_before[1.5] > written_before[0.0] and written_before[2.5] > written_before[1.5]
    path = tmp_path / "s.webm"
    path.write_bytes(adapter.objects["f/s.webm"])
    report = probe.decode_all(path)
    assert report.errors == () and report.format_name == "matroska,webm"
    assert (report.video_codec, report.audio_codec, report.width, report.height) == ("vp8", "opus", 320, 240)
    assert report.video_frames == len(media.video) and report.audio_frames == len(audio)
    assert bitstream.vp8_frames_from_file(path) == [au.data for au in media.video]
    assert bitstream.opus_packets_from_file(path) == [p.data for p in audio]
    assert abs(report.video_duration_s - 3.0) <= 0.002 and abs(report.audio_duration_s - 3.0) <= 0.03
    offsets = probe.av_offsets(path)
    assert len(offsets) == 3 and max(abs(o) for o in offsets) <= 0.002  # Matroska keeps milliseconds
    with av.open(str(path)) as container:  # written front to back: no duration, no seek index
        assert container.duration is None
        head = bytes(container.streams.audio[0].codec_context.extradata)
        assert head.startswith(b"OpusHead\x01") and head[9] == 1  # version 1, mono: the OpusHead as CodecPrivate


@pytest.mark.parametrize("short_paths", [True, False])
def test_hls_segments_of_an_escaped_name_are_named_and_listed_as_it(tmp_path, short_paths):
    """A name with %XX escapes (and the cut mark '+'): segments are `<stem>_<n>.ts`, not
    FFmpeg's doubled '%%', and the playlist lists them by name (or at URL base + name)."""
    stem = "T_a%2Fb+0123abcd_V_20240101000000000"
    media = make_test_media(4.0)
    adapter = LocalAdapter(tmp_path, "bucket")
    with ThreadPoolExecutor(1) as uploader:
        files = FileObjects(adapter, "rec/", uploader)
        writer = HlsWriter(files, stem, VideoParams("h264", 320, 240), None,
                           WriterOptions(fragment_seconds=2, short_segment_paths=short_paths))
        for au in media.video:
            writer.write_video(au.data, round(au.time_s * 90000), au.keyframe)
        writer.close()
        for future in files.close():
            future.result()
    folder = tmp_path / "bucket" / "rec"
    segments = sorted(p.name for p in folder.glob("*.ts"))
    assert segments == [f"{stem}_{n}.ts" for n in range(len(segments))] and len(segments) >= 2
    base = ""  # the node's disk: by name, relative to the playlist (the node serves both), whatever was asked
    listed = [line for line in (folder / f"{stem}.m3u8").read_text().splitlines() if not line.startswith("#")]
    assert listed == [base + name for name in segments]
    report = probe.decode_all(folder / f"{stem}.m3u8")
    assert report.errors == () and report.video_frames == len(media.video)


def test_hls_on_a_bucket_lists_segments_at_the_buckets_url_unless_short_paths(tmp_path):
    media = make_test_media(3.0)
    adapter = MemoryAdapter()
    with ThreadPoolExecutor(1) as uploader:
        files = FileObjects(adapter, "rec/", uploader)
        writer = HlsWriter(files, "s", VideoParams("h264", 320, 240), None, WriterOptions(fragment_seconds=2,
                                                                                           short_segment_paths=False))
        for au in media.video:
            writer.write_video(au.data, round(au.time_s * 90000), au.keyframe)
        writer.close()
        for future in files.close():
            future.result()
    listed = [line for line in adapter.objects["rec/s.m3u8"].decode().splitlines() if not line.startswith("#")]
    assert listed and all(line.startswith("memory://rec/s_") for line in listed)
