"""RTP jitter buffer for a recorder: reorder packets into whole frames, give up on losses fast.

aiortc's own `JitterBuffer` waits for a missing packet until 512 later packets
have passed, which stalls video for seconds after one unrecovered loss. A recorder
prefers to lose a frame (and ask for a key frame) over stalling, so this buffer
waits for a hole at most `max_wait` seconds and then drops the frame that lost
packets. It never emits a frame it knows to be partial.

Everything here is pure and deterministic: no I/O, no clocks. The caller passes
the local monotonic time `now` (seconds) to `push` and `poll`, and must call
`poll` on a timer (e.g. every 20 ms) so frames held behind a hole are released
even when no packet arrives.

One `JitterBuffer` serves one RTP stream (one SSRC); RTX must already be unwrapped
and RTCP removed by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from aiortc.rtp import RtpPacket

from workers.frames import AssembledFrame
from workers.unwrap import Unwrapper

DEFAULT_MAX_WAIT = 0.25
"""Seconds a hole is waited for, counted from the first packet that arrived after it."""

DEFAULT_MAX_PACKETS = 1024
"""Most packets held at once; this also bounds the size of one frame."""

SEQUENCE_BITS = 16
TIMESTAMP_BITS = 32

HISTORY_SIZE = 2048
"""Released sequence numbers remembered to tell a duplicate from a late packet."""

RESTART_DISTANCE = 3000
"""A packet this far behind the release point cannot be a straggler; two such packets in
a row with consecutive sequence numbers mean the sender restarted its sequence, and the
buffer resynchronises instead of calling every further packet "late" forever. (A
smaller backward jump costs at most this many packets, counted late, until the new
numbers pass the old ones.)"""


@dataclass(slots=True)
class JitterStats:
    """Counters since the buffer was created.

    packets: every packet pushed. duplicates: copies of a packet already held or already
    released. late: packets arriving after their place was released or given up on (a
    late arrival for a sequence number counted lost moves from `lost_packets` to
    `late`). lost_packets: sequence numbers given up on and never received. discarded:
    packets received but not emitted (they belonged to a dropped frame, or carried no
    payload, e.g. padding probes). dropped_frames: frames seen in part and dropped
    (frames lost entirely inside a hole cannot be counted). frames: frames emitted.
    """

    packets: int = 0
    duplicates: int = 0
    late: int = 0
    lost_packets: int = 0
    discarded: int = 0
    dropped_frames: int = 0
    frames: int = 0


class _Entry(NamedTuple):
    packet: RtpPacket
    seq: int
    timestamp: int
    arrival: float


class _Prev(NamedTuple):
    """The packet just before the release point, when it was received."""

    timestamp: int
    marker: bool


class JitterBuffer:
    """Turns RTP packets arriving in any order into whole frames, in sequence order.

    Video (`frame_per_packet=False`): consecutive packets with one RTP timestamp form a
    frame, ended by the marker bit or by the next packet's different timestamp.
    Audio (`frame_per_packet=True`): every packet is a frame.

    A hole (missing sequence number) is waited for at most `max_wait` seconds from the
    arrival of the first packet after it; then it is given up: the sequence numbers
    count as lost, a frame that had packets on both sides of the hole (or before it,
    unterminated) is dropped whole, and release goes on. More than `max_packets` held
    gives up the oldest hole at once (or drops the unterminated frame that fills the
    buffer). A frame whose first packet directly follows a given-up hole has
    `clean_start=False`: its own first packets may have been in the hole. If `starts_frame` is given (a codec's
    "does this payload begin a frame?", e.g. `workers.codecs.h264.payload_starts_frame`),
    every frame whose start is not known from sequence numbers (including the first
    frame of the stream) is checked with it and dropped when it fails; without it such
    frames are emitted and the consumer must check.

    Packets with an empty payload (padding probes) take up a sequence number but belong
    to no frame.
    """

    def __init__(
        self,
        *,
        frame_per_packet: bool,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_packets: int = DEFAULT_MAX_PACKETS,
        starts_frame: Callable[[bytes], bool] | None = None,
    ) -> None:
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        if max_packets < 1:
            raise ValueError("max_packets must be at least 1")
        self._frame_per_packet = frame_per_packet
        self._max_wait = max_wait
        self._max_packets = max_packets
        self._starts_frame = starts_frame
        self.stats = JitterStats()

        self._seq = Unwrapper(SEQUENCE_BITS)
        self._ts = Unwrapper(TIMESTAMP_BITS)
        # Held packets by extended sequence number; dict order is arrival order.
        self._buffer: dict[int, _Entry] = {}
        # Extended sequence number of the next packet to release; None before any packet.
        self._cursor: int | None = None
        # Whether anything has been released, dropped or given up at the cursor.
        self._started = False
        self._prev: _Prev | None = None
        # Timestamp of a dropped frame whose remaining packets must be thrown away.
        self._discard_ts: int | None = None
        # Something was lost since the last emitted frame.
        self._loss = False
        # What happened to the HISTORY_SIZE sequence numbers behind the cursor: all were
        # received except those in `_lost` (given up on). Kept as a window rather than one
        # entry per released packet: the release path then does nothing per packet for it.
        self._history_start: int | None = None  # the first sequence number remembered
        self._lost: set[int] = set()
        self._restart_candidate: _Entry | None = None
        # (cursor, seq): cursor..seq-1 are held, share the cursor's timestamp, no marker.
        self._frame_scan: tuple[int, int] | None = None
        # (cursor, seq): cursor..seq-1 are all held.
        self._run_scan: tuple[int, int] | None = None
        # Highest sequence number ever held (a bound: packets only leave at the cursor).
        self._highest = -(1 << 62)

    # -- public API ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Packets currently held."""
        return len(self._buffer)

    def push(self, packet: RtpPacket, now: float) -> list[AssembledFrame]:
        """Add one packet; return the frames that became releasable (also by timeout)."""
        out = self.insert(packet, now)
        out.extend(self._release(now))
        return out

    def insert(self, packet: RtpPacket, now: float) -> list[AssembledFrame]:
        """Add one packet that arrived at `now` without releasing anything, so that a
        caller with a batch of packets (one tick's worth) inserts them all and then
        releases once with `poll`: each frame is then assembled once instead of being
        looked for after every packet. Frames already complete when `poll` runs come out
        as `push` would have released them; a hole's wait is judged at `poll` time, so a
        straggler in the same batch fills it instead of arriving late. Returns the frames
        a sequence-number restart flushed (nearly always none)."""
        self.stats.packets += 1
        entry = _Entry(
            packet,
            self._seq.unwrap(packet.sequence_number),
            self._ts.unwrap(packet.timestamp),
            now,
        )
        if self._is_far_behind(entry.seq):
            return self._handle_far_behind(entry, now)
        self._insert(entry)
        return []

    def poll(self, now: float) -> list[AssembledFrame]:
        """Release frames held behind holes whose wait ran out by `now`."""
        return self._release(now)

    def flush(self) -> list[AssembledFrame]:
        """Give up on every hole now (end of stream): emit what is complete, drop the rest."""
        return self._release(now=0.0, force=True)

    def next_deadline(self) -> float | None:
        """When `poll` will next give up a hole, or None if nothing waits on a hole."""
        hole = self._find_hole()
        return None if hole is None else hole[1] + self._max_wait

    # -- insertion ----------------------------------------------------------------

    def _is_far_behind(self, seq: int) -> bool:
        return (
            self._started
            and self._cursor is not None
            and self._cursor - seq > RESTART_DISTANCE
        )

    def _insert(self, entry: _Entry) -> None:
        seq = entry.seq
        if self._cursor is None:
            self._cursor = seq
        elif seq < self._cursor:
            if not self._started and self._cursor - seq <= self._max_packets:
                # Nothing released yet: an earlier packet simply moves the start back.
                self._cursor = seq
            else:
                self._reject_old(seq)
                return
        if seq in self._buffer:
            self.stats.duplicates += 1
            return
        self._buffer[seq] = entry
        self._highest = max(self._highest, seq)

    def _reject_old(self, seq: int) -> None:
        start = self._history_start
        remembered = start is not None and max(start, self._cursor - HISTORY_SIZE) <= seq  # type: ignore[operator]
        if remembered and seq not in self._lost:
            self.stats.duplicates += 1
            return
        self.stats.late += 1
        if remembered:
            self.stats.lost_packets -= 1
            self._lost.discard(seq)

    def _handle_far_behind(self, entry: _Entry, now: float) -> list[AssembledFrame]:
        candidate = self._restart_candidate
        consecutive = candidate is not None and (
            entry.packet.sequence_number - candidate.packet.sequence_number
        ) % (1 << SEQUENCE_BITS) == 1
        if not consecutive:
            self._restart_candidate = entry
            self._reject_old(entry.seq)
            return []
        assert candidate is not None
        # The sender restarted its sequence numbers: give up everything held and
        # start over from the candidate (which had been counted late).
        self.stats.late -= 1
        out = self._release(now, force=True)
        self._seq = Unwrapper(SEQUENCE_BITS)
        self._buffer.clear()
        self._history_start = None
        self._lost.clear()
        self._cursor = None
        self._prev = None
        self._discard_ts = None
        self._loss = True
        self._restart_candidate = None
        self._frame_scan = None
        self._run_scan = None
        self._highest = -(1 << 62)
        for old in (candidate, entry):
            self._insert(old._replace(seq=self._seq.unwrap(old.packet.sequence_number)))
        return out

    # -- release ------------------------------------------------------------------

    def _release(self, now: float, force: bool = False) -> list[AssembledFrame]:
        out: list[AssembledFrame] = []
        while self._buffer:
            if self._step(out):
                continue
            overflow = len(self._buffer) > self._max_packets
            hole = self._find_hole()
            if hole is None:
                if not (force or overflow):
                    break
                self._drop_open_frame()
            elif force or overflow or now >= hole[1] + self._max_wait:
                self._give_up(hole[0])
            else:
                break
        return out

    def _advance(self, entry: _Entry) -> None:
        """Move the cursor past a received packet that was held at the cursor."""
        del self._buffer[entry.seq]
        if self._history_start is None:
            self._history_start = entry.seq
        self._cursor = entry.seq + 1
        if entry.packet.payload:
            self._prev = _Prev(entry.timestamp, bool(entry.packet.marker))

    def _discard(self, entry: _Entry) -> None:
        self.stats.discarded += 1
        self._advance(entry)

    def _step(self, out: list[AssembledFrame]) -> bool:
        """Make progress at the cursor if possible (emit, discard); False when blocked."""
        cursor = self._cursor
        assert cursor is not None
        entry = self._buffer.get(cursor)
        if entry is None:
            return False
        if not entry.packet.payload:
            self._discard(entry)
            return True
        if self._discard_ts is not None:
            if entry.timestamp == self._discard_ts:
                self._discard(entry)
                if entry.packet.marker or self._frame_per_packet:
                    self._discard_ts = None
                return True
            self._discard_ts = None

        # A frame starts at the cursor.
        prev = self._prev
        if not self._started:
            clean = True
        else:
            clean = prev is not None and (
                self._frame_per_packet or prev.marker or prev.timestamp != entry.timestamp
            )
        already_checked = self._frame_scan is not None and self._frame_scan[0] == cursor
        if (
            self._starts_frame is not None
            and not already_checked
            and (not clean or not self._started)
            and not self._starts_frame(entry.packet.payload)
        ):
            # Its beginning is missing (or we joined mid-frame): drop it whole.
            self._started = True
            self._drop_frame(entry.timestamp)
            return True

        end = self._find_frame_end(entry)
        if end is None:
            return False
        self._emit(out, cursor, end, entry.timestamp, clean)
        return True

    def _find_frame_end(self, first: _Entry) -> int | None:
        """Sequence number of the frame's last packet (padding after it may be included)."""
        cursor = first.seq
        if self._frame_per_packet:
            return cursor
        seq = cursor
        if self._frame_scan is not None and self._frame_scan[0] == cursor:
            seq = self._frame_scan[1]
        while True:
            entry = self._buffer.get(seq)
            if entry is None:
                self._frame_scan = (cursor, seq)
                return None
            if entry.packet.payload:
                if entry.timestamp != first.timestamp:
                    return seq - 1
                if entry.packet.marker:
                    return seq
            seq += 1

    def _emit(
        self, out: list[AssembledFrame], start: int, end: int, timestamp: int, clean: bool
    ) -> None:
        entries = [self._buffer[seq] for seq in range(start, end + 1)]
        packets: list[RtpPacket] = []
        for entry in entries:
            if entry.packet.payload:
                packets.append(entry.packet)
            else:
                self.stats.discarded += 1
            self._advance(entry)
        out.append(
            AssembledFrame(
                timestamp=timestamp,
                packets=tuple(packets),
                arrival=min(entry.arrival for entry in entries),
                clean_start=clean,
                after_loss=self._loss,
            )
        )
        self.stats.frames += 1
        self._loss = False
        self._started = True

    def _drop_frame(self, timestamp: int) -> None:
        """Drop the frame starting at the cursor; its packets are discarded as they come."""
        self.stats.dropped_frames += 1
        self._loss = True
        self._discard_ts = timestamp

    def _drop_open_frame(self) -> None:
        """Drop the unterminated frame at the cursor (overflow or flush)."""
        assert self._cursor is not None
        self._started = True
        self._drop_frame(self._buffer[self._cursor].timestamp)

    def _find_hole(self) -> tuple[int, float] | None:
        """First missing sequence number at or after the cursor that has packets after it,
        with the arrival time of the first packet to arrive after it."""
        if not self._buffer or self._cursor is None:
            return None
        cursor = self._cursor
        seq = cursor
        if self._run_scan is not None and self._run_scan[0] == cursor:
            seq = self._run_scan[1]
        while seq in self._buffer:
            seq += 1
        self._run_scan = (cursor, seq)
        if seq > self._highest:
            return None  # nothing beyond: waiting for the future, not for a hole
        for entry in self._buffer.values():  # arrival order
            if entry.seq > seq:
                return seq, entry.arrival
        return None

    def _give_up(self, hole: int) -> None:
        """Stop waiting for the hole at `hole`; drop the frame it broke; skip past it."""
        assert self._cursor is not None
        self._started = True
        if self._cursor < hole:
            # The open frame at the cursor lost packets: drop it, now and its tail later.
            self._drop_frame(self._buffer[self._cursor].timestamp)
            while self._cursor < hole:
                self._discard(self._buffer[self._cursor])
        resume = min(self._buffer)
        self.stats.lost_packets += resume - hole
        if self._history_start is None:
            self._history_start = hole
        lost = self._lost
        lost.update(range(max(hole, resume - HISTORY_SIZE), resume))
        if len(lost) > HISTORY_SIZE:  # forget what left the window
            self._lost = {seq for seq in lost if seq >= resume - HISTORY_SIZE}
        self._cursor = resume
        self._prev = None
        self._loss = True
