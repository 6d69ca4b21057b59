"""Plain RTP over UDP: one socket pair per announced track.

Each socket latches onto the first source address it hears from (and each track
onto its first SSRC); datagrams from anyone else are counted and ignored, and so
is anything that does not parse. RTCP is accepted on port + 1 and, muxed, on
the RTP port itself (RFC 5761). Sockets are drained on the worker's tick, not
per datagram (`workers.inputs.udp` says why).
"""

from __future__ import annotations

import random
import struct
from time import monotonic
from dataclasses import fields

import structlog
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtcpSrPacket, is_rtcp

from workers.codecs import h264
from workers.config import TrackSpec, WorkerConfig
from workers.frames import MediaKind
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput
from workers.inputs.udp import PolledUdpSocket, SocketStats
from workers.jitter import JitterBuffer
from workers.tracks import AudioTrack, VideoTrack

log = structlog.get_logger("rtp")

KEYFRAME_REQUEST_MIN_INTERVAL_S = 0.5
MAX_EARLY_REPORTS = 4
_RTP_HEADER = struct.Struct("!BBHII")


class RtpDatagram:
    """The fields of one RTP packet the record path uses (the jitter buffer also takes
    aiortc's RtpPacket, which has them too). Parsed here rather than with aiortc's
    `RtpPacket.parse`, which costs ~3 us more per packet for header extensions we drop."""

    __slots__ = ("marker", "payload", "payload_type", "sequence_number", "ssrc", "timestamp")

    def __init__(self, marker: int, payload_type: int, sequence_number: int, timestamp: int, ssrc: int,
                 payload: bytes):
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload

    @classmethod
    def parse(cls, data: bytes) -> RtpDatagram:
        """RFC 3550 5.1; raises ValueError like aiortc's parser on a malformed packet."""
        if len(data) < _RTP_HEADER.size:
            raise ValueError("RTP packet shorter than its header")
        first, second, sequence_number, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise ValueError("RTP packet has invalid version")
        start = _RTP_HEADER.size + 4 * (first & 0x0F)  # CSRCs
        if first & 0x10:  # header extension
            if len(data) < start + 4:
                raise ValueError("RTP packet has a truncated extension header")
            start += 4 + 4 * int.from_bytes(data[start + 2:start + 4], "big")
        end = len(data)
        if first & 0x20:  # padding
            end -= data[-1]
            if data[-1] == 0 or end < start:
                raise ValueError("RTP packet padding length is invalid")
        if start > end:
            raise ValueError("RTP packet is truncated")
        return cls(second >> 7, second & 0x7F, sequence_number, timestamp, ssrc, data[start:end])


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
        self._rtp = PolledUdpSocket(self.stats)
        self._rtcp = PolledUdpSocket(self.stats)
        self._last_keyframe_request = float("-inf")
        self.max_release_delay_s = 0.0
        self.last_packet: float | None = None

    async def start(self) -> None:
        self._rtp.bind(self._bind_host, self.port)
        try:
            self._rtcp.bind(self._bind_host, self.port + 1)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        self._rtp.close()
        self._rtcp.close()

    def _on_rtp_socket(self, data: bytes, arrival: float) -> None:
        if is_rtcp(data):
            self._on_rtcp(data, arrival)
            return
        try:
            packet = RtpDatagram.parse(data)
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
        self.last_packet = arrival
        self._release(self.jitter.push(packet, arrival), arrival)

    def _on_rtcp(self, data: bytes, arrival: float) -> None:  # noqa: ARG002 (a DatagramHandler)
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

    def drain_rtcp(self) -> None:
        self._rtcp.drain(self._on_rtcp)

    def tick(self, now: float) -> None:
        """Take in the waiting RTP (and muxed RTCP), release what is due by `now`."""
        self._rtp.drain(self._on_rtp_socket)
        self._release(self.jitter.poll(now), now)

    def _release(self, frames, now: float) -> None:
        for assembled in frames:
            self.max_release_delay_s = max(self.max_release_delay_s, now - assembled.arrival)
            frame = self.track.accept(assembled)
            if frame is not None:
                self._on_frame(frame)

    def request_keyframe(self) -> None:
        now = monotonic()
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
        for receiver in self.receivers:  # Sender Reports first: they may describe the packets that follow
            receiver.drain_rtcp()
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
