"""One track's timeline in a file: its RTP timestamps -> the file's pts, and the last
line of defence before the muxer.

A file's tracks are placed by the stream's clock (`workers.clock`) when they start and
then advance by their own RTP timestamps. Whatever that placement or a sender's
timestamps say, the muxer is never handed a pts that goes back (the frame is dropped:
reordering left over) or one that moves the track more than MAX_PLACEMENT_ERROR_S away
from where the frames' arrival times put it (a timestamp jump, a clock gone wrong): the
track then goes on from where arrival puts it. FFmpeg's muxers assert on some absurd
timestamps (the process aborts), and a file hours long for seconds of media is no file.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PLACEMENT_ERROR_S = 5.0  # far beyond jitter (0.25 s) and sender delays, far below a corrupt clock


@dataclass
class Timeline:
    clock_rate: int
    out_rate: int
    first_rtp: int
    first_pts: int
    last_pts: int
    last_duration: int = 0
    last_arrival: float = 0.0
    replaced: int = 0  # how often arrival time overruled the timestamps

    def pts(self, rtp: int) -> int:
        return self.first_pts + (rtp - self.first_rtp) * self.out_rate // self.clock_rate

    @property
    def end(self) -> float:
        return (self.last_pts + self.last_duration) / self.out_rate

    def by_arrival(self, arrival: float) -> int:
        """Where arrival time puts a frame that came at `arrival`: after the last one by as long."""
        return self.last_pts + round((arrival - self.last_arrival) * self.out_rate)

    def place(self, rtp: int, arrival: float) -> int | None:
        """The pts of the next frame (RTP timestamp, arrival), None to drop it."""
        pts = self.pts(rtp)
        expected = self.by_arrival(arrival)
        if abs(pts - expected) > MAX_PLACEMENT_ERROR_S * self.out_rate:
            pts = max(expected, self.last_pts + 1)
            self.first_rtp, self.first_pts = rtp, pts  # the track goes on from here by its timestamps
            self.replaced += 1
            return pts
        return pts if pts > self.last_pts else None


def start_near(first_pts: int, out_rate: int, others: list[Timeline], arrival: float,
               anchor: tuple[float, float]) -> int:
    """A track's first pts as the clock placed it, or where arrival times put it if that is more
    than MAX_PLACEMENT_ERROR_S away: after another track of the file, else after the frame the
    file (or its last rebase) started on (`anchor`: its arrival, its time in the file in seconds)."""
    if others:
        expected = round(others[0].by_arrival(arrival) * out_rate / others[0].out_rate)
    else:
        expected = round((anchor[1] + arrival - anchor[0]) * out_rate)
    return expected if abs(first_pts - expected) > MAX_PLACEMENT_ERROR_S * out_rate else first_pts
