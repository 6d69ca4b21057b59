"""testkit.whip.aiortc_wire against real aiortc peers on loopback: the aiortc internals
the fast WHIP publisher (benchmarks.whip_swarm) relies on still exist, a packet sent
through the wire arrives decrypted at the other peer, and aiortc's own Sender Reports
carry what `SrtpWire.report` set. If an aiortc upgrade fails this, read the new
RTCDtlsTransport._send_rtp and RTCRtpSender._run_rtcp before touching the test."""

from __future__ import annotations

import asyncio

from aiortc import RTCPeerConnection
from aiortc.rtp import RtcpSrPacket, RtpPacket

from benchmarks.whip_swarm import sending_peer_connection
from testkit.rtp.send import ntp_from_unix
from testkit.whip.aiortc_wire import SrtpWire, loopback_only, sender_report_fields

OPUS_SILENCE = b"\xfc\xff\xfe"


async def connected_pair() -> tuple[RTCPeerConnection, RTCPeerConnection]:
    loopback_only()
    sender, receiver = sending_peer_connection(), RTCPeerConnection()
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    for _ in range(200):
        if sender.connectionState == receiver.connectionState == "connected":
            return sender, receiver
        await asyncio.sleep(0.05)
    raise AssertionError(f"not connected: {sender.connectionState} / {receiver.connectionState}")


async def heard(receiver: RTCPeerConnection) -> tuple[asyncio.Queue, asyncio.Queue]:
    """(RTP packets, Sender Reports) as the receiving peer's audio receiver handles them."""
    packets, reports = asyncio.Queue(), asyncio.Queue()
    [audio] = [t.receiver for t in receiver.getTransceivers() if t.kind == "audio"]
    handle_rtp, handle_rtcp = audio._handle_rtp_packet, audio._handle_rtcp_packet

    async def on_rtp(packet, arrival_time_ms):
        packets.put_nowait(packet)
        await handle_rtp(packet, arrival_time_ms)

    async def on_rtcp(packet):
        if isinstance(packet, RtcpSrPacket):
            reports.put_nowait(packet)
        await handle_rtcp(packet)

    audio._handle_rtp_packet, audio._handle_rtcp_packet = on_rtp, on_rtcp
    return packets, reports


def test_a_packet_through_the_wire_arrives_and_sender_reports_say_what_was_reported():
    async def scenario():
        sender, receiver = await connected_pair()
        try:
            packets, reports = await heard(receiver)
            wire = SrtpWire(sender)
            assert set(wire.tracks) == {"audio", "video"}
            audio, video = wire.tracks["audio"], wire.tracks["video"]
            assert audio.ssrc != video.ssrc and audio.payload_type != video.payload_type
            ntp = ntp_from_unix(1_800_000_000.25)
            wire.report(audio.sender, ntp, 123_456, 1, len(OPUS_SILENCE))
            assert sender_report_fields(audio.sender) == {"ntp_timestamp": ntp, "rtp_timestamp": 123_456,
                                                          "packet_count": 1, "octet_count": len(OPUS_SILENCE)}
            wire.send(RtpPacket(payload_type=audio.payload_type, marker=1, sequence_number=4242, timestamp=123_456,
                                ssrc=audio.ssrc, payload=OPUS_SILENCE).serialize())
            packet = await asyncio.wait_for(packets.get(), 5)
            assert (packet.ssrc, packet.sequence_number, packet.payload) == (audio.ssrc, 4242, OPUS_SILENCE)
            report = await asyncio.wait_for(reports.get(), 5)  # aiortc's RTCP loop: every 0.5-1.5 s
            info = report.sender_info
            assert (report.ssrc, info.ntp_timestamp, info.rtp_timestamp, info.packet_count, info.octet_count) == \
                (audio.ssrc, ntp, 123_456, 1, len(OPUS_SILENCE))
        finally:
            await sender.close()
            await receiver.close()

    asyncio.run(scenario())
