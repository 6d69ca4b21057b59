"""The receive path per tick (issue 18): batches of datagrams must give what packets one by
one gave. The jitter buffer's `insert` + `poll`, `TrackPipe.push_many`, the RTP receiver's
inline header parse against the full one, H.264's one-pass `depayload_frame`, and the
hole deadline a worker ticks at."""

from __future__ import annotations

import asyncio
import random
import struct
import time

import pytest

from contract.codes import MediaKind
from contract.tuning import MediaTuning
from contract.worker import StreamSpec, TrackSpec, WorkerConfig
from tests.workers.test_h264 import encode, rtp_payloads
from tests.workers.test_jitter import WAIT, frame_ids, video_frames
from tests.workers.test_rtp_input import _free_port_pair, _publisher
from workers.codecs import video_codec
from workers.inputs.rtp import RtpInput
from workers.jitter import JitterBuffer

V = MediaKind.VIDEO


def _batched(packets, arrival: float, batch: int) -> tuple[list, JitterBuffer]:
    jitter = JitterBuffer(frame_per_packet=False, max_wait=WAIT)
    out = []
    for start in range(0, len(packets), batch):
        for packet in packets[start:start + batch]:
            out += jitter.insert(packet, arrival)
        out += jitter.poll(arrival)
    return out, jitter


@pytest.mark.parametrize("batch", [1, 5, 40])
def test_a_batch_releases_the_frames_one_by_one_pushing_does(batch):
    rng = random.Random(batch)
    packets = [p for frame in video_frames([3, 1, 7, 2, 5, 4, 1, 6]) for p in frame]
    for i in range(4, len(packets) - 3, 4):  # reordered inside windows of 4 (as a network would)
        window = packets[i:i + 4]
        rng.shuffle(window)
        packets[i:i + 4] = window
    pushed = JitterBuffer(frame_per_packet=False, max_wait=WAIT)
    one_by_one = [f for p in packets for f in pushed.push(p, 0.0)]
    batched, jitter = _batched(packets, 0.0, batch)
    assert frame_ids(batched) == frame_ids(one_by_one) == list(range(8))
    assert [f.packets for f in batched] == [f.packets for f in one_by_one]
    assert jitter.stats == pushed.stats


def test_a_straggler_in_the_same_batch_fills_its_hole_and_duplicates_stay_duplicates():
    frames = video_frames([2, 2, 2])
    late = frames[1][0]
    batch = [*frames[0], frames[1][1], *frames[2], late]  # the hole's packet comes last
    jitter = JitterBuffer(frame_per_packet=False, max_wait=WAIT)
    for packet in batch:
        assert jitter.insert(packet, 10.0) == []
    assert frame_ids(jitter.poll(10.0 + WAIT + 0.1)) == [0, 1, 2]  # judged at the tick: nothing lost
    assert jitter.stats.lost_packets == 0
    jitter.insert(late, 10.5)  # a copy of a released packet
    assert (jitter.stats.duplicates, jitter.stats.late) == (1, 0)


def test_a_given_up_packet_arriving_late_moves_from_lost_to_late():
    frames = video_frames([2, 2, 2])
    jitter = JitterBuffer(frame_per_packet=False, max_wait=WAIT)
    for packet in [*frames[0], *frames[2]]:
        jitter.insert(packet, 1.0)
    assert frame_ids(jitter.poll(1.0 + WAIT)) == [0, 2]
    assert jitter.stats.lost_packets == 2
    assert jitter.next_deadline() is None
    jitter.insert(frames[1][0], 1.5)
    jitter.insert(frames[1][0], 1.6)
    assert (jitter.stats.lost_packets, jitter.stats.late, jitter.stats.duplicates) == (1, 1, 1)


def test_h264_depayload_frame_tells_key_frames_and_keeps_parameter_sets_in_one_pass():
    spec = TrackSpec(V, "H264", 96, 90000)
    one_pass, two_pass = video_codec("H264")(spec), video_codec("H264")(spec)
    units = encode(64, 48, frames=12)
    for index, unit in enumerate(units):
        payloads = rtp_payloads(unit, index)
        data, keyframe = one_pass.depayload_frame(payloads)
        expected = two_pass.depayload(payloads)
        assert (data, keyframe) == (expected, two_pass.is_keyframe(expected))
        assert one_pass.parameter_sets.sps == two_pass.parameter_sets.sps is not None
        assert one_pass.parameter_sets.pps == two_pass.parameter_sets.pps is not None
    assert sum(video_codec("H264").is_keyframe(u) for u in units) >= 2


def _rtp(seq: int, timestamp: int, payload: bytes, *, marker: bool = True, csrcs: int = 0,
         extension: bytes | None = None, padding: int = 0, payload_type: int = 96) -> bytes:
    first = 0x80 | csrcs | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    head = struct.pack("!BBHII", first, (0x80 if marker else 0) | payload_type, seq, timestamp, 1111)
    head += b"\x00\x00\x00\x07" * csrcs
    if extension is not None:
        head += b"\xbe\xde" + struct.pack("!H", len(extension) // 4) + extension
    return head + payload + (b"\x00" * (padding - 1) + bytes([padding]) if padding else b"")


def test_every_rtp_header_form_in_one_batch_reaches_the_frames_as_the_full_parse_reads_it():
    """The inline parse reads plain version-2 headers; CSRCs, extensions and padding, and
    another payload type, take the full parse, in arrival order, in the same batch."""

    async def scenario():
        port = _free_port_pair()
        spec = StreamSpec("r", "s", "u", (TrackSpec(V, "H264", 96, 90000),))
        frames = []
        rtp_input = RtpInput(WorkerConfig(spec, "127.0.0.1", (port,), MediaTuning(0.25, 0.0)), frames.append,
                             lambda *a: None)
        await rtp_input.start()
        media = _publisher()
        idr, slice_ = b"\x65\x88\x80\x10", b"\x41\x9a\x00\x11"
        try:
            for datagram in [
                _rtp(1, 3000, idr),
                _rtp(2, 6000, slice_, csrcs=2),
                _rtp(3, 9000, slice_, extension=b"\x10\xff\x00\x00"),
                _rtp(4, 12000, slice_, padding=4),
                _rtp(5, 15000, slice_, payload_type=97),  # not the offer's: garbage, its number a hole
                _rtp(6, 18000, slice_),
            ]:
                media.sendto(datagram, ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            rtp_input.tick(time.monotonic())
            assert [(f.rtp_timestamp, f.data[4:]) for f in frames] == \
                [(3000, idr), (6000, slice_), (9000, slice_), (12000, slice_)]
            deadline = rtp_input.next_deadline()  # frame 6 waits behind the hole at 5
            assert deadline is not None and deadline <= time.monotonic() + 0.25
            stats = rtp_input.stats()["video"]
            assert (stats["datagrams"], stats["garbage"], stats["jitter_packets"]) == (6, 1, 5)
            rtp_input.tick(deadline)  # given up: the frame after it waits for a key frame (the loss gate)
            stats = rtp_input.stats()["video"]
            assert (stats["jitter_lost_packets"], stats["dropped_waiting_keyframe"]) == (1, 1)
            assert rtp_input.next_deadline() is None
        finally:
            rtp_input.close()
            media.close()

    asyncio.run(scenario())
