"""One clock for all tracks of a stream.

Each track's RTP timestamps are mapped to a common time either through RTCP
Sender Reports (the sender's NTP wall clock: exact lip sync) or, when a track
has none (e.g. an SFU forwarding without RTCP), through arrival times. A
recording latches one basis when it starts so its timeline never jumps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from contract.codes import MediaKind

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


def ntp_to_seconds(ntp64: int) -> float:
    return (ntp64 >> 32) - NTP_EPOCH_OFFSET + (ntp64 & 0xFFFFFFFF) / 2**32


class Basis(enum.Enum):
    SENDER = "sender"  # RTCP SR NTP time
    ARRIVAL = "arrival"  # local monotonic arrival time


@dataclass
class _SenderReport:
    ntp_s: float
    rtp: int  # unwrapped


class TrackClock:
    def __init__(self, clock_rate: int):
        if clock_rate <= 0:  # the engine refuses such offers; never divide by it per frame
            raise ValueError(f"an RTP clock rate must be positive, not {clock_rate}")
        self.clock_rate = clock_rate
        self.report: _SenderReport | None = None
        # min over frames of (arrival - rtp/rate): the least-delayed frame anchors arrival time
        self._arrival_base: float | None = None
        self.first_arrival: float | None = None
        self.last_rtp: int | None = None

    def on_frame(self, rtp: int, arrival: float) -> None:
        base = arrival - rtp / self.clock_rate
        if self._arrival_base is None or base < self._arrival_base:
            self._arrival_base = base
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.last_rtp = rtp

    def unwrap_near(self, rtp32: int) -> int:
        """Extend a 32-bit RTP timestamp (from an SR) next to the last unwrapped one."""
        if self.last_rtp is None:
            return rtp32
        candidate = (self.last_rtp & ~0xFFFFFFFF) | rtp32
        for other in (candidate - 2**32, candidate + 2**32):
            if abs(other - self.last_rtp) < abs(candidate - self.last_rtp):
                candidate = other
        return candidate

    def on_sender_report(self, ntp64: int, rtp32: int) -> None:
        self.report = _SenderReport(ntp_to_seconds(ntp64), self.unwrap_near(rtp32))

    def sender_time(self, rtp: int) -> float | None:
        if self.report is None:
            return None
        return self.report.ntp_s + (rtp - self.report.rtp) / self.clock_rate

    def arrival_time(self, rtp: int) -> float | None:
        if self._arrival_base is None:
            return None
        return self._arrival_base + rtp / self.clock_rate


class StreamClock:
    def __init__(self, rates: dict[MediaKind, int], sync_wait_s: float):
        self.tracks = {kind: TrackClock(rate) for kind, rate in rates.items()}
        self._sync_wait_s = sync_wait_s

    def _active(self) -> list[TrackClock]:
        return [t for t in self.tracks.values() if t.first_arrival is not None]

    def basis(self) -> Basis:
        active = self._active()
        if active and all(t.report is not None for t in active):
            return Basis.SENDER
        return Basis.ARRIVAL

    def settled(self, now: float) -> bool:
        """True once the mapping will not improve by waiting: every track that sends
        has reported, or the wait for Sender Reports is over."""
        active = self._active()
        if not active:
            return False
        if len(active) == len(self.tracks) and self.basis() is Basis.SENDER:
            return True
        first = min(t.first_arrival for t in active)  # type: ignore[type-var]
        return now - first >= self._sync_wait_s

    def media_time(self, kind: MediaKind, rtp: int, basis: Basis) -> float:
        track = self.tracks[kind]
        if basis is Basis.SENDER:
            sender = track.sender_time(rtp)
            if sender is not None:
                return sender
            # This track has no report (yet): carry its arrival time onto the
            # sender clock through the transit delay of a track that has one.
            for other in self.tracks.values():
                if other.report is not None and other.last_rtp is not None:
                    transit = other.arrival_time(other.last_rtp) - other.sender_time(other.last_rtp)  # type: ignore[operator]
                    return track.arrival_time(rtp) - transit  # type: ignore[operator]
        arrival = track.arrival_time(rtp)
        if arrival is None:
            raise ValueError(f"no frame seen yet on the {kind} track")
        return arrival
