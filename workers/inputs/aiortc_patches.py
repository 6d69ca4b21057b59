"""Every place recnode reaches into aiortc / aioice internals, in one module.

aiortc (pinned to 1.16.x) has no public API for encoded frames: its receiver
depayloads, reassembles with a jitter buffer that stalls on unrecovered loss, and
decodes. A recorder needs the encoded frames, with a bounded wait on loss, and must
never decode. tests/workers/test_aiortc_internals.py asserts that everything used
here still exists with the expected shape, so an aiortc / aioice upgrade fails
loudly instead of silently decoding or dropping media.

Global patches, applied by `install()` (idempotent; `workers.inputs.webrtc` calls it
at import). Worker processes are forked per stream, so a patch is per process:

1. `aiortc.rtcrtpreceiver.get_decoder` -> `_never_decode`: a "decoder" that drops
   whatever it is given. Nothing should reach it at all (see `hook_receiver`), but if
   an aiortc change ever routed frames to the decoder thread again, they would be
   dropped, never decoded.
2. `aiortc.rtcrtpreceiver.depayload` -> identity. aiortc depayloads every packet before
   its jitter buffer and DROPS the packet when its depayloader raises (H.264: 1-byte NAL
   units, odd STAP-A; VP8: a truncated descriptor): that would turn into a permanent
   hole for our buffer. We depayload whole frames ourselves (`VideoCodec.depayload` in
   `workers.codecs`), from `packet.payload`, which aiortc leaves untouched.
3. `aiortc.codecs.CODECS["video"]` gains H.264 Main (4d001f), High (64001f) and
   Constrained High (640c1f), packetization-mode 1, each with RTX; every H.264 entry
   gains the `ccm fir` feedback. aiortc matches H.264 by profile (not level), so these
   entries let it answer Main/High offers at all.
4. `aioice.ice.Connection.get_component_candidates`: while the context variable
   `ICE_BINDING` is set (by `WebRtcInput.accept_offer`, around ICE gathering), host
   candidates come from its addresses (aioice otherwise gathers every interface and
   always skips 127.0.0.1) and, with a port range, are bound inside it.
5. `aioice.ice.Connection.query_consent` -> `_query_consent_or_media` and
   `Connection.data_received` stamps when the peer last sent anything. Consent
   freshness (RFC 7675) is unchanged for a peer that answers; one that stops
   answering while its media keeps arriving is kept (FFmpeg's WHIP muxer answers no
   consent checks once it sends media: aioice would cut it off after ~30 s). A peer
   that neither answers nor sends is gone, as before.

Per-receiver hooks (`hook_receiver`, applied to each receiver of our own peer
connections right after `setRemoteDescription`, before any media can arrive):

6. The receiver's private `JitterBuffer` (`_RTCRtpReceiver__jitter_buffer`) is replaced
   by `_PacketTap`, whose `add(packet)` hands the packet to our sink and returns
   `(False, None)`: aiortc never assembles a frame, so its decoder queue stays empty.
   The packet arrives there after everything we want aiortc to do: SRTP, routing,
   statistics (RTCP RR), REMB, RTX unwrapping and NACK generation.
7. `receiver._handle_rtcp_packet` is wrapped (instance attribute) so the sink sees
   Sender Reports and BYE before aiortc's own handling (RR statistics) runs.
8. `receiver._send_rtcp_nack` is wrapped to count NACKs.

9. `IcePoller`: once a peer connection is connected, its ICE sockets (the aioice
   `StunProtocol`s of each `RTCIceTransport._connection`) leave the event loop's
   selector and are read on the worker's tick, each datagram handed to the protocol's
   `datagram_received` as asyncio would have (the reason is plain RTP's,
   `workers.inputs.udp`: a wakeup per datagram costs more than the datagram).

Also used, not patched: `receiver._send_rtcp_pli(ssrc)` (PLI), `receiver._send_rtcp`
and `transceiver.sender._ssrc` (FIR), `transceiver._codecs` (the negotiated codecs,
to check the choice and echo the offered profile-level-id).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aioice.ice
import aiortc.codecs
import aiortc.rtcrtpreceiver
import structlog
from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.turn import UDP_SOCKET_BUFFER_SIZE
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_FIR, RtcpPsfbPacket, RtpPacket

from workers.inputs.udp import enlarge_receive_buffer

log = structlog.get_logger("webrtc")

EXTRA_H264_PROFILE_LEVEL_IDS = ("4d001f", "64001f", "640c1f")  # Main, High, Constrained High
FIR_FEEDBACK = RTCRtcpFeedback(type="ccm", parameter="fir")
_RECEIVER_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_MARK = "__recnode_patch__"


# -- 1. never decode --------------------------------------------------------------


class _NeverDecode:
    """Stands in for aiortc's decoders: drops frames, logs once."""

    warned = False

    def decode(self, encoded_frame: Any) -> list:
        if not _NeverDecode.warned:
            _NeverDecode.warned = True
            log.error("aiortc_decoder_reached", note="an encoded frame reached aiortc's decoder thread; dropped")
        return []


def _never_decode(codec: Any) -> _NeverDecode:
    return _NeverDecode()


# -- 2. no per-packet depayloading -----------------------------------------------------


def _keep_payload(codec: Any, payload: bytes) -> bytes:
    return payload


# -- 3. H.264 profiles -------------------------------------------------------------


def _register_h264_profiles() -> None:
    video = aiortc.codecs.CODECS["video"]
    known = {str(c.parameters.get("profile-level-id", "")).lower() for c in video if c.name == "H264"}
    payload_type = max(c.payloadType for c in video) + 1
    for profile_level_id in EXTRA_H264_PROFILE_LEVEL_IDS:
        if profile_level_id in known:
            continue
        video.append(RTCRtpCodecParameters(
            mimeType="video/H264", clockRate=90000, payloadType=payload_type,
            rtcpFeedback=[RTCRtcpFeedback(type="nack"), RTCRtcpFeedback(type="nack", parameter="pli"),
                          RTCRtcpFeedback(type="goog-remb")],
            parameters={"level-asymmetry-allowed": "1", "packetization-mode": "1",
                        "profile-level-id": profile_level_id},
        ))
        video.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=payload_type + 1,
                                           parameters={"apt": payload_type}))
        payload_type += 2
    for codec in video:
        if codec.name == "H264" and FIR_FEEDBACK not in codec.rtcpFeedback:
            codec.rtcpFeedback.append(FIR_FEEDBACK)


# -- 4. ICE host candidates -----------------------------------------------------------


@dataclass(frozen=True)
class IceBinding:
    addresses: tuple[str, ...]
    port_range: tuple[int, int] | None = None


ICE_BINDING: contextvars.ContextVar[IceBinding | None] = contextvars.ContextVar("recnode_ice_binding", default=None)
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates


async def _get_component_candidates(self: aioice.ice.Connection, component: int, addresses: list[str],
                                    timeout: int = 5) -> list[Candidate]:
    binding = ICE_BINDING.get()
    if binding is None:
        return await _original_get_component_candidates(self, component, addresses, timeout)
    if binding.port_range is None:
        return await _original_get_component_candidates(self, component, list(binding.addresses), timeout)
    return await _bind_in_range(self, component, binding.addresses, binding.port_range)


async def _bind_in_range(connection: aioice.ice.Connection, component: int, addresses: tuple[str, ...],
                         port_range: tuple[int, int]) -> list[Candidate]:
    """Host candidates only (we never configure STUN/TURN), as aioice builds them, on a
    free port of `port_range` (inclusive), tried from a random start."""
    loop = asyncio.get_running_loop()
    low, high = port_range
    candidates: list[Candidate] = []
    for address in addresses:
        ports = list(range(low, high + 1))
        start = random.randrange(len(ports))
        for port in ports[start:] + ports[:start]:
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port))
            except OSError:
                continue
            break
        else:
            raise OSError(f"no free UDP port on {address} in {low}-{high}")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        host, bound_port = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
            priority=candidate_priority(component, "host"), host=host, port=bound_port, type="host")
        connection._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    return candidates


# -- 5. consent freshness, or media ------------------------------------------------------

_LAST_DATA_ATTR = "_recnode_last_data"
_original_data_received = aioice.ice.Connection.data_received


def _stamped_data_received(self: aioice.ice.Connection, data: bytes, component: int) -> None:
    setattr(self, _LAST_DATA_ATTR, time.monotonic())
    _original_data_received(self, data, component)


async def _query_consent_or_media(self: aioice.ice.Connection) -> None:
    """Every ~CONSENT_INTERVAL, a binding request on each nominated pair; after
    CONSENT_FAILURES unanswered rounds in a row the connection is closed, unless the
    peer's media arrived within that time (read at run time: tests shorten both)."""
    failures = 0
    silent_since_logged = False
    password = self.remote_password.encode("utf8") if self.remote_password else b""
    while True:
        await asyncio.sleep(aioice.ice.CONSENT_INTERVAL * random.uniform(0.8, 1.2))
        for pair in self._nominated.values():
            try:
                await pair.protocol.request(self.build_request(pair, nominate=False), pair.remote_addr,
                                            integrity_key=password, retransmissions=0)
                failures = 0
            except stun.TransactionError:
                failures += 1
        if failures < aioice.ice.CONSENT_FAILURES:
            continue
        window = aioice.ice.CONSENT_INTERVAL * aioice.ice.CONSENT_FAILURES
        last_data = getattr(self, _LAST_DATA_ATTR, None)
        if last_data is not None and time.monotonic() - last_data < window:
            if not silent_since_logged:
                silent_since_logged = True
                log.info("webrtc_consent_unanswered", note="peer answers no consent checks; kept while its "
                                                           "media arrives")
            failures = 0
            continue
        log.info("webrtc_consent_expired")
        self._query_consent_task = None
        await self.close()
        return


# -- 9. ICE sockets read on the tick ------------------------------------------------------

MAX_DATAGRAM_BYTES = 65535


class IcePoller:
    """Reads a connected peer connection's ICE sockets when `drain()` is called."""

    def __init__(self) -> None:
        self._readers: list[tuple[socket.socket, aioice.ice.StunProtocol]] = []

    def start(self, pc: aiortc.RTCPeerConnection) -> None:
        """Take the sockets out of the selector (idempotent per socket)."""
        polled = {protocol for _, protocol in self._readers}
        connections = {t.receiver.transport.transport._connection for t in pc.getTransceivers()}
        for connection in connections:
            for protocol in connection._protocols:
                transport = getattr(protocol, "transport", None)
                sock = transport.get_extra_info("socket") if transport is not None else None
                if protocol in polled or sock is None or transport.is_closing():
                    continue
                transport.pause_reading()  # out of the selector; sending is unaffected
                # A duplicate descriptor of the same socket: asyncio keeps (and closes) its own.
                reader = socket.socket(fileno=os.dup(sock.fileno()))
                reader.setblocking(False)
                enlarge_receive_buffer(reader)  # read every tick now: hold bursts in between
                self._readers.append((reader, protocol))

    @property
    def polled(self) -> int:
        """ICE sockets read on the tick now."""
        return len(self._readers)

    def drain(self) -> None:
        for reader, protocol in list(self._readers):
            if protocol.transport.is_closing():
                self._forget(reader, protocol)
                continue
            while True:
                try:
                    data, addr = reader.recvfrom(MAX_DATAGRAM_BYTES)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self._forget(reader, protocol)
                    break
                _guarded("ice", protocol.datagram_received, data, addr)

    def _forget(self, reader: socket.socket, protocol: aioice.ice.StunProtocol) -> None:
        self._readers.remove((reader, protocol))
        reader.close()

    def close(self) -> None:
        for reader, _ in self._readers:
            reader.close()
        self._readers.clear()


# -- install --------------------------------------------------------------------------


def install() -> None:
    """Apply the global patches once per process (later calls do nothing)."""
    if getattr(aiortc.rtcrtpreceiver, _MARK, False):
        return
    aiortc.rtcrtpreceiver.get_decoder = _never_decode
    aiortc.rtcrtpreceiver.depayload = _keep_payload
    _register_h264_profiles()
    aioice.ice.Connection.get_component_candidates = _get_component_candidates
    aioice.ice.Connection.data_received = _stamped_data_received
    aioice.ice.Connection.query_consent = _query_consent_or_media
    setattr(aiortc.rtcrtpreceiver, _MARK, True)


def installed() -> bool:
    return bool(getattr(aiortc.rtcrtpreceiver, _MARK, False))


# -- 5-7. per-receiver hooks ------------------------------------------------------------


class PacketSink(Protocol):
    def on_rtp(self, packet: RtpPacket) -> None: ...

    def on_rtcp(self, packet: Any) -> None: ...

    def on_nack(self, lost: list[int]) -> None: ...


def _guarded(what: str, fn: Callable[..., None], *args: Any) -> None:
    # An exception escaping into aiortc's receive loop would close the DTLS transport.
    try:
        fn(*args)
    except Exception:
        log.exception("webrtc_sink_failed", stage=what)


class _PacketTap:
    """Takes the place of aiortc's JitterBuffer inside one RTCRtpReceiver."""

    def __init__(self, sink: PacketSink):
        self._sink = sink

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        _guarded("rtp", self._sink.on_rtp, packet)
        return False, None


def hook_receiver(receiver: aiortc.RTCRtpReceiver, sink: PacketSink) -> None:
    if not hasattr(receiver, _RECEIVER_JITTER_ATTR):
        raise RuntimeError("aiortc changed: RTCRtpReceiver has no private jitter buffer to replace")
    setattr(receiver, _RECEIVER_JITTER_ATTR, _PacketTap(sink))

    handle_rtcp = receiver._handle_rtcp_packet
    send_nack = receiver._send_rtcp_nack

    async def _handle_rtcp_packet(packet: Any) -> None:
        _guarded("rtcp", sink.on_rtcp, packet)
        await handle_rtcp(packet)

    async def _send_rtcp_nack(media_ssrc: int, lost: list[int]) -> None:
        _guarded("nack", sink.on_nack, lost)
        await send_nack(media_ssrc, lost)

    receiver._handle_rtcp_packet = _handle_rtcp_packet  # type: ignore[method-assign]
    receiver._send_rtcp_nack = _send_rtcp_nack  # type: ignore[method-assign]


async def send_pli(receiver: aiortc.RTCRtpReceiver, media_ssrc: int) -> None:
    await receiver._send_rtcp_pli(media_ssrc)


async def send_fir(transceiver: aiortc.RTCRtpTransceiver, media_ssrc: int, sequence: int) -> None:
    """RFC 5104 FIR: media SSRC 0, FCI = target SSRC, command sequence number, 3 reserved bytes."""
    fci = media_ssrc.to_bytes(4, "big") + bytes([sequence & 0xFF, 0, 0, 0])
    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=transceiver.sender._ssrc, media_ssrc=0, fci=fci)
    await transceiver.receiver._send_rtcp(packet)


def negotiated_codecs(transceiver: aiortc.RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs the answer will list for this transceiver (aiortc's private `_codecs`)."""
    return transceiver._codecs


__all__ = [
    "EXTRA_H264_PROFILE_LEVEL_IDS", "FIR_FEEDBACK", "ICE_BINDING", "IceBinding", "PacketSink", "hook_receiver", "install", "installed", "negotiated_codecs", "send_fir", "send_pli",
]
