"""AAC facts and the one way audio is turned into AAC-LC.

AAC-LC frames are kept as sent (an RTSP camera's); anything else that must become AAC
goes through `AacEncoding`: decoded, resampled to the encoder's float planes, laid on a
continuous timeline (a hole in the source's timestamps becomes silence, because ADTS has
no timestamps and a gap would shift everything after it), and encoded by FFmpeg's
native encoder in 1024-sample frames. Containers that cannot hold Opus use it on a
stream's Opus (`workers.outputs.transcode`, which also makes MP3 with it: another
encoder, another frame size); the RTSP input on G.711 and on AAC other than LC
(`AudioToAac`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from fractions import Fraction

import av
import numpy as np

FRAME_SAMPLES = 1024
BITRATE = 128_000
OBJECT_TYPE_LC = 2
GAP_TOLERANCE_S = 0.005  # timing jitter below this is absorbed; a larger hole is filled with silence

Encode = Callable[[av.AudioFrame | None], Iterable[av.Packet]]


def is_lc(config: bytes) -> bool:
    """Whether an AudioSpecificConfig (ISO 14496-3 1.6.2.1) describes AAC-LC."""
    return bool(config) and config[0] >> 3 == OBJECT_TYPE_LC


def layout_of(channels: int) -> str:
    return "stereo" if channels == 2 else "mono"


class AacEncoding:
    """Packets of one codec in, AAC packets out (see the module docstring). Timestamps are
    in samples at `rate`, the encoder's rate."""

    def __init__(self, decoder: av.CodecContext, rate: int, layout: str, encode: Encode,
                 frame_samples: int = FRAME_SAMPLES):
        self._decoder = decoder
        self._frame_samples = frame_samples
        self.rate = rate
        self._layout = layout
        self._encode = encode
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._fifo = av.AudioFifo()
        self._tolerance = max(1, round(GAP_TOLERANCE_S * rate))
        self._next_pts: int | None = None  # where the next decoded sample belongs
        self._fifo_start: int | None = None  # pts of the fifo's first sample
        self._first_pts: int | None = None
        self.decode_errors = 0

    def write(self, packet: bytes, pts: int) -> list[av.Packet]:
        """One source packet whose first sample belongs at `pts`; the AAC packets now ready."""
        try:
            decoded = self._decoder.decode(av.Packet(packet))
        except av.FFmpegError:
            self.decode_errors += 1
            return []
        for frame in decoded:
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                self._append(resampled, pts)
                pts += resampled.samples
        return self._encode_ready()

    def _append(self, frame: av.AudioFrame, pts: int) -> None:
        if self._next_pts is None:
            self._next_pts = self._fifo_start = self._first_pts = pts
        gap = pts - self._next_pts
        if gap > self._tolerance:
            self._fifo.write(self._silence(gap))
            self._next_pts += gap
        elif gap < -self._tolerance:
            return  # overlaps what was written: drop rather than go back in time
        frame.pts = None
        self._fifo.write(frame)
        self._next_pts += frame.samples

    def _silence(self, samples: int) -> av.AudioFrame:
        channels = 2 if self._layout == "stereo" else 1
        frame = av.AudioFrame.from_ndarray(np.zeros((channels, samples), np.float32), format="fltp",
                                           layout=self._layout)
        frame.sample_rate = self.rate
        return frame

    def _encode_ready(self, flush: bool = False) -> list[av.Packet]:
        packets: list[av.Packet] = []
        while self._fifo.samples >= self._frame_samples or (flush and self._fifo.samples):
            frame = self._fifo.read(min(self._frame_samples, self._fifo.samples))
            frame.pts = self._fifo_start
            frame.time_base = Fraction(1, self.rate)
            self._fifo_start += frame.samples  # type: ignore[operator]
            packets.extend(self._encode(frame))
        return packets

    def flush(self, min_samples: int = 0) -> list[av.Packet]:
        """What is left, encoded; audio shorter than `min_samples` is made that long with silence."""
        if self._next_pts is not None and self._first_pts is not None:
            short = min_samples - (self._next_pts - self._first_pts)
            if short > 0:
                self._fifo.write(self._silence(short))
        return self._encode_ready(flush=True) + list(self._encode(None))


def decoder_for(codec_name: str, rate: int, channels: int, extradata: bytes = b"") -> av.CodecContext:
    decoder = av.CodecContext.create(codec_name, "r")
    decoder.sample_rate = rate
    decoder.layout = layout_of(channels)
    if extradata:
        decoder.extradata = extradata
    return decoder


def encoder_for(rate: int, channels: int) -> av.CodecContext:
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate = rate
    encoder.layout = layout_of(channels)
    encoder.format = "fltp"
    encoder.bit_rate = BITRATE
    encoder.time_base = Fraction(1, rate)
    encoder.open()
    return encoder


class AudioToAac:
    """A source's audio (G.711, HE-AAC, ...) to AAC-LC frames, on the input side."""

    def __init__(self, codec_name: str, rate: int, channels: int, extradata: bytes = b""):
        self.sample_rate = rate
        self.channels = 2 if channels == 2 else 1
        self._encoder = encoder_for(rate, self.channels)
        self.config = bytes(self._encoder.extradata or b"")
        self._encoding = AacEncoding(decoder_for(codec_name, rate, channels, extradata), rate,
                                     layout_of(self.channels), self._encoder.encode)

    def transcode(self, packet: bytes, pts: int, time_base: Fraction) -> list[tuple[bytes, int]]:
        """One source packet (pts in `time_base`): the AAC frames now ready, with their
        timestamps in samples."""
        start = int(pts * time_base * self.sample_rate)
        return [(bytes(p), int(p.pts)) for p in self._encoding.write(packet, start) if p.pts is not None]


@functools.lru_cache(maxsize=8)
def silent_frame(rate: int, channels: int) -> bytes:
    """One AAC-LC frame (1024 samples) that decodes to silence: what FillBlank writes
    while a stream is away."""
    encoder = encoder_for(rate, channels)
    silence = av.AudioFrame.from_ndarray(np.zeros((channels, FRAME_SAMPLES), np.float32), format="fltp",
                                         layout=layout_of(channels))
    silence.sample_rate = rate
    packets: list[bytes] = []
    for index in range(4):  # past the encoder's priming: a frame of steady silence
        silence.pts = index * FRAME_SAMPLES
        silence.time_base = Fraction(1, rate)
        packets.extend(bytes(p) for p in encoder.encode(silence))
    return packets[-1]
