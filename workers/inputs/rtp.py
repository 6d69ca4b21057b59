"""Plain RTP over UDP: one socket pair per announced track.

Each socket latches onto the first source address it hears from; datagrams from
anyone else are counted (`foreign`) and ignored, and so is anything that does not
parse or has another payload type (`garbage`). RTCP is accepted on port + 1 and,
muxed, on the RTP port itself (RFC 5761). Sockets are drained on the worker's tick,
not per datagram (`workers.inputs.udp` says why).

What follows the parse is `workers.inputs.track_pipe.TrackPipe`, shared with the
WebRTC input: SSRC latching (other SSRCs are counted as `foreign` too), early Sender
Reports, jitter buffer, depayloading, key-frame request policy. A key-frame request
is an RTCP PLI sent to the publisher's RTCP address, or to its RTP address when it
has sent no RTCP from port + 1 (it may mux RTCP on its RTP port).
"""

from __future__ import annotations

import random
import struct
from dataclasses import fields

from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, is_rtcp

from contract.worker import TrackSpec, WorkerConfig
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput
from workers.inputs.track_pipe import TrackPipe
from workers.inputs.udp import PolledUdpSocket, SocketStats

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
    """One announced track: its socket pair, parsing, and the track's `TrackPipe`."""

    def __init__(self, spec: TrackSpec, config: WorkerConfig, port: int, on_frame: FrameHandler,
                 on_sender_report: SenderReportHandler):
        self.spec = spec
        self.port = port
        self._bind_host = config.bind_host
        self.stats = SocketStats()
        self._local_ssrc = random.getrandbits(32)
        self._rtp = PolledUdpSocket(self.stats)
        self._rtcp = PolledUdpSocket(self.stats)
        self.pipe = TrackPipe(spec, config.tuning.jitter_max_wait_s, on_frame, on_sender_report, self._send_pli)
        self._push = self.pipe.push
        self._payload_type = spec.payload_type

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
        if packet.payload_type != self._payload_type:
            self.stats.garbage += 1
            return
        self._push(packet, arrival)

    def _on_rtcp(self, data: bytes, arrival: float) -> None:  # noqa: ARG002 (a DatagramHandler)
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            self.stats.garbage += 1
            return
        self.stats.rtcp += 1
        for packet in packets:
            self.pipe.on_rtcp(packet)

    def drain_rtcp(self) -> None:
        self._rtcp.drain(self._on_rtcp)

    def tick(self, now: float) -> None:
        """Take in the waiting RTP (and muxed RTCP), release what is due by `now`."""
        self._rtp.drain(self._on_rtp_socket)
        self.pipe.tick(now)

    def _send_pli(self, ssrc: int, method: str) -> None:  # noqa: ARG002 (always "pli")
        pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._local_ssrc, media_ssrc=ssrc))
        if self._rtcp.source is not None:
            self._rtcp.send(pli, self._rtcp.source)
        elif self._rtp.source is not None:
            self._rtp.send(pli, self._rtp.source)  # the publisher may mux RTCP on its RTP port

    @property
    def last_packet(self) -> float | None:
        return self.pipe.last_packet

    def stats_dict(self) -> dict[str, float]:
        result: dict[str, float] = {f.name: getattr(self.stats, f.name) for f in fields(self.stats)}
        pipe = self.pipe.stats_dict()
        result["foreign"] += pipe.pop("foreign")  # other source addresses + other SSRCs
        result.update(pipe)
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
            receiver.pipe.request_keyframe()  # audio: no-op

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
