"""RtpInput on 127.0.0.1: what it adds to the shared TrackPipe (sockets, parsing, PLI, stats)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtcpSenderInfo, RtcpSrPacket

from contract.codes import MediaKind
from contract.tuning import MediaTuning
from contract.worker import StreamSpec, TrackSpec, WorkerConfig
from workers.inputs.rtp import RtpInput

V, A = MediaKind.VIDEO, MediaKind.AUDIO
SSRC = 1111


def _free_port_pair() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            return port


def _rtp(seq: int, timestamp: int, payload: bytes, ssrc: int = SSRC, payload_type: int = 96) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x80 | payload_type, seq, timestamp, ssrc) + payload


def _sr(ssrc: int) -> bytes:
    return bytes(RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(ntp_timestamp=5 << 32, rtp_timestamp=2000,
                                                                    packet_count=0, octet_count=0)))


def _publisher() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    return sock


def _plis(sock: socket.socket) -> list[RtcpPsfbPacket]:
    sock.settimeout(0.3)
    found = []
    try:
        while True:
            found += [p for p in RtcpPacket.parse(sock.recv(2048))
                      if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]
    except TimeoutError:
        return found


async def _settle(rtp_input: RtpInput) -> None:
    await asyncio.sleep(0.05)
    rtp_input.tick(time.monotonic())


@pytest.mark.parametrize("muxed", [False, True])
def test_pli_goes_to_the_rtcp_source_or_the_rtp_one_when_muxed(muxed):
    async def scenario():
        port = _free_port_pair()
        spec = StreamSpec("r", "s", "u", (TrackSpec(V, "H264", 96, 90000),))
        frames, reports = [], []
        rtp_input = RtpInput(WorkerConfig(spec, "127.0.0.1", (port,), MediaTuning(0.25, 0.0)), frames.append,
                             lambda *a: reports.append(a))
        await rtp_input.start()
        media, control = _publisher(), _publisher()
        try:
            (media if muxed else control).sendto(_sr(SSRC), ("127.0.0.1", port if muxed else port + 1))
            media.sendto(_rtp(1, 3000, b"\x41\x88\x80\x10"), ("127.0.0.1", port))  # no key frame yet
            await _settle(rtp_input)
            rtp_input.request_keyframe()
            assert reports == [(V, 5 << 32, 2000)]
            [pli] = _plis(media if muxed else control)
            assert pli.media_ssrc == SSRC
            assert _plis(control if muxed else media) == []
            stats = rtp_input.stats()["video"]
            assert (stats["sender_reports"], stats["rtcp"], stats["pli"]) == (1, 1, 1)
        finally:
            rtp_input.close()
            media.close()
            control.close()

    asyncio.run(scenario())


def test_garbage_foreign_sources_and_ssrcs_are_counted():
    async def scenario():
        port = _free_port_pair()
        spec = StreamSpec("r", "s", "u", (TrackSpec(V, "H264", 96, 90000), TrackSpec(A, "opus", 111, 48000, 2)))
        frames = []
        rtp_input = RtpInput(WorkerConfig(spec, "127.0.0.1", (port, port + 2), MediaTuning(0.25, 0.0)), frames.append,
                             lambda *a: None)
        await rtp_input.start()
        media, stranger = _publisher(), _publisher()
        try:
            media.sendto(_rtp(1, 3000, b"\x65\x88\x80\x10"), ("127.0.0.1", port))  # a key frame
            media.sendto(_rtp(2, 6000, b"\x41\x88\x80\x10", ssrc=2222), ("127.0.0.1", port))  # another SSRC
            media.sendto(_rtp(2, 6000, b"\x41\x88\x80\x10", payload_type=97), ("127.0.0.1", port))
            media.sendto(b"\x00\x01", ("127.0.0.1", port))
            stranger.sendto(_rtp(2, 6000, b"\x41\x88\x80\x10"), ("127.0.0.1", port))  # another source
            await _settle(rtp_input)
            assert [f.kind for f in frames] == [V] and frames[0].keyframe
            assert rtp_input.last_packet is not None
            stats = rtp_input.stats()
            video = stats["video"]
            assert {k: video[k] for k in ("datagrams", "garbage", "foreign", "rtcp", "jitter_packets", "frames")} == \
                {"datagrams": 4, "garbage": 2, "foreign": 2, "rtcp": 0, "jitter_packets": 1, "frames": 1}
            assert {"bytes", "sender_reports", "jitter_lost_packets", "dropped_waiting_keyframe",
                    "dropped_malformed", "max_release_delay_s"} <= set(video)
            assert set(stats["audio"]) == set(video)
        finally:
            rtp_input.close()
            media.close()
            stranger.close()

    asyncio.run(scenario())
