"""The probe and the bitstream comparisons on files muxed directly with PyAV (real
muxers, no node): clean, corrupted, audio shifted, several containers."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from testkit import bitstream, probe
from testkit.media import AUDIO_FRAME_SAMPLES, AUDIO_RATE, TestMedia

FMP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


def mux_media(
    path,
    media: TestMedia,
    audio_shift_s=0.0,
    corrupt_frame=None,
    fmt="mp4",
    options=FMP4_OPTIONS,
) -> None:
    """Remux the encoded media (no re-encoding); fragmented MP4 by default.

    Timeline origin = earliest capture time (the first Opus packet, -6.5 ms),
    so no pts is negative.  ``corrupt_frame`` truncates that AU's data.
    """
    origin = min(media.video[0].time_s, media.audio[0].time_s)
    with av.open(str(path), "w", format=fmt, options=options) as out:
        video = out.add_mux_stream("h264", rate=media.fps, width=media.width, height=media.height)
        video.time_base = Fraction(1, 90000)
        audio = out.add_stream("opus", rate=AUDIO_RATE, layout="mono")
        audio.codec_context.extradata = media.opus_head
        audio.time_base = Fraction(1, AUDIO_RATE)
        items = [(au.time_s, video, au) for au in media.video]
        items += [(p.time_s + audio_shift_s, audio, p) for p in media.audio]
        for t, stream, item in sorted(items, key=lambda i: i[0]):
            data = item.data
            if stream is video and item.index == corrupt_frame:
                data = data[: len(data) // 2]
            packet = av.Packet(data)
            packet.stream = stream
            packet.time_base = stream.time_base
            packet.pts = packet.dts = round((t - origin) / stream.time_base)
            if stream is video:
                packet.is_keyframe = item.keyframe
            out.mux(packet)


@pytest.fixture(scope="module")
def fmp4(media, tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "clip.mp4"
    mux_media(path, media)
    return path


def test_decode_all_clean_file(fmp4, media):
    report = probe.decode_all(fmp4)
    assert report.errors == () and report.ok
    assert (report.video_codec, report.audio_codec) == ("h264", "opus")
    assert (report.width, report.height) == (320, 240)
    assert report.video_frames == len(media.video)
    assert report.audio_frames == len(media.audio)
    assert report.audio_rate == AUDIO_RATE and report.audio_channels == 1
    # fMP4 with empty_moov has no edit list: FFmpeg moves each track's first
    # sample to 0 and lengthens it, here the first video frame by 6.5 ms.
    assert report.video_duration_s == pytest.approx(6.0, abs=0.007)
    assert np.allclose(np.diff(report.video_pts_s[1:]), 1 / 30, atol=2e-5)
    # every decoded sample, minus the pre-skip the decoder drops
    expected_samples = len(media.audio) * AUDIO_FRAME_SAMPLES - media.pre_skip
    assert report.audio_samples == expected_samples
    assert report.audio_duration_s == pytest.approx(expected_samples / AUDIO_RATE)


def test_decode_all_reports_corruption(media, tmp_path):
    path = tmp_path / "broken.mp4"
    mux_media(path, media, corrupt_frame=30)
    report = probe.decode_all(path)
    assert not report.ok
    assert any("h264" in e for e in report.errors), report.errors


def test_compressed_payloads_survive_remux(fmp4, media):
    from_aus = bitstream.h264_slice_nals_from_aus(au.data for au in media.video)
    assert len(from_aus) == len(media.video)  # one slice per frame
    assert bitstream.h264_slice_nals_from_file(fmp4) == from_aus
    assert bitstream.opus_packets_from_file(fmp4) == [p.data for p in media.audio]


def test_flashes_and_beeps_in_sync(fmp4, media):
    origin = media.audio[0].time_s
    assert probe.flash_times(fmp4) == pytest.approx([t - origin for t in media.flash_times])
    offsets = probe.av_offsets(fmp4)
    assert len(offsets) == len(media.flash_times)
    # 1 ms, plus a little for Opus' smearing of the onset
    assert max(abs(o) for o in offsets) < 0.001, offsets


def test_av_offsets_detect_shifted_audio(media, tmp_path):
    path = tmp_path / "late_audio.mp4"
    mux_media(path, media, audio_shift_s=0.200)
    offsets = probe.av_offsets(path)
    assert len(offsets) == len(media.flash_times)
    assert offsets == pytest.approx([0.200] * len(offsets), abs=0.001)


@pytest.mark.parametrize("fmt, suffix", [("mpegts", "ts"), ("matroska", "mkv")])
def test_probe_is_container_agnostic(media, tmp_path, fmt, suffix):
    path = tmp_path / f"clip.{suffix}"
    mux_media(path, media, fmt=fmt, options={})
    report = probe.decode_all(path)
    assert report.ok and report.video_frames == len(media.video)
    assert bitstream.h264_slice_nals_from_file(path) == bitstream.h264_slice_nals_from_aus(
        au.data for au in media.video
    )
    assert bitstream.opus_packets_from_file(path) == [p.data for p in media.audio]
    # matroska stores milliseconds
    assert max(abs(o) for o in probe.av_offsets(path)) < 0.0015
