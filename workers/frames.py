"""The unit that flows through the media plane: one encoded frame, never decoded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from contract.codes import MediaKind

if TYPE_CHECKING:
    from aiortc.rtp import RtpPacket


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


@dataclass(frozen=True, slots=True)
class AssembledFrame:
    """One complete frame as its RTP packets, ready to depayload.

    `timestamp` is the unwrapped RTP timestamp. `arrival` is the local time at which the
    first of its packets to arrive did so (with reordering that need not be the first
    packet in sequence order); it is the best local estimate of when the frame was sent.

    `clean_start` says the frame is known to begin right after the previous frame's
    last packet: the packet with the sequence number just before the frame's first one
    was received and ended a frame (marker bit, or the next packet has another
    timestamp). Without that knowledge the frame's first packets might be lost, so the
    codec layer must check the payload (see the `starts_frame` argument of
    `JitterBuffer`). The very first frame of the stream counts as clean by convention:
    there is nothing before it to be missing from the stream we were given.

    `after_loss` says something between the previous emitted frame and this one was
    lost: sequence numbers given up on, or frames dropped. A decoder's reference chain
    is broken there; a video consumer should request a key frame. Both flags are
    independent: a frame right after a dropped frame can be clean (its start is known)
    and still come after a loss.
    """

    timestamp: int
    packets: tuple[RtpPacket, ...]
    arrival: float
    clean_start: bool
    after_loss: bool

    @property
    def payloads(self) -> tuple[bytes, ...]:
        return tuple(packet.payload for packet in self.packets)
