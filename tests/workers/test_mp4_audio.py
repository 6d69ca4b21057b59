"""--mp4-audio aac: MP4 files carry AAC made from the stream's Opus (QuickTime, older
Safari and most editors do not open Opus in MP4); the video stays as sent."""

from dataclasses import replace

import av
import pytest

from testkit import bitstream, probe
from testkit.media import make_test_media
from tests.workers.test_recording import SPEC, frames, record


@pytest.mark.parametrize("mp4_audio, codec", [("opus", "opus"), ("aac", "aac")])
def test_mp4_audio_codec_is_the_nodes_choice(uploader, tmp_path, mp4_audio, codec):
    media = make_test_media(3.0)
    _, path, _, _ = record(frames(media), uploader, tmp_path, spec=replace(SPEC, mp4_audio=mp4_audio))
    report = probe.decode_all(path)
    assert report.errors == () and (report.video_codec, report.audio_codec) == ("h264", codec)
    sent = bitstream.h264_slice_nals_from_aus(au.data for au in media.video)
    assert bitstream.h264_slice_nals_from_file(path) == sent
    offsets = probe.av_offsets(path)
    assert len(offsets) == len(media.flash_times) and max(abs(o) for o in offsets) <= 0.020, offsets
    assert abs(report.audio_duration_s - 3.0) <= 0.05
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == codec
