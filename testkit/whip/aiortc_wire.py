"""Every place the fast WHIP publisher (benchmarks.whip_swarm) reaches into aiortc /
aioice internals, in one module (as workers.inputs.aiortc_patches is for the node).

aiortc negotiates the session (offer, ICE, DTLS) and keeps doing what a sender does
besides media: answering ICE checks, RTCP Sender Reports and SDES, reading the
receiver's RTCP. The media itself bypasses aiortc's per-packet path (a
`MediaStreamTrack`, an encoder or `RtpPacket` objects, header extensions, an
`await` per packet): `SrtpWire.send` takes an RTP packet already serialized,
protects it with the sender's own SRTP session and writes it to the nominated ICE
pair's socket, one `protect` and one `sendto` per packet.

Used, not patched (tests/test_aiortc_wire.py asserts they still exist):
- `RTCDtlsTransport._tx_srtp`: the pylibsrtp `Session` keyed by the DTLS handshake;
- `RTCIceTransport._connection._nominated[1]`: aioice's nominated `CandidatePair`
  (its `protocol.transport`, an asyncio datagram transport, and `remote_addr`);
- `RTCRtpSender._ssrc` and `RTCRtpTransceiver._codecs` (the negotiated codecs);
- `RTCRtpSender.__ntp_timestamp`, `__rtp_timestamp`, `__packet_count`,
  `__octet_count` (name-mangled): what aiortc's own RTCP loop puts in its Sender
  Reports. `SrtpWire.report` sets them, so the reports pair each RTP timestamp with
  its capture time and count what the wire sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpSender

ICE_COMPONENT_RTP = 1
_SENDER = "_RTCRtpSender__"
REPORT_FIELDS = ("ntp_timestamp", "rtp_timestamp", "packet_count", "octet_count")


def loopback_only() -> None:
    """aioice gathers host candidates on 127.0.0.1 only (the node is local)."""
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]


@dataclass(frozen=True)
class SentTrack:
    """A negotiated sending track: its SSRC and payload type, and its aiortc sender."""

    ssrc: int
    payload_type: int
    sender: RTCRtpSender


class SrtpWire:
    """The media path of one connected peer connection (BUNDLE: one DTLS transport)."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        transceivers = [t for t in pc.getTransceivers() if t.sender is not None]
        if not transceivers:
            raise RuntimeError("no sending transceiver")
        dtls = transceivers[0].sender.transport
        if dtls._tx_srtp is None:
            raise ConnectionError("DTLS has not keyed SRTP yet")
        pair = dtls.transport._connection._nominated.get(ICE_COMPONENT_RTP)
        if pair is None:
            raise ConnectionError("ICE has no nominated pair")
        self._protect = dtls._tx_srtp.protect
        self._sendto = pair.protocol.transport.sendto
        self._remote = pair.remote_addr
        self.tracks: dict[str, SentTrack] = {}
        for t in transceivers:
            codec = next(c for c in t._codecs if c.name.lower() != "rtx")
            self.tracks[t.kind] = SentTrack(t.sender._ssrc, codec.payloadType, t.sender)

    def send(self, packet: bytes) -> None:
        self._sendto(self._protect(packet), self._remote)

    @staticmethod
    def report(sender: RTCRtpSender, ntp_timestamp: int, rtp_timestamp: int, packets: int, octets: int) -> None:
        """What the sender's next Sender Report says (aiortc's RTCP loop sends it)."""
        values = vars(sender)
        values[_SENDER + "ntp_timestamp"] = ntp_timestamp
        values[_SENDER + "rtp_timestamp"] = rtp_timestamp
        values[_SENDER + "packet_count"] = packets & 0xFFFFFFFF
        values[_SENDER + "octet_count"] = octets & 0xFFFFFFFF


def sender_report_fields(sender: RTCRtpSender) -> dict[str, int]:
    """The Sender Report fields aiortc keeps on a sender (for tests)."""
    return {name: vars(sender)[_SENDER + name] for name in REPORT_FIELDS}



def drop_media(pc: RTCPeerConnection) -> None:
    """A receiving peer that drops every datagram but STUN as it arrives (benchmarks.
    swarm_cost's sink): ICE consent keeps working, media costs one read and one test."""
    for transceiver in pc.getTransceivers():
        pair = transceiver.receiver.transport.transport._connection._nominated.get(ICE_COMPONENT_RTP)
        if pair is not None:
            handle = pair.protocol.datagram_received
            pair.protocol.datagram_received = lambda data, addr, handle=handle: data[0] < 4 and handle(data, addr)
