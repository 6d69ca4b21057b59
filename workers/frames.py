"""The unit that flows through the media plane: one encoded frame, never decoded."""

from __future__ import annotations

from dataclasses import dataclass

from contract.codes import MediaKind


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One access unit as the publisher encoded it.

    `data` is Annex-B (4-byte start codes) for H.264, the VP8 frame (payload
    descriptors removed) for VP8 and the raw packet for Opus.
    `rtp_timestamp` is the publisher's RTP timestamp, already unwrapped to 64 bits,
    in the track's clock rate. `arrival` is the local monotonic time (seconds) at
    which the frame's first packet arrived.
    """

    kind: MediaKind
    data: bytes
    rtp_timestamp: int
    arrival: float
    keyframe: bool = False
