"""What a recorder needs of a video codec to remux it without decoding."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from contract.worker import TrackSpec


class VideoCodec(abc.ABC):
    """RTP payloads of one frame in, the frame as muxers take it out; never decoded.

    One instance per track: a codec may carry state from frame to frame (H.264 keeps
    the stream's parameter sets).
    """

    name: ClassVar[str]  # as in the SDP rtpmap and TrackSpec.codec: "H264", "VP8"
    container_codec: ClassVar[str]  # FFmpeg's name, for VideoParams.codec: "h264", "vp8"

    def __init__(self, spec: TrackSpec) -> None:
        self.spec = spec

    @staticmethod
    @abc.abstractmethod
    def payload_starts_frame(payload: bytes) -> bool:
        """Whether an RTP payload begins a frame (the jitter buffer's `starts_frame`)."""

    @abc.abstractmethod
    def depayload(self, payloads: Iterable[bytes]) -> bytes:
        """The frame carried by one frame's RTP payloads, in order; b"" when they carry
        nothing. ValueError when they are malformed: the frame is then treated as lost."""

    def depayload_frame(self, payloads: Iterable[bytes]) -> tuple[bytes, bool]:
        """`depayload`, and whether the frame is a key frame: one pass over the frame for
        codecs that can tell while depayloading (H.264 overrides this)."""
        frame = self.depayload(payloads)
        return frame, bool(frame) and self.is_keyframe(frame)

    @staticmethod
    @abc.abstractmethod
    def is_keyframe(frame: bytes) -> bool:
        """Whether decoding can start at this frame."""

    @staticmethod
    @abc.abstractmethod
    def keyframe_size(frame: bytes) -> tuple[int, int]:
        """(width, height) of the picture a key frame starts; ValueError when it does not tell."""

    def prepare_keyframe(self, frame: bytes) -> bytes:
        """The key frame as a file may start with it (H.264: with SPS and PPS in front)."""
        return frame
