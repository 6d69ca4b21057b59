"""The aiortc / aioice internals workers.inputs.aiortc_patches relies on, checked.

If aiortc or aioice is upgraded and one of these fails, read the new source of the
named function before touching the test: the WebRTC input may otherwise decode video,
stall on loss, or lose packets silently.
"""

from __future__ import annotations

import asyncio
import inspect

import aioice
import aioice.candidate
import aioice.ice
import aioice.stun
import aioice.turn
import aiortc
import aiortc.codecs
import aiortc.rtcdtlstransport
import aiortc.rtcpeerconnection
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import aiortc.rtcrtptransceiver
import aiortc.sdp
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RtcpByePacket,
    RtcpPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    wrap_rtx,
)

from workers.inputs import aiortc_patches
from workers.inputs.webrtc import WebRtcInput  # noqa: F401  (installs the patches)


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def source(fn) -> str:
    return inspect.getsource(fn)


def test_pinned_versions():
    assert aiortc.__version__.startswith("1.16."), aiortc.__version__
    assert aioice.__version__.startswith("0.13."), aioice.__version__


def test_receiver_packet_path_order():
    """RTX unwrap, NACK and (patched) depayload happen before the jitter buffer's add(),
    whose (pli_flag, frame) result is only decoded when a frame comes back."""
    code = source(aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet)
    assert params(aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet) == ["self", "packet", "arrival_time_ms"]
    order = [
        "packet = unwrap_rtx(",
        "self.__nack_generator.add(packet)",
        "await self._send_rtcp_nack(",
        "packet._data = depayload(codec, packet.payload)",
        "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)",
        "if encoded_frame is not None and self.__decoder_thread:",
        "self.__decoder_queue.put((codec, encoded_frame))",
    ]
    positions = [code.find(fragment) for fragment in order]
    assert -1 not in positions, [f for f, p in zip(order, positions) if p == -1]
    assert positions == sorted(positions)


def test_receiver_globals_and_methods():
    module = aiortc.rtcrtpreceiver
    assert module.get_decoder is aiortc_patches._never_decode
    assert module.depayload is aiortc_patches._keep_payload
    assert "get_decoder(codec)" in source(module.decoder_worker)
    assert params(aiortc.codecs.get_decoder) == ["codec"]
    assert params(aiortc.codecs.depayload) == ["codec", "payload"]
    receiver = module.RTCRtpReceiver
    for name, expected in [("_handle_rtcp_packet", ["self", "packet"]),
                           ("_send_rtcp_nack", ["self", "media_ssrc", "lost"]),
                           ("_send_rtcp_pli", ["self", "media_ssrc"]),
                           ("_send_rtcp", ["self", "packet"])]:
        method = getattr(receiver, name)
        assert inspect.iscoroutinefunction(method), name
        assert params(method) == expected, name
    assert "self.__jitter_buffer = JitterBuffer(" in source(receiver.__init__)


def test_rtcp_reaches_the_receiver_instance():
    """The DTLS transport calls the method on the receiver object, so an instance attribute wins;
    Sender Reports and BYE are routed to the receiver by SSRC."""
    dtls = aiortc.rtcdtlstransport
    assert "await recipient._handle_rtcp_packet(packet)" in source(dtls.RTCDtlsTransport._handle_rtcp_data)
    assert "await receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)" in source(
        dtls.RTCDtlsTransport._handle_rtp_data)
    route = source(dtls.RtpRouter.route_rtcp)
    assert "isinstance(packet, RtcpSrPacket)" in route and "self.ssrc_table.get(packet.ssrc)" in route
    assert "isinstance(packet, RtcpByePacket)" in route


def test_codec_negotiation_helpers():
    pc_module = aiortc.rtcpeerconnection
    assert params(pc_module.find_common_codecs) == ["local_codecs", "remote_codecs"]
    assert params(pc_module.filter_preferred_codecs) == ["codecs", "preferred"]
    assert "find_common_codecs(CODECS[media.kind], media.rtp.codecs)" in source(
        pc_module.RTCPeerConnection.setRemoteDescription)
    assert "transceiver._preferred_codecs" in source(pc_module.RTCPeerConnection.setRemoteDescription)
    # H.264 is matched by profile and packetization mode, not level.
    local = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=120,
                                  parameters={"packetization-mode": "1", "profile-level-id": "64001f"})
    remote = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=106,
                                   parameters={"packetization-mode": "1", "profile-level-id": "640033"})
    assert pc_module.is_codec_compatible(local, remote)
    remote.parameters["packetization-mode"] = "0"
    assert not pc_module.is_codec_compatible(local, remote)
    assert "codec.parameters == pref.parameters" in source(pc_module.filter_preferred_codecs)
    assert params(aiortc.rtcrtptransceiver.RTCRtpTransceiver.setCodecPreferences) == ["self", "codecs"]
    assert params(aiortc.sdp.parse_h264_profile_level_id) == ["profile_str"]


def test_extra_h264_profiles_are_registered_once():
    aiortc_patches.install()  # idempotent
    aiortc_patches._register_h264_profiles()
    h264 = [c for c in aiortc.codecs.CODECS["video"] if c.name == "H264"]
    ids = [c.parameters["profile-level-id"] for c in h264]
    assert sorted(ids) == sorted(["42001f", "42e01f", *aiortc_patches.EXTRA_H264_PROFILE_LEVEL_IDS])
    assert all(aiortc_patches.FIR_FEEDBACK in c.rtcpFeedback for c in h264)
    rtx_apts = {c.parameters["apt"] for c in aiortc.codecs.CODECS["video"] if c.name == "rtx"}
    assert {c.payloadType for c in h264} <= rtx_apts
    pts = [c.payloadType for c in aiortc.codecs.CODECS["video"]]
    assert len(pts) == len(set(pts))


def test_aioice_internals():
    connection = aioice.ice.Connection
    assert params(connection.get_component_candidates) == ["self", "component", "addresses", "timeout"]
    assert connection.get_component_candidates is aiortc_patches._get_component_candidates
    original = aiortc_patches._original_get_component_candidates
    assert params(original) == ["self", "component", "addresses", "timeout"]
    code = source(original)
    assert "lambda: StunProtocol(self), local_addr=(address, 0)" in code
    assert "self._protocols += host_protocols" in code
    assert "self.get_component_candidates(component=component, addresses=addresses)" in source(
        connection.gather_candidates)
    assert params(aioice.ice.StunProtocol.__init__) == ["self", "receiver"]
    assert params(aioice.candidate.candidate_foundation) == ["candidate_type", "candidate_transport",
                                                            "base_address"]
    assert params(aioice.candidate.candidate_priority)[:2] == ["candidate_component", "candidate_type"]
    assert isinstance(aioice.turn.UDP_SOCKET_BUFFER_SIZE, int)
    # Consent freshness: replaced by _query_consent_or_media, which uses what aioice's own did
    # (the knobs the vanish test shortens, read at use as module globals).
    assert connection.query_consent is aiortc_patches._query_consent_or_media
    assert connection.data_received is aiortc_patches._stamped_data_received
    original = source(aiortc_patches._original_data_received)
    assert params(aiortc_patches._original_data_received) == ["self", "data", "component"]
    assert "self._queue.put_nowait((data, component))" in original
    started = source(connection.connect)
    assert "self._query_consent_task = asyncio.create_task(self.query_consent())" in started
    assert "self._nominated" in source(connection.close) and params(connection.build_request) == [
        "self", "pair", "nominate"]
    assert params(aioice.ice.StunProtocol.request)[:4] == ["self", "request", "addr", "integrity_key"]
    assert "retransmissions" in params(aioice.ice.StunProtocol.request)
    assert issubclass(aioice.stun.TransactionError, Exception)
    assert isinstance(aioice.ice.CONSENT_INTERVAL, (int, float)) and isinstance(aioice.ice.CONSENT_FAILURES, int)
    # IcePoller: the ICE transport's aioice connection, its protocols and their transports.
    assert "self._connection = Connection(" in source(aiortc.RTCIceTransport.__init__) or \
        "self._connection = " in source(aiortc.RTCIceTransport.__init__)
    assert "self._protocols" in source(connection.__init__)
    assert params(aioice.ice.StunProtocol.datagram_received) == ["self", "data", "addr"]
    assert "self.transport = " in source(aioice.ice.StunProtocol.connection_made)
    assert "await iceTransport.iceGatherer.gather()" in source(aiortc.RTCPeerConnection.setLocalDescription) or \
        "await self.__gather()" in source(aiortc.RTCPeerConnection.setLocalDescription)


class _Sink:
    def __init__(self):
        self.rtp: list[RtpPacket] = []
        self.rtcp: list = []
        self.nacks: list[list[int]] = []

    def on_rtp(self, packet):
        self.rtp.append(packet)

    def on_rtcp(self, packet):
        self.rtcp.append(packet)

    def on_nack(self, lost):
        self.nacks.append(lost)


def test_hooked_receiver_hands_over_unwrapped_packets_and_never_decodes():
    """Drive a real RTCRtpReceiver: media and RTX packets reach the tap as the original
    stream (RTX unwrapped, payload untouched), a gap triggers a NACK, SR and BYE reach the
    sink, and aiortc's decoder queue receives nothing."""

    async def scenario():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver("video", direction="recvonly")
        receiver = transceiver.receiver
        assert isinstance(transceiver._codecs, list)
        assert isinstance(transceiver.sender._ssrc, int)
        sink = _Sink()
        aiortc_patches.hook_receiver(receiver, sink)
        assert isinstance(receiver._RTCRtpReceiver__jitter_buffer, aiortc_patches._PacketTap)
        receiver._set_rtcp_ssrc(1234)
        receiver._track = aiortc.rtcrtpreceiver.RemoteStreamTrack(kind="video")
        codecs = [RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                                        parameters={"packetization-mode": "1", "profile-level-id": "42e01f"}),
                  RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=103,
                                        parameters={"apt": 102})]
        await receiver.receive(RTCRtpReceiveParameters(
            codecs=codecs,
            encodings=[RTCRtpDecodingParameters(ssrc=1111, payloadType=102, rtx=RTCRtpRtxParameters(ssrc=2222))]))
        sent_rtcp: list[bytes] = []

        async def capture(data: bytes) -> None:
            sent_rtcp.append(data)

        receiver.transport._send_rtp = capture  # the transport is not connected in this test
        single_nal = b"\x01"  # 1-byte NAL unit: aiortc's own depayloader rejects it
        for seq, payload in [(10, b"\x65\x88\x80"), (12, single_nal)]:
            packet = RtpPacket(payload_type=102, sequence_number=seq, timestamp=9000, ssrc=1111, marker=1)
            packet.payload = payload
            await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
        original = RtpPacket(payload_type=102, sequence_number=11, timestamp=9000, ssrc=1111)
        original.payload = b"\x41\x9a\x00"
        rtx = wrap_rtx(original, payload_type=103, sequence_number=500, ssrc=2222)
        await receiver._handle_rtp_packet(rtx, arrival_time_ms=0)
        await receiver._handle_rtcp_packet(RtcpSrPacket(ssrc=1111, sender_info=RtcpSenderInfo(
            ntp_timestamp=1 << 32, rtp_timestamp=9000, packet_count=3, octet_count=9)))
        await receiver._handle_rtcp_packet(RtcpByePacket(sources=[1111]))
        assert [(p.sequence_number, p.ssrc, p.payload_type, p.payload) for p in sink.rtp] == [
            (10, 1111, 102, b"\x65\x88\x80"), (12, 1111, 102, single_nal), (11, 1111, 102, b"\x41\x9a\x00")]
        assert sink.nacks == [[11]]
        assert sent_rtcp, "the NACK went out"
        assert [type(p) for p in sink.rtcp] == [RtcpSrPacket, RtcpByePacket]
        sent_rtcp.clear()
        await aiortc_patches.send_pli(receiver, 1111)
        await aiortc_patches.send_fir(transceiver, 1111, 7)
        pli, fir = (RtcpPacket.parse(data)[0] for data in sent_rtcp)
        assert (pli.fmt, pli.ssrc, pli.media_ssrc) == (RTCP_PSFB_PLI, 1234, 1111)
        assert (fir.fmt, fir.ssrc, fir.media_ssrc) == (RTCP_PSFB_FIR, transceiver.sender._ssrc, 0)
        assert fir.fci == (1111).to_bytes(4, "big") + bytes([7, 0, 0, 0])
        assert receiver._RTCRtpReceiver__decoder_queue.qsize() <= 1  # at most the stop sentinel
        assert not aiortc_patches._NeverDecode.warned
        await receiver.stop()
        await pc.close()

    asyncio.run(scenario())

