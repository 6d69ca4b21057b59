"""Opus -> AAC, only for containers that cannot hold Opus (FLV, ADTS, MPEG-TS).

The AAC encoder belongs to the container's own stream (AAC muxed without its
encoder context gives broken files). Decoded audio is kept continuous: a gap in
the Opus timeline (loss, a pause in sending) is filled with silence, because
ADTS has no timestamps and a gap would shift everything after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import numpy as np

from workers.codecs import opus
from workers.outputs.params import AUDIO_TIME_BASE, AudioParams

AAC_FRAME_SAMPLES = 1024
AAC_BITRATE = 128_000
# Timing jitter below this is absorbed; a larger hole is filled with silence.
GAP_TOLERANCE_SAMPLES = 240


class AacTranscoder:
    def __init__(self, container: av.container.OutputContainer, source: AudioParams):
        if source.codec != "opus":
            raise ValueError(f"cannot transcode {source.codec} to AAC")
        self._layout = "stereo" if source.channels == 2 else "mono"
        self._decoder = av.CodecContext.create("opus", "r")
        self._decoder.extradata = source.extradata
        self.stream = container.add_stream("aac", rate=opus.SAMPLE_RATE)
        self.stream.codec_context.layout = self._layout
        self.stream.codec_context.bit_rate = AAC_BITRATE
        self.stream.time_base = AUDIO_TIME_BASE
        self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=opus.SAMPLE_RATE)
        self._fifo = av.AudioFifo()
        self._container = container
        self._next_pts: int | None = None  # where the next decoded sample belongs
        self._fifo_start: int | None = None  # pts of the fifo's first sample
        self.decode_errors = 0

    def write(self, packet: bytes, pts: int) -> None:
        frames = self._decode(packet)
        if frames is None:
            return
        for frame in frames:
            self._append(frame, pts)
            pts += frame.samples
        self._encode_ready()

    def _decode(self, packet: bytes) -> list[av.AudioFrame] | None:
        try:
            decoded = self._decoder.decode(av.Packet(packet))
        except av.FFmpegError:
            self.decode_errors += 1
            return None
        out: list[av.AudioFrame] = []
        for frame in decoded:
            frame.pts = None
            out.extend(self._resampler.resample(frame))
        return out

    def _append(self, frame: av.AudioFrame, pts: int) -> None:
        if self._next_pts is None:
            self._next_pts = self._fifo_start = pts
        gap = pts - self._next_pts
        if gap > GAP_TOLERANCE_SAMPLES:
            self._fifo.write(self._silence(gap))
            self._next_pts += gap
        elif gap < -GAP_TOLERANCE_SAMPLES:
            return  # overlaps what was written: drop rather than go back in time
        frame.pts = None
        self._fifo.write(frame)
        self._next_pts += frame.samples

    def _silence(self, samples: int) -> av.AudioFrame:
        channels = 2 if self._layout == "stereo" else 1
        frame = av.AudioFrame.from_ndarray(np.zeros((channels, samples), np.float32), format="fltp",
                                           layout=self._layout)
        frame.sample_rate = opus.SAMPLE_RATE
        return frame

    def _encode_ready(self, flush: bool = False) -> None:
        while self._fifo.samples >= AAC_FRAME_SAMPLES or (flush and self._fifo.samples):
            frame = self._fifo.read(min(AAC_FRAME_SAMPLES, self._fifo.samples))
            frame.pts = self._fifo_start
            frame.time_base = AUDIO_TIME_BASE
            self._fifo_start += frame.samples  # type: ignore[operator]
            self._mux(self.stream.encode(frame))

    def _mux(self, packets: Iterator[av.Packet] | list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        self._encode_ready(flush=True)
        self._mux(self.stream.encode(None))
