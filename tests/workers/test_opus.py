import fractions

import av
import numpy as np
import pytest

from workers.codecs import opus


def encode(frame_ms: float, seconds: float = 0.2) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "stereo"
    enc.format = "s16"
    enc.time_base = fractions.Fraction(1, 48000)
    enc.options = {"frame_duration": str(frame_ms)}
    n = int(48000 * frame_ms / 1000)
    packets = []
    for i in range(int(seconds * 1000 / frame_ms)):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, n * 2), np.int16), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i * n
        packets += [bytes(p) for p in enc.encode(frame)]
    return packets


@pytest.mark.parametrize("frame_ms", [2.5, 5, 10, 20, 40, 60])
def test_samples_match_the_encoder(frame_ms):
    expected = int(48000 * frame_ms / 1000)
    packets = encode(frame_ms)
    assert packets
    assert {opus.packet_samples(p) for p in packets} == {expected}


def test_code3_packet_counts_frames():
    # config 31 (CELT FB 20 ms), code 3, 3 frames
    assert opus.packet_samples(bytes([31 << 3 | 3, 3]) + b"\0" * 10) == 3 * 960
    assert opus.packet_samples(b"") == 0


def test_opus_head_layout():
    head = opus.opus_head(2)
    assert head[:8] == b"OpusHead" and len(head) == 19 and head[9] == 2
