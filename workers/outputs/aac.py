"""Opus -> AAC, only for containers that cannot hold Opus (FLV, ADTS, MPEG-TS).

The AAC encoder belongs to the container's own stream (AAC muxed without its
encoder context gives broken files). The decoding, the continuous timeline and the
encoding are `workers.codecs.aac.AacEncoding`'s.
"""

from __future__ import annotations

import av

from workers.codecs import aac, opus
from workers.outputs.params import AUDIO_TIME_BASE, AudioParams


class AacTranscoder:
    def __init__(self, container: av.container.OutputContainer, source: AudioParams):
        if source.codec != "opus":
            raise ValueError(f"cannot transcode {source.codec} to AAC")
        layout = aac.layout_of(source.channels)
        self.stream = container.add_stream("aac", rate=opus.SAMPLE_RATE)
        self.stream.codec_context.layout = layout
        self.stream.codec_context.bit_rate = aac.BITRATE
        self.stream.time_base = AUDIO_TIME_BASE
        decoder = av.CodecContext.create("opus", "r")
        decoder.extradata = source.extradata
        self._encoding = aac.AacEncoding(decoder, opus.SAMPLE_RATE, layout, self.stream.encode)
        self._container = container

    @property
    def decode_errors(self) -> int:
        return self._encoding.decode_errors

    def write(self, packet: bytes, pts: int) -> None:
        self._mux(self._encoding.write(packet, pts))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self) -> None:
        self._mux(self._encoding.flush())
