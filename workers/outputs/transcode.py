"""Opus -> AAC or MP3, AAC -> MP3: only where the container cannot hold the audio as
it comes (Opus in FLV, ADTS, MPEG-TS; anything in MP3) or the node is told not to
keep Opus (MP4 with --mp4-audio aac).

The encoder belongs to the container's own stream (AAC muxed without its encoder
context gives broken files). The decoding, the continuous timeline and the encoding
in whole frames are `workers.codecs.aac.AacEncoding`'s, with the encoder's frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import av

from workers.codecs import aac
from workers.outputs.params import AudioParams


@dataclass(frozen=True)
class AudioEncoder:
    name: str  # FFmpeg's encoder
    codec: str  # what it makes, as AudioParams.codec says: audio already in it is kept
    frame_samples: int  # what one encoded frame holds
    bit_rate: int


AAC = AudioEncoder("aac", "aac", aac.FRAME_SAMPLES, aac.BITRATE)
MP3 = AudioEncoder("libmp3lame", "mp3", 1152, 128_000)  # constant bit rate; at 48 kHz, MPEG-1 Layer III


class Transcoder:
    def __init__(self, container: av.container.OutputContainer, source: AudioParams, encoder: AudioEncoder = AAC):
        if source.codec not in ("opus", "aac") or source.codec == encoder.codec:
            raise ValueError(f"cannot transcode {source.codec} to {encoder.codec}")
        layout = aac.layout_of(source.channels)
        self.stream = container.add_stream(encoder.name, rate=source.sample_rate)
        self.stream.codec_context.layout = layout
        self.stream.codec_context.bit_rate = encoder.bit_rate
        self.stream.time_base = source.time_base
        decoder = aac.decoder_for(source.codec, source.sample_rate, source.channels, source.extradata)
        self._encoding = aac.AacEncoding(decoder, source.sample_rate, layout, self.stream.encode,
                                         frame_samples=encoder.frame_samples)
        self._container = container

    @property
    def decode_errors(self) -> int:
        return self._encoding.decode_errors

    def write(self, packet: bytes, pts: int) -> None:
        self._mux(self._encoding.write(packet, pts))

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._container.mux(packet)

    def close(self, min_samples: int = 0) -> None:
        """Encode what is left; audio shorter than `min_samples` is made that long with silence."""
        self._mux(self._encoding.flush(min_samples))
