"""One small base class for every container writer.

A writer receives already-encoded frames with output timestamps (video in
1/90000, audio in 1/48000) and writes them to a file object. It never decodes
video; audio is transcoded only by writers whose container needs another codec.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_TIME_BASE = Fraction(1, 48000)


@dataclass(frozen=True)
class VideoParams:
    codec: str  # "h264"
    width: int
    height: int


@dataclass(frozen=True)
class AudioParams:
    codec: str  # "opus"
    sample_rate: int
    channels: int
    extradata: bytes  # OpusHead for Opus


class ContainerWriter(abc.ABC):
    extension: str
    output_format: str

    def __init__(self, out: BinaryIO, video: VideoParams | None, audio: AudioParams | None):
        self.out = out
        self.video = video
        self.audio = audio

    @abc.abstractmethod
    def write_video(self, data: bytes, pts: int, keyframe: bool) -> None:
        """One H.264 access unit (Annex-B), pts in VIDEO_TIME_BASE."""

    @abc.abstractmethod
    def write_audio(self, data: bytes, pts: int, duration: int) -> None:
        """One encoded audio packet, pts and duration in AUDIO_TIME_BASE."""

    @abc.abstractmethod
    def close(self) -> None:
        """Write the trailer. The file object is not closed."""
