"""Opus facts needed to remux without decoding (RFC 6716, RFC 7845)."""

from __future__ import annotations

import struct

SAMPLE_RATE = 48000
# Frame sizes in samples at 48 kHz by TOC config number (RFC 6716 section 3.1).
_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK NB, MB, WB: 10/20/40/60 ms
    + [480, 960] * 2  # Hybrid SWB, FB: 10/20 ms
    + [120, 240, 480, 960] * 4  # CELT NB, WB, SWB, FB: 2.5/5/10/20 ms
)


def packet_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) that one Opus packet decodes to; 0 for an empty packet."""
    if not packet:
        return 0
    toc = packet[0]
    per_frame = _FRAME_SAMPLES[toc >> 3]
    code = toc & 0x3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = packet[1] & 0x3F if len(packet) > 1 else 0
    return per_frame * frames


def opus_head(channels: int = 2, input_rate: int = SAMPLE_RATE, pre_skip: int = 0) -> bytes:
    """An OpusHead (RFC 7845 5.1), mapping family 0. RTP carries no pre-skip: what
    was sent is what is kept, so it defaults to 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)
