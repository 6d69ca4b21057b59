"""Tests for workers.jitter: hand-built RTP packets and a fake clock (plain floats)."""

from __future__ import annotations

import random
from pathlib import Path
from dataclasses import dataclass

import pytest
from aiortc.rtp import RtpPacket

from contract import tuning
from engine.config import NodeConfig

from workers.frames import AssembledFrame
from workers.jitter import DEFAULT_MAX_WAIT, RESTART_DISTANCE, JitterBuffer
from workers.unwrap import Unwrapper

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
TS_STEP = 3000  # 90 kHz at 30 fps
WAIT = 0.25  # README: "the jitter buffer waits at most 250 ms for a missing packet"


def pkt(seq: int, ts: int, marker: bool = False, payload: bytes = b"p") -> RtpPacket:
    return RtpPacket(
        payload_type=96,
        marker=int(marker),
        sequence_number=seq % SEQ_MOD,
        timestamp=ts % TS_MOD,
        ssrc=0x1234,
        payload=payload,
    )


def video_frames(
    sizes: list[int], seq0: int = 0, ts0: int = 90_000
) -> list[list[RtpPacket]]:
    """Frames of the given packet counts; payload 'frame:index/count', marker on the last."""
    frames, seq = [], seq0
    for number, size in enumerate(sizes):
        ts = ts0 + number * TS_STEP
        frames.append(
            [
                pkt(seq + i, ts, marker=i == size - 1, payload=f"{number}:{i}/{size}".encode())
                for i in range(size)
            ]
        )
        seq += size
    return frames


def frame_ids(frames: list[AssembledFrame]) -> list[int]:
    return [int(frame.packets[0].payload.split(b":")[0]) for frame in frames]


# -- Unwrapper ---------------------------------------------------------------------


def test_unwrapper_first_value_maps_to_itself_and_wraps_forward() -> None:
    unwrapper = Unwrapper(16)
    assert unwrapper.unwrap(65534) == 65534
    assert unwrapper.unwrap(65535) == 65535
    assert unwrapper.unwrap(0) == 65536
    assert unwrapper.unwrap(1) == 65537
    # reordered value from before the wrap
    assert unwrapper.unwrap(65533) == 65533
    # and the reference did not move back
    assert unwrapper.unwrap(2) == 65538


def test_unwrapper_backward_across_wrap_and_before_first() -> None:
    unwrapper = Unwrapper(16)
    assert unwrapper.unwrap(0) == 0
    assert unwrapper.unwrap(65535) == -1
    assert unwrapper.unwrap(1) == 1
    # several full cycles
    value = 1
    for _ in range(5 * 4):
        value += 16000
        assert unwrapper.unwrap(value % SEQ_MOD) == value


def test_unwrapper_32_bit_timestamps() -> None:
    unwrapper = Unwrapper(32)
    start = TS_MOD - 3000
    assert unwrapper.unwrap(start) == start
    assert unwrapper.unwrap(0) == TS_MOD
    assert unwrapper.unwrap(3000) == TS_MOD + 3000
    assert unwrapper.unwrap(start) == start  # reordered
    assert unwrapper.unwrap(TS_MOD - 1) == TS_MOD - 1


def test_unwrapper_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        Unwrapper(16).unwrap(65536)
    with pytest.raises(ValueError):
        Unwrapper(1)


# -- in order, reorder, duplicates ---------------------------------------------------


def test_in_order_video_frames_release_on_marker() -> None:
    frames = video_frames([3, 1, 2])
    jb = JitterBuffer(frame_per_packet=False)
    out: list[AssembledFrame] = []
    now = 10.0
    for frame in frames:
        for i, packet in enumerate(frame):
            released = jb.push(packet, now)
            # nothing comes out before the marker packet
            assert len(released) == (1 if i == len(frame) - 1 else 0)
            out += released
            now += 0.001
    assert [frame.packets for frame in out] == [tuple(frame) for frame in frames]
    assert [frame.timestamp for frame in out] == [90_000, 93_000, 96_000]
    assert out[0].arrival == 10.0
    assert all(frame.clean_start and not frame.after_loss for frame in out)
    assert out[0].payloads == (b"0:0/3", b"0:1/3", b"0:2/3")
    stats = jb.stats
    assert (stats.packets, stats.frames, stats.duplicates, stats.late) == (6, 3, 0, 0)
    assert (stats.lost_packets, stats.dropped_frames, jb.pending) == (0, 0, 0)


def test_timestamp_change_ends_a_frame_without_marker() -> None:
    jb = JitterBuffer(frame_per_packet=False)
    assert jb.push(pkt(0, 0), 0.0) == []
    assert jb.push(pkt(1, 0), 0.0) == []
    out = jb.push(pkt(2, 3000), 0.01)
    assert len(out) == 1 and [p.sequence_number for p in out[0].packets] == [0, 1]
    # the next frame starts cleanly: its predecessor was received and ended a frame
    out = jb.push(pkt(3, 3000, marker=True), 0.02)
    assert out[0].clean_start and not out[0].after_loss


def test_reorder_within_wait() -> None:
    frames = video_frames([3, 2, 4])
    packets = [p for frame in frames for p in frame]
    order = [0, 2, 4, 1, 3, 8, 6, 5, 7]
    jb = JitterBuffer(frame_per_packet=False)
    out: list[AssembledFrame] = []
    for step, index in enumerate(order):
        out += jb.push(packets[index], 1.0 + step * 0.01)
    assert [frame.packets for frame in out] == [tuple(frame) for frame in frames]
    assert all(frame.clean_start and not frame.after_loss for frame in out)
    # arrival is the time of the frame's first packet to arrive, not of its first in order
    assert out[0].arrival == 1.0
    assert out[2].arrival == 1.05
    assert jb.stats.lost_packets == 0 and jb.stats.late == 0


def test_duplicates_are_counted_and_dropped() -> None:
    (a, b) = video_frames([2, 2])
    jb = JitterBuffer(frame_per_packet=False)
    out = jb.push(a[0], 0.0)
    out += jb.push(a[0], 0.0)  # duplicate while held
    out += jb.push(a[1], 0.0)
    out += jb.push(a[1], 0.0)  # duplicate of a released packet
    out += jb.push(a[0], 0.0)
    out += jb.push(b[0], 0.0)
    out += jb.push(b[1], 0.0)
    assert frame_ids(out) == [0, 1]
    assert jb.stats.duplicates == 3
    assert jb.stats.late == 0
    assert jb.stats.frames == 2


def test_earlier_packet_before_first_release_moves_the_start_back() -> None:
    (a,) = video_frames([3], seq0=100)
    jb = JitterBuffer(frame_per_packet=False)
    assert jb.push(a[1], 0.0) == []
    assert jb.push(a[0], 0.01) == []
    out = jb.push(a[2], 0.02)
    assert len(out) == 1 and out[0].packets == tuple(a)
    assert jb.stats.late == 0


# -- holes -----------------------------------------------------------------------------


def test_hole_inside_frame_released_exactly_at_max_wait() -> None:
    a, b, c = video_frames([3, 3, 2])
    jb = JitterBuffer(frame_per_packet=False)
    assert len(jb.push(a[0], 0.0) + jb.push(a[1], 0.0) + jb.push(a[2], 0.0)) == 1
    assert jb.push(b[0], 0.03) == []
    # b[1] is lost; b[2] is the first packet after the hole
    t0 = 0.04
    assert jb.push(b[2], t0) == []
    assert jb.push(c[0], 0.05) == []
    assert jb.push(c[1], 0.06) == []
    assert jb.next_deadline() == t0 + WAIT
    assert jb.poll(t0 + WAIT - 1e-6) == []
    out = jb.poll(t0 + WAIT)
    # b lost a packet: dropped whole; c follows b's received marker packet: clean
    assert frame_ids(out) == [2]
    assert out[0].clean_start and out[0].after_loss
    stats = jb.stats
    assert (stats.lost_packets, stats.dropped_frames, stats.discarded) == (1, 1, 2)
    assert jb.pending == 0 and jb.next_deadline() is None
    # the lost packet turns up after the give-up: late, and no longer lost
    assert jb.push(b[1], t0 + WAIT + 0.01) == []
    assert (jb.stats.late, jb.stats.lost_packets) == (1, 0)
    # a second copy of it is a duplicate
    jb.push(b[1], t0 + WAIT + 0.02)
    assert (jb.stats.late, jb.stats.duplicates) == (1, 1)


def test_whole_frame_lost_next_frame_has_unknown_start() -> None:
    a, b, c = video_frames([2, 2, 2])
    jb = JitterBuffer(frame_per_packet=False)
    jb.push(a[0], 0.0)
    assert frame_ids(jb.push(a[1], 0.0)) == [0]
    jb.push(c[0], 0.1)
    assert jb.push(c[1], 0.1) == []  # complete, but held behind the hole
    out = jb.poll(0.1 + WAIT)
    assert frame_ids(out) == [2]
    # we cannot know whether c's first packets were in the hole
    assert not out[0].clean_start and out[0].after_loss
    assert jb.stats.lost_packets == 2 and jb.stats.dropped_frames == 0


def test_lost_marker_packet_drops_the_frame() -> None:
    a, b = video_frames([3, 2])
    jb = JitterBuffer(frame_per_packet=False)
    jb.push(a[0], 0.0)
    jb.push(a[1], 0.0)
    jb.push(b[0], 0.02)
    jb.push(b[1], 0.02)
    out = jb.poll(0.02 + WAIT)
    assert frame_ids(out) == [1]
    assert not out[0].clean_start and out[0].after_loss
    assert jb.stats.dropped_frames == 1 and jb.stats.discarded == 2


def test_hole_filled_in_time_loses_nothing() -> None:
    a, b = video_frames([3, 2])
    jb = JitterBuffer(frame_per_packet=False)
    out = jb.push(a[0], 0.0) + jb.push(a[2], 0.0) + jb.push(b[0], 0.0) + jb.push(b[1], 0.0)
    assert out == [] and jb.next_deadline() == WAIT
    assert jb.poll(WAIT - 0.01) == []
    out = jb.push(a[1], WAIT - 0.001)
    assert frame_ids(out) == [0, 1]
    assert all(frame.clean_start and not frame.after_loss for frame in out)


def test_give_up_then_more_holes_each_bounded_by_its_first_arrival() -> None:
    frames = video_frames([1] * 6)
    p = [f[0] for f in frames]
    jb = JitterBuffer(frame_per_packet=False)
    jb.push(p[0], 0.0)
    jb.push(p[2], 0.1)  # hole at 1, first after it at 0.1
    jb.push(p[4], 0.2)  # hole at 3, first after it at 0.2
    assert frame_ids(jb.poll(0.1 + WAIT)) == [2]
    assert jb.poll(0.2 + WAIT - 0.01) == []
    assert frame_ids(jb.poll(0.2 + WAIT)) == [4]
    # a late-arriving hole that already expired is given up at once
    jb.push(p[5], 0.2 + WAIT)
    assert jb.stats.lost_packets == 2


def test_frame_tail_after_hole_is_discarded_even_if_it_arrives_later() -> None:
    a, b, c = video_frames([1, 4, 1])
    jb = JitterBuffer(frame_per_packet=False)
    jb.push(a[0], 0.0)
    jb.push(b[0], 0.0)
    jb.push(b[2], 0.0)  # b[1] lost; b[3] (marker) not here yet
    assert jb.poll(WAIT) == []
    assert jb.stats.dropped_frames == 1
    assert jb.push(b[3], WAIT + 0.01) == []  # tail of the dropped frame
    out = jb.push(c[0], WAIT + 0.02)
    assert frame_ids(out) == [2]
    assert out[0].clean_start and out[0].after_loss
    assert jb.stats.discarded == 3


def test_flush_gives_up_everything() -> None:
    a, b, c, d = video_frames([1, 1, 1, 2])
    jb = JitterBuffer(frame_per_packet=False)
    assert frame_ids(jb.push(a[0], 0.0)) == [0]
    jb.push(c[0], 0.0)  # complete, behind the hole where b was
    jb.push(d[0], 0.0)  # d is open: its marker packet never came
    out = jb.flush()
    assert frame_ids(out) == [2] and out[0].after_loss
    assert jb.pending == 0 and jb.stats.dropped_frames == 1 and jb.stats.lost_packets == 1


# -- wrap-around -------------------------------------------------------------------------


def test_sequence_wrap_at_65535_with_reordering() -> None:
    frames = video_frames([3, 3, 3, 3], seq0=65530)
    packets = [p for frame in frames for p in frame]
    assert [p.sequence_number for p in packets[5:8]] == [65535, 0, 1]
    order = [0, 1, 2, 3, 4, 6, 5, 7, 9, 8, 11, 10]
    jb = JitterBuffer(frame_per_packet=False)
    out: list[AssembledFrame] = []
    for step, index in enumerate(order):
        out += jb.push(packets[index], step * 0.01)
    assert [frame.packets for frame in out] == [tuple(frame) for frame in frames]
    assert all(frame.clean_start and not frame.after_loss for frame in out)


def test_sequence_wrap_with_loss_across_the_wrap() -> None:
    frames = video_frames([1, 1, 1, 1], seq0=65534)  # seqs 65534, 65535, 0, 1
    jb = JitterBuffer(frame_per_packet=False)
    jb.push(frames[0][0], 0.0)
    jb.push(frames[3][0], 0.0)  # 65535 and 0 lost
    out = jb.poll(WAIT)
    assert frame_ids(out) == [3]
    assert jb.stats.lost_packets == 2


def test_timestamp_wrap_gives_increasing_unwrapped_timestamps() -> None:
    frames = video_frames([2, 2, 2], ts0=TS_MOD - TS_STEP)
    jb = JitterBuffer(frame_per_packet=False)
    out: list[AssembledFrame] = []
    for frame in frames:
        for packet in frame:
            out += jb.push(packet, 0.0)
    assert [frame.packets[0].timestamp for frame in out] == [TS_MOD - TS_STEP, 0, TS_STEP]
    assert [frame.timestamp for frame in out] == [TS_MOD - TS_STEP, TS_MOD, TS_MOD + TS_STEP]


# -- audio ------------------------------------------------------------------------------


def test_audio_each_packet_is_a_frame() -> None:
    jb = JitterBuffer(frame_per_packet=True)
    # aiortc sets the marker on every Opus packet; it does not matter here
    packets = [pkt(7 + i, 960 * i, marker=True, payload=bytes([i + 1])) for i in range(6)]
    out = jb.push(packets[0], 0.0)
    out += jb.push(packets[2], 0.02)  # 1 is reordered
    assert len(out) == 1
    out += jb.push(packets[1], 0.03)
    assert [f.payloads for f in out] == [(b"\x01",), (b"\x02",), (b"\x03",)]
    # 3 is lost
    out += jb.push(packets[4], 0.06)
    out += jb.push(packets[5], 0.08)
    assert len(out) == 3
    out += jb.poll(0.06 + WAIT)
    assert [f.payloads[0][0] for f in out] == [1, 2, 3, 5, 6]
    assert [f.timestamp for f in out] == [0, 960, 1920, 3840, 4800]
    assert [(f.clean_start, f.after_loss) for f in out[3:]] == [(False, True), (True, False)]
    assert jb.stats.lost_packets == 1 and jb.stats.dropped_frames == 0


# -- limits -------------------------------------------------------------------------------


def test_overflow_gives_up_the_oldest_hole_at_once() -> None:
    jb = JitterBuffer(frame_per_packet=True, max_packets=8)
    jb.push(pkt(0, 0), 0.0)
    out: list[AssembledFrame] = []
    for seq in range(2, 10):  # 1 is missing; 8 packets held is still fine
        out += jb.push(pkt(seq, seq * 960), 0.0)
        assert jb.pending <= 8
    assert out == [] and jb.pending == 8
    out = jb.push(pkt(10, 10 * 960), 0.0)  # the ninth: no time has passed
    assert [f.timestamp // 960 for f in out] == list(range(2, 11))
    assert jb.pending == 0 and jb.stats.lost_packets == 1


def test_overflow_drops_an_unterminated_frame() -> None:
    jb = JitterBuffer(frame_per_packet=False, max_packets=4)
    out: list[AssembledFrame] = []
    for seq in range(6):  # one timestamp, never a marker
        out += jb.push(pkt(seq, 0), 0.0)
        assert jb.pending <= 4
    assert out == [] and jb.stats.dropped_frames == 1
    out = jb.push(pkt(6, 3000, marker=True), 0.0)
    assert len(out) == 1 and out[0].clean_start and out[0].after_loss


# -- frame starts --------------------------------------------------------------------------


def starts_with_s(payload: bytes) -> bool:
    return payload.startswith(b"S")


def test_joined_mid_frame_counts_as_clean_without_a_hook() -> None:
    jb = JitterBuffer(frame_per_packet=False)
    jb.push(pkt(5, 0, payload=b"middle"), 0.0)
    out = jb.push(pkt(6, 0, marker=True, payload=b"end"), 0.0)
    assert len(out) == 1 and out[0].clean_start and not out[0].after_loss


def test_hook_drops_a_first_frame_joined_mid_frame() -> None:
    jb = JitterBuffer(frame_per_packet=False, starts_frame=starts_with_s)
    jb.push(pkt(5, 0, payload=b"middle"), 0.0)
    assert jb.push(pkt(6, 0, marker=True, payload=b"end"), 0.0) == []
    out = jb.push(pkt(7, 3000, marker=True, payload=b"S"), 0.0)
    assert len(out) == 1 and out[0].clean_start and out[0].after_loss
    assert jb.stats.dropped_frames == 1 and jb.stats.discarded == 2


def test_hook_decides_frames_after_a_hole() -> None:
    jb = JitterBuffer(frame_per_packet=False, starts_frame=starts_with_s)
    jb.push(pkt(0, 0, marker=True, payload=b"S0"), 0.0)
    # seq 1 lost: was it the start of the frame at ts 3000?
    jb.push(pkt(2, 3000, marker=True, payload=b"tail"), 0.0)
    # seq 3..4 lost; frame at ts 9000 starts properly
    jb.push(pkt(5, 9000, payload=b"S2"), 0.0)
    jb.push(pkt(6, 9000, marker=True, payload=b"x"), 0.0)
    out = jb.poll(WAIT)
    assert [f.payloads for f in out] == [(b"S2", b"x")]
    assert not out[0].clean_start and out[0].after_loss
    assert jb.stats.dropped_frames == 1 and jb.stats.lost_packets == 3


def test_padding_packets_take_a_number_but_form_no_frame() -> None:
    jb = JitterBuffer(frame_per_packet=False)
    out = jb.push(pkt(0, 0, marker=True), 0.0)
    out += jb.push(pkt(1, 0, payload=b""), 0.0)  # padding probe with the old timestamp
    out += jb.push(pkt(2, 0, payload=b""), 0.0)
    out += jb.push(pkt(3, 3000, marker=True), 0.0)
    assert [f.timestamp for f in out] == [0, 3000]
    assert all(f.clean_start and not f.after_loss for f in out)
    assert jb.stats.discarded == 2


def test_sender_restarting_its_sequence_resynchronises() -> None:
    jb = JitterBuffer(frame_per_packet=True)
    seq = 40_000
    for i in range(5):
        jb.push(pkt(seq + i, i * 960), i * 0.02)
    restart = seq - RESTART_DISTANCE - 500
    assert jb.push(pkt(restart, 10 * 960), 0.2) == []  # a lone far straggler: late
    assert jb.stats.late == 1
    out = jb.push(pkt(restart + 1, 11 * 960), 0.22)
    assert [f.timestamp for f in out] == [10 * 960, 11 * 960]
    assert not out[0].clean_start and out[0].after_loss
    assert out[1].clean_start and not out[1].after_loss
    assert jb.stats.late == 0
    assert len(jb.push(pkt(restart + 2, 12 * 960), 0.24)) == 1


# -- property-style random test ------------------------------------------------------------


@dataclass
class _Sent:
    arrival: float
    order: int
    packet: RtpPacket


def _simulate(seed: int, use_hook: bool) -> None:
    rng = random.Random(seed)
    sizes = [1] + [rng.choice([1, 1, 2, 3, 5]) for _ in range(499)]
    seq0, ts0 = 65_000, TS_MOD - 20 * TS_STEP  # both wrap during the stream
    frames = video_frames(sizes, seq0=seq0, ts0=ts0)
    originals = {number: tuple(p.payload for p in frame) for number, frame in enumerate(frames)}
    first_seq_of = {}
    seq = seq0
    for number, size in enumerate(sizes):
        first_seq_of[number] = seq
        seq += size

    events: list[_Sent] = []
    order = 0
    for number, frame in enumerate(frames):
        send = number / 30
        for packet in frame:
            if number > 0 and rng.random() < 0.04:
                continue  # lost
            copies = 2 if rng.random() < 0.03 else 1
            for _ in range(copies):
                delay = 0.01 + (rng.expovariate(1 / 0.03) if rng.random() < 0.3 else 0.0)
                if number > 0 and rng.random() < 0.01:
                    delay += 0.5  # far later than max_wait
                events.append(_Sent(send + delay, order, packet))
                order += 1
    events.sort(key=lambda sent: (sent.arrival, sent.order))

    # first arrival of each payload, to bound how long frames may be held
    first_arrival: dict[bytes, float] = {}
    for sent in events:
        first_arrival.setdefault(sent.packet.payload, sent.arrival)

    hook = (lambda payload: b":0/" in payload) if use_hook else None
    jb = JitterBuffer(frame_per_packet=False, starts_frame=hook)
    poll_step = 0.02
    emitted: list[tuple[float, AssembledFrame]] = []
    next_poll = 0.0
    for sent in events:
        while next_poll < sent.arrival:
            emitted += [(next_poll, f) for f in jb.poll(next_poll)]
            next_poll += poll_step
        emitted += [(sent.arrival, f) for f in jb.push(sent.packet, sent.arrival)]
        assert jb.pending <= 1024
    end = events[-1].arrival + 1.0
    while next_poll < end:
        emitted += [(next_poll, f) for f in jb.poll(next_poll)]
        next_poll += poll_step
    assert jb.pending == 0

    ids = [int(frame.payloads[0].split(b":")[0]) for _, frame in emitted]
    assert ids == sorted(set(ids)), "frames out of order or emitted twice"
    assert ids[0] == 0 and len(ids) > 350

    previous = None
    for (when, frame), number in zip(emitted, ids):
        payloads = frame.payloads
        original = originals[number]
        if use_hook or frame.clean_start:
            assert payloads == original, f"frame {number} emitted partially"
        else:
            assert original[-len(payloads) :] == payloads  # at worst its head is missing
        assert frame.timestamp == ts0 + number * TS_STEP
        assert frame.packets[0].sequence_number == (first_seq_of[number] + original.index(payloads[0])) % SEQ_MOD
        arrivals = [first_arrival[p] for p in payloads]
        assert frame.arrival == min(arrivals)
        # never held longer than max_wait past its first arrival (plus the poll period)
        assert when <= max(max(arrivals), min(arrivals) + WAIT) + poll_step + 1e-9
        if not frame.after_loss and previous is not None:
            assert number == previous + 1
        previous = number

    stats = jb.stats
    emitted_packets = sum(len(frame.packets) for _, frame in emitted)
    assert stats.packets == len(events)
    assert (
        stats.packets
        == stats.duplicates + stats.late + stats.discarded + emitted_packets + jb.pending
    )
    assert stats.frames == len(emitted)
    received = {sent.packet.sequence_number for sent in events}
    last = max(first_seq_of[n] + sizes[n] - 1 for n in range(len(sizes)) if any(
        (first_seq_of[n] + i) % SEQ_MOD in received for i in range(sizes[n])
    ))
    never = sum(1 for s in range(seq0, last + 1) if s % SEQ_MOD not in received)
    assert stats.lost_packets == never
    assert stats.duplicates > 0 and stats.late > 0 and stats.dropped_frames > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("use_hook", [False, True])
def test_random_reorder_drop_duplicate(seed: int, use_hook: bool) -> None:
    _simulate(seed, use_hook)


@pytest.mark.parametrize("seed", [4, 5])
def test_random_reorder_within_wait_loses_nothing(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([1, 2, 4, 8]) for _ in range(300)]
    frames = video_frames(sizes, seq0=65_400)
    arrivals = sorted(
        (number / 30 + rng.uniform(0, 0.8 * WAIT), i, packet)
        for number, frame in enumerate(frames)
        for i, packet in enumerate(frame)
    )
    # keep the very first packet first: reordering across it cannot be detected
    first = next(a for a in arrivals if a[2] is frames[0][0])
    arrivals.remove(first)
    arrivals.insert(0, (0.0, 0, first[2]))
    jb = JitterBuffer(frame_per_packet=False)
    out: list[AssembledFrame] = []
    for when, _, packet in arrivals:
        out += jb.poll(when)
        out += jb.push(packet, when)
    assert [f.packets for f in out] == [tuple(frame) for frame in frames]
    assert all(f.clean_start and not f.after_loss for f in out)
    assert (jb.stats.lost_packets, jb.stats.late, jb.stats.dropped_frames) == (0, 0, 0)


def test_the_default_wait_is_the_documented_one() -> None:
    """README: a missing packet is waited for at most 250 ms, by the buffer's default and by
    the wait the node hands every worker (contract.tuning, through NodeConfig and MediaTuning)."""
    assert DEFAULT_MAX_WAIT == WAIT == 0.25
    assert tuning.JITTER_MAX_WAIT_S == 0.25 and tuning.MediaTuning().jitter_max_wait_s == 0.25
    assert NodeConfig(data_dir=Path("."), app_id=1, server_secret="x").jitter_max_wait_s == 0.25
