"""From assembled RTP frames to EncodedFrames, per codec.

Video: depayload to Annex-B, keep parameter sets (from the SDP and the stream)
so every key frame carries SPS/PPS, and after any loss drop frames until a key
frame that starts cleanly, asking the publisher for one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workers.codecs import h264
from workers.config import TrackSpec
from workers.frames import EncodedFrame, MediaKind
from workers.jitter import AssembledFrame


@dataclass
class GateStats:
    frames: int = 0
    dropped_waiting_keyframe: int = 0
    keyframe_requests: int = 0


class VideoTrack:
    def __init__(self, spec: TrackSpec, request_keyframe: Callable[[], None]):
        self.spec = spec
        sprop = spec.fmtp_value("sprop-parameter-sets")
        self.parameter_sets = h264.ParameterSets(h264.parse_sprop_parameter_sets(sprop) if sprop else ())
        self._request_keyframe = request_keyframe
        self._waiting_keyframe = False
        self.stats = GateStats()

    def accept(self, frame: AssembledFrame) -> EncodedFrame | None:
        data = h264.depayload_frame(p.payload for p in frame.packets)
        return self.accept_annexb(data, frame.timestamp, frame.arrival, frame.clean_start and not frame.after_loss)

    def accept_annexb(self, data: bytes, timestamp: int, arrival: float, intact: bool) -> EncodedFrame | None:
        if not data:
            return None
        self.parameter_sets.observe(data)
        keyframe = h264.is_keyframe(data)
        if not intact and not self._waiting_keyframe:
            self._waiting_keyframe = True
            self.request_keyframe()
        if self._waiting_keyframe:
            if not (keyframe and intact):
                self.stats.dropped_waiting_keyframe += 1
                return None
            self._waiting_keyframe = False
        if keyframe:
            data = self.parameter_sets.ensure_on_keyframe(data)
        self.stats.frames += 1
        return EncodedFrame(MediaKind.VIDEO, data, timestamp, arrival, keyframe)

    def request_keyframe(self) -> None:
        self.stats.keyframe_requests += 1
        self._request_keyframe()


class AudioTrack:
    def __init__(self, spec: TrackSpec):
        self.spec = spec
        self.stats = GateStats()

    def accept(self, frame: AssembledFrame) -> EncodedFrame | None:
        payload = b"".join(p.payload for p in frame.packets)
        if not payload:
            return None
        self.stats.frames += 1
        return EncodedFrame(MediaKind.AUDIO, payload, frame.timestamp, frame.arrival, False)
