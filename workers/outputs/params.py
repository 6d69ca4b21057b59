"""What a container writer is told about the media and the file it writes."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from contract.tuning import FRAGMENT_DURATION_US

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_TIME_BASE = Fraction(1, 48000)


@dataclass(frozen=True)
class VideoParams:
    codec: str  # FFmpeg's name: "h264", "vp8"
    width: int
    height: int


@dataclass(frozen=True)
class AudioParams:
    codec: str  # "opus" or "aac" (AAC-LC)
    sample_rate: int
    channels: int
    extradata: bytes  # OpusHead for Opus, AudioSpecificConfig for AAC

    @property
    def time_base(self) -> Fraction:
        """Audio timestamps count samples: AUDIO_TIME_BASE for Opus."""
        return Fraction(1, self.sample_rate)


@dataclass(frozen=True)
class WriterOptions:
    fragment_seconds: int = 15  # HLS segment target
    realtime_playlist: bool = False  # HLS: upload the playlist after every segment too
    short_segment_paths: bool = True  # HLS: bare segment names in the playlist
    fragment_duration_us: int = FRAGMENT_DURATION_US  # fMP4 fragments, WebM clusters: at most this long
    mp4_audio: str = "opus"  # MP4: Opus as sent, or "aac" (the node's --mp4-audio)
