"""One clock for all tracks of a stream.

Each track's RTP timestamps are mapped to a common time either through RTCP
Sender Reports (the sender's NTP wall clock: exact lip sync) or, when a track
has none (e.g. an SFU forwarding without RTCP), through arrival times. A
recording latches one basis when it starts so its timeline never jumps.

A Sender Report is checked against the track's own media before it is believed
(`report_verdict`): NTP 0 (aiortc reports NTP 0 <-> RTP 0 until it has sent media),
an RTP timestamp far from the media's at the report's arrival, or an NTP time whose
transit (arrival - NTP) is far from that of the reports already believed, is
dropped and counted; the mapping believed so far stays. A report that comes before
the track's first frame waits for that frame to be checked.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from contract.codes import MediaKind
from contract.tuning import SR_MAX_SKEW_S

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


def ntp_to_seconds(ntp64: int) -> float:
    return (ntp64 >> 32) - NTP_EPOCH_OFFSET + (ntp64 & 0xFFFFFFFF) / 2**32


class Basis(enum.Enum):
    SENDER = "sender"  # RTCP SR NTP time
    ARRIVAL = "arrival"  # local monotonic arrival time


class Verdict(enum.Enum):
    NTP_ZERO = "ntp_zero"  # the sender has nothing to pair yet (aiortc before its first packet)
    RTP_OFF_MEDIA = "rtp_off_media"  # its RTP timestamp is not near the track's media
    NTP_OFF_TRANSIT = "ntp_off_transit"  # its NTP time disagrees with the reports believed


@dataclass(frozen=True, slots=True)
class _SenderReport:
    ntp_s: float
    rtp: int  # unwrapped
    arrival: float  # local monotonic time it came

    @property
    def transit(self) -> float:
        """Local arrival minus the sender's wall clock: one value for all of a sender's
        tracks, up to network jitter and how late each track's media leaves."""
        return self.arrival - self.ntp_s


def report_verdict(ntp64: int, rtp: int, arrival: float, clock_rate: int, media: tuple[int, float],
                   transit: float | None, max_skew_s: float = SR_MAX_SKEW_S) -> Verdict | None:
    """Whether a Sender Report (its NTP time, its RTP timestamp unwrapped, when it came)
    may be believed (None) or why not. `media`: a frame of the track (RTP timestamp,
    arrival); `transit`: that of the last report believed on the stream, if any."""
    if ntp64 >> 32 == 0:
        return Verdict.NTP_ZERO
    media_rtp, media_arrival = media
    expected = media_rtp + (arrival - media_arrival) * clock_rate  # the media's timestamp when it came
    if abs(rtp - expected) > max_skew_s * clock_rate:
        return Verdict.RTP_OFF_MEDIA
    if transit is not None and abs(arrival - ntp_to_seconds(ntp64) - transit) > max_skew_s:
        return Verdict.NTP_OFF_TRANSIT
    return None


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
        self.last_arrival = 0.0
        self.pending: tuple[int, int, float] | None = None  # a report before any frame: NTP, RTP, arrival

    def on_frame(self, rtp: int, arrival: float) -> None:
        base = arrival - rtp / self.clock_rate
        if self._arrival_base is None or base < self._arrival_base:
            self._arrival_base = base
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.last_rtp = rtp
        self.last_arrival = arrival

    def unwrap_near(self, rtp32: int) -> int:
        """Extend a 32-bit RTP timestamp (from an SR) next to the last unwrapped one."""
        if self.last_rtp is None:
            return rtp32
        candidate = (self.last_rtp & ~0xFFFFFFFF) | rtp32
        for other in (candidate - 2**32, candidate + 2**32):
            if abs(other - self.last_rtp) < abs(candidate - self.last_rtp):
                candidate = other
        return candidate

    def on_sender_report(self, ntp64: int, rtp32: int, arrival: float | None = None) -> None:
        """Believe a report unchecked (`StreamClock.on_sender_report` checks them)."""
        if arrival is None:
            arrival = self.last_arrival
        self.report = _SenderReport(ntp_to_seconds(ntp64), self.unwrap_near(rtp32), arrival)

    def sender_time(self, rtp: int) -> float | None:
        if self.report is None:
            return None
        return self.report.ntp_s + (rtp - self.report.rtp) / self.clock_rate

    def arrival_time(self, rtp: int) -> float | None:
        if self._arrival_base is None:
            return None
        return self._arrival_base + rtp / self.clock_rate


class StreamClock:
    def __init__(self, rates: dict[MediaKind, int], sync_wait_s: float, max_skew_s: float = SR_MAX_SKEW_S,
                 late_wait_s: float = 0.0):
        self.tracks = {kind: TrackClock(rate) for kind, rate in rates.items()}
        self._sync_wait_s = sync_wait_s
        # once a track has reported: how long (from the first frame) the others' reports are awaited
        self._late_wait_s = max(sync_wait_s, late_wait_s)
        self._max_skew_s = max_skew_s
        self._transit: float | None = None  # of the last report believed, on any track
        self.refused: Counter[Verdict] = Counter()

    def on_frame(self, kind: MediaKind, rtp: int, arrival: float) -> Verdict | None:
        """A frame of `kind`; a report that came before the track's first frame is checked
        now. Returns why that report was refused, if it was."""
        track = self.tracks[kind]
        track.on_frame(rtp, arrival)
        if track.pending is None:
            return None
        pending, track.pending = track.pending, None
        return self.on_sender_report(kind, *pending)

    def on_sender_report(self, kind: MediaKind, ntp64: int, rtp32: int, arrival: float) -> Verdict | None:
        """A Sender Report that came at `arrival`: believed, or refused (returned, counted)."""
        track = self.tracks[kind]
        if track.last_rtp is None:
            track.pending = (ntp64, rtp32, arrival)  # the latest; checked on the first frame
            return None
        rtp = track.unwrap_near(rtp32)
        verdict = report_verdict(ntp64, rtp, arrival, track.clock_rate, (track.last_rtp, track.last_arrival),
                                 self._transit, self._max_skew_s)
        if verdict is not None:
            self.refused[verdict] += 1
            return verdict
        track.report = _SenderReport(ntp_to_seconds(ntp64), rtp, arrival)
        self._transit = track.report.transit
        return None

    def _active(self) -> list[TrackClock]:
        return [t for t in self.tracks.values() if t.first_arrival is not None]

    def basis(self) -> Basis:
        active = self._active()
        if active and all(t.report is not None for t in active):
            return Basis.SENDER
        return Basis.ARRIVAL

    def settled(self, now: float) -> bool:
        """True once the mapping will not improve by waiting: every track that sends
        has reported, or the wait for Sender Reports is over (the longer one once a
        track has reported: that publisher speaks RTCP, the others' reports are due)."""
        active = self._active()
        if not active:
            return False
        if len(active) == len(self.tracks) and self.basis() is Basis.SENDER:
            return True
        first = min(t.first_arrival for t in active)  # type: ignore[type-var]
        reported = any(t.report is not None for t in self.tracks.values())
        return now - first >= (self._late_wait_s if reported else self._sync_wait_s)

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
