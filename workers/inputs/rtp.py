"""Plain RTP over UDP: one socket pair per announced track.

Each socket latches onto the first source address it hears from (and each track
onto its first SSRC); datagrams from anyone else are counted and ignored, and so
is anything that does not parse. RTCP is accepted on port + 1 and, muxed, on
the RTP port itself (RFC 5761).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass, fields

import structlog
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtcpSrPacket, RtpPacket, is_rtcp

from workers.codecs import h264
from workers.config import TrackSpec, WorkerConfig
from workers.frames import MediaKind
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput
from workers.jitter import JitterBuffer
from workers.tracks import AudioTrack, VideoTrack

log = structlog.get_logger("rtp")

KEYFRAME_REQUEST_MIN_INTERVAL_S = 0.5
# A key frame arrives as a burst of packets (100+ at 8 Mbps); the kernel's default
# receive buffer drops part of it. Ask for more (root may exceed net.core.rmem_max).
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
MAX_EARLY_REPORTS = 4

Address = tuple[str, int]


@dataclass
class SocketStats:
    datagrams: int = 0
    bytes: int = 0
    garbage: int = 0
    foreign: int = 0
    rtcp: int = 0
    sender_reports: int = 0


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP socket that latches onto its first source."""

    def __init__(self, on_datagram, stats: SocketStats):
        self._on_datagram = on_datagram
        self.stats = stats
        self.source: Address | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        source = (addr[0], addr[1])
        if self.source is None:
            self.source = source
        elif source != self.source:
            self.stats.foreign += 1
            return
        self.stats.datagrams += 1
        self.stats.bytes += len(data)
        self._on_datagram(data)

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)


def enlarge_receive_buffer(sock: socket.socket, size: int = RECEIVE_BUFFER_BYTES) -> int:
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:
            continue
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class RtpTrackReceiver:
    def __init__(self, spec: TrackSpec, config: WorkerConfig, port: int, on_frame: FrameHandler,
                 on_sender_report: SenderReportHandler):
        self.spec = spec
        self.port = port
        self._bind_host = config.bind_host
        self._on_frame = on_frame
        self._on_sender_report = on_sender_report
        self.stats = SocketStats()
        video = spec.kind is MediaKind.VIDEO
        self.jitter = JitterBuffer(frame_per_packet=not video, max_wait=config.jitter_max_wait_s,
                                   starts_frame=h264.payload_starts_frame if video else None)
        if spec.kind is MediaKind.VIDEO:
            self.track: VideoTrack | AudioTrack = VideoTrack(spec, self.request_keyframe)
        else:
            self.track = AudioTrack(spec)
        self.remote_ssrc: int | None = None
        # Senders often report before their first RTP packet: keep reports until the SSRC is known.
        self._early_reports: dict[int, tuple[int, int]] = {}
        self._local_ssrc = random.getrandbits(32)
        self._rtp = _Endpoint(self._on_rtp_socket, self.stats)
        self._rtcp = _Endpoint(self._on_rtcp, self.stats)
        self._last_keyframe_request = float("-inf")
        self.max_release_delay_s = 0.0
        self.last_packet: float | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self._rtp, local_addr=(self._bind_host, self.port))
        enlarge_receive_buffer(transport.get_extra_info("socket"))
        try:
            await loop.create_datagram_endpoint(lambda: self._rtcp, local_addr=(self._bind_host, self.port + 1))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for endpoint in (self._rtp, self._rtcp):
            if endpoint.transport is not None:
                endpoint.transport.close()

    def _on_rtp_socket(self, data: bytes) -> None:
        if is_rtcp(data):
            self._on_rtcp(data)
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.stats.garbage += 1
            return
        if packet.payload_type != self.spec.payload_type:
            self.stats.garbage += 1
            return
        if self.remote_ssrc is None:
            self.remote_ssrc = packet.ssrc
            early = self._early_reports.pop(packet.ssrc, None)
            self._early_reports.clear()
            if early is not None:
                self._on_sender_report(self.spec.kind, *early)
        elif packet.ssrc != self.remote_ssrc:
            self.stats.foreign += 1
            return
        now = time.monotonic()
        self.last_packet = now
        self._release(self.jitter.push(packet, now), now)

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            self.stats.garbage += 1
            return
        self.stats.rtcp += 1
        for packet in packets:
            if not isinstance(packet, RtcpSrPacket):
                continue
            info = packet.sender_info
            if packet.ssrc == self.remote_ssrc:
                self.stats.sender_reports += 1
                self._on_sender_report(self.spec.kind, info.ntp_timestamp, info.rtp_timestamp)
            elif self.remote_ssrc is None and len(self._early_reports) < MAX_EARLY_REPORTS:
                self._early_reports[packet.ssrc] = (info.ntp_timestamp, info.rtp_timestamp)

    def tick(self, now: float) -> None:
        self._release(self.jitter.poll(now), now)

    def _release(self, frames, now: float) -> None:
        for assembled in frames:
            self.max_release_delay_s = max(self.max_release_delay_s, now - assembled.arrival)
            frame = self.track.accept(assembled)
            if frame is not None:
                self._on_frame(frame)

    def request_keyframe(self) -> None:
        now = time.monotonic()
        if self.remote_ssrc is None or now - self._last_keyframe_request < KEYFRAME_REQUEST_MIN_INTERVAL_S:
            return
        self._last_keyframe_request = now
        pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._local_ssrc, media_ssrc=self.remote_ssrc))
        if self._rtcp.source is not None:
            self._rtcp.send(pli, self._rtcp.source)
        elif self._rtp.source is not None:
            self._rtp.send(pli, self._rtp.source)  # the publisher may mux RTCP on its RTP port

    def stats_dict(self) -> dict[str, float]:
        result: dict[str, float] = {f.name: getattr(self.stats, f.name) for f in fields(self.stats)}
        jitter = self.jitter.stats
        result.update({f"jitter_{f.name}": getattr(jitter, f.name) for f in fields(jitter)})
        gate = self.track.stats
        result.update({f.name: getattr(gate, f.name) for f in fields(gate)})
        result["max_release_delay_s"] = round(self.max_release_delay_s, 4)
        return result


class RtpInput(StreamInput):
    def __init__(self, config: WorkerConfig, on_frame: FrameHandler, on_sender_report: SenderReportHandler):
        super().__init__(on_frame, on_sender_report)
        self.receivers = [
            RtpTrackReceiver(track, config, port, on_frame, on_sender_report)
            for track, port in zip(config.stream.tracks, config.rtp_ports, strict=True)
        ]

    async def start(self) -> None:
        started: list[RtpTrackReceiver] = []
        try:
            for receiver in self.receivers:
                await receiver.start()
                started.append(receiver)
        except OSError:
            for receiver in started:
                receiver.close()
            raise

    def request_keyframe(self) -> None:
        for receiver in self.receivers:
            if receiver.spec.kind is MediaKind.VIDEO:
                receiver.request_keyframe()

    def tick(self, now: float) -> None:
        for receiver in self.receivers:
            receiver.tick(now)

    def stats(self) -> dict[str, dict[str, float]]:
        return {r.spec.kind.value: r.stats_dict() for r in self.receivers}

    @property
    def last_packet(self) -> float | None:
        times = [r.last_packet for r in self.receivers if r.last_packet is not None]
        return max(times) if times else None

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.close()
