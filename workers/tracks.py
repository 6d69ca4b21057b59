"""From assembled RTP frames to EncodedFrames, per media kind.

Video: the track's codec (`workers.codecs.video_codec`, from `spec.codec`) depayloads
each frame and prepares key frames (H.264: SPS/PPS in front); after any loss, or a
frame too malformed to depayload, frames are dropped until a key frame that starts
cleanly, and the publisher is asked for one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from contract.codes import MediaKind
from contract.worker import TrackSpec
from workers.codecs import video_codec
from workers.frames import AssembledFrame, EncodedFrame


@dataclass
class GateStats:
    frames: int = 0
    dropped_waiting_keyframe: int = 0
    dropped_malformed: int = 0
    keyframe_requests: int = 0


class VideoTrack:
    def __init__(self, spec: TrackSpec, request_keyframe: Callable[[], None]):
        self.spec = spec
        self.codec = video_codec(spec.codec)(spec)
        self._request_keyframe = request_keyframe
        self._waiting_keyframe = False
        self.stats = GateStats()

    def accept(self, frame: AssembledFrame) -> EncodedFrame | None:
        try:
            data, keyframe = self.codec.depayload_frame([p.payload for p in frame.packets])
        except ValueError:
            self.stats.dropped_malformed += 1
            self.reference_lost()
            return None
        if not data:
            return None
        intact = frame.clean_start and not frame.after_loss
        if not intact:
            self.reference_lost()
        if self._waiting_keyframe:
            if not (keyframe and intact):
                self.stats.dropped_waiting_keyframe += 1
                return None
            self._waiting_keyframe = False
        if keyframe:
            data = self.codec.prepare_keyframe(data)
        self.stats.frames += 1
        return EncodedFrame(MediaKind.VIDEO, data, frame.timestamp, frame.arrival, keyframe)

    def reference_lost(self) -> None:
        """Frames from here on may refer to what is missing (a loss, another sender): wait
        for a key frame, asking once."""
        if not self._waiting_keyframe:
            self._waiting_keyframe = True
            self.request_keyframe()

    def request_keyframe(self) -> None:
        self.stats.keyframe_requests += 1
        self._request_keyframe()


class AudioTrack:
    def __init__(self, spec: TrackSpec):
        self.spec = spec
        self.stats = GateStats()

    def accept(self, frame: AssembledFrame) -> EncodedFrame | None:
        packets = frame.packets
        payload = packets[0].payload if len(packets) == 1 else b"".join([p.payload for p in packets])
        if not payload:
            return None
        self.stats.frames += 1
        return EncodedFrame(MediaKind.AUDIO, payload, frame.timestamp, frame.arrival, False)
