"""Plain RTP (and SRTP) over UDP: one socket pair per announced track.

Whom a track listens to: the RTP socket follows one source address. It takes the
first datagram that is valid media of the offer (RTP with the offer's payload type,
and SSRC where the offer named one with a=ssrc; with SRTP, authenticated with the
publisher's key), never a stray datagram, so one `hello` to a guessed port cannot
take a stream over. From then on other addresses are counted (`foreign`) and ignored
until the followed one has sent no media for `MediaTuning.rtp_source_silence_s` (2 s by
default, contract.tuning.RTP_SOURCE_SILENCE_S); then the next valid
stream from elsewhere is followed (`source_changes`: a publisher that restarted on
another port). With --rtp-pin-source only the announcer's host is heard at all.
Anything that does not parse or has another payload type is `garbage`; SRTP packets
that do not authenticate are `srtp_auth_failures`, replayed ones `srtp_replays`.

RTCP is accepted on port + 1 and, muxed, on the RTP port itself (RFC 5761), from the
host media comes from (from any host before media has come: senders often report
first). Sockets are drained on the worker's tick, not per datagram
(`workers.inputs.udp` says why).

What follows the parse is `workers.inputs.track_pipe.TrackPipe`, shared with the
WebRTC input: SSRC latching (other SSRCs are counted as `foreign` too), early Sender
Reports, jitter buffer, depayloading, key-frame request policy. A key-frame request
is an RTCP PLI (SRTCP with SRTP) sent from the socket the publisher's latest RTCP
came in on back to its sender, or to its RTP address when it has sent none.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import fields

import structlog
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, is_rtcp

from contract.worker import TrackSpec, WorkerConfig
from workers.clock import TrackClock
from workers.inputs.base import FrameHandler, SenderReportHandler, StreamInput
from workers.inputs.srtp import SrtpError, SrtpTransform, is_auth_failure, is_replay
from workers.inputs.track_pipe import TrackPipe
from workers.inputs.udp import Address, PolledUdpSocket, SocketStats

log = structlog.get_logger("rtp")

_RTP_HEADER = struct.Struct("!BBHII")
_RTCP_LOOKALIKE_PT = range(64, 81)  # RTCP packet types 192-208 with the marker bit cleared


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


def _host(text: str) -> object:
    """A host comparable across notations (an IPv4-mapped IPv6 address is its IPv4 one)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _ignore(*_args: object) -> None:
    pass


def check_track(spec: TrackSpec) -> None:
    """Build what a worker builds for `spec`, without sockets; ValueError if it cannot.
    The engine calls this on every announced track, so a worker never fails to start on
    what an offer said."""
    TrackClock(spec.clock_rate)
    TrackPipe(spec, 0.0, _ignore, _ignore, _ignore)
    if spec.srtp_suite:
        SrtpTransform(spec.srtp_suite, spec.srtp_remote_key, spec.srtp_local_key)


class RtpTrackReceiver:
    """One announced track: its socket pair, source following, SRTP, parsing, and the
    track's `TrackPipe`."""

    def __init__(self, spec: TrackSpec, config: WorkerConfig, port: int, on_frame: FrameHandler,
                 on_sender_report: SenderReportHandler):
        self.spec = spec
        self.port = port
        self._bind_host = config.bind_host
        self.stats = SocketStats()
        self.source_changes = 0
        self.srtp_auth_failures = 0
        self.srtp_replays = 0
        self._local_ssrc = random.getrandbits(32)
        self._rtp = PolledUdpSocket(self.stats)
        self._rtcp = PolledUdpSocket(self.stats)  # follows nobody: every datagram is checked
        self._rtcp_reply: tuple[PolledUdpSocket, Address] | None = None  # where RTCP last came from
        self.pipe = TrackPipe(spec, config.tuning.jitter_max_wait_s, on_frame, on_sender_report, self._send_pli,
                              source_silence_s=config.tuning.rtp_source_silence_s)
        self._source_silence_s = config.tuning.rtp_source_silence_s
        self._push = self.pipe.push
        self._payload_type = spec.payload_type
        # A payload type RTCP's packet types could be mistaken for (RFC 5761 4) takes the slow path.
        self._fast_payload_type = spec.payload_type if not _RTCP_LOOKALIKE_PT.start <= spec.payload_type \
            < _RTCP_LOOKALIKE_PT.stop else -1
        self._pinned = _host(spec.source_host) if spec.source_host else None
        self._srtp = SrtpTransform(spec.srtp_suite, spec.srtp_remote_key, spec.srtp_local_key) \
            if spec.srtp_suite else None

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

    # the followed source: the hot path (~300 datagrams a second per video track)
    def _on_source(self, datagrams: list[bytes], arrivals: list[float]) -> None:
        """One tick's run of datagrams from the followed source: parsed in one loop (RTP
        version 2 without CSRCs, extension or padding, of the offer's payload type, is
        read inline: what a publisher sends), handed to the pipe as one batch."""
        packets: list[RtpDatagram] = []
        times: list[float] = []
        unprotect = self._srtp.unprotect if self._srtp is not None else None
        fast_pt = self._fast_payload_type
        header = _RTP_HEADER.unpack_from
        for data, arrival in zip(datagrams, arrivals):
            if unprotect is not None and not is_rtcp(data):
                try:
                    data = unprotect(data)
                except (SrtpError, ValueError) as error:
                    self._count_unprotect_failure(error)
                    continue
            if len(data) >= 12 and data[0] == 0x80 and data[1] & 0x7F == fast_pt:
                _, second, sequence_number, timestamp, ssrc = header(data)
                packets.append(RtpDatagram(second >> 7, fast_pt, sequence_number, timestamp, ssrc, data[12:]))
                times.append(arrival)
                continue
            if is_rtcp(data):  # muxed RTCP: the packets before it go first
                if packets:
                    self.pipe.push_many(packets, times)
                    self.pipe.tick(arrival)
                    packets, times = [], []
                self._take_rtcp(data, self._rtp, self._rtp.source)
                continue
            packet = self._media_packet(data)
            if packet is not None:
                packets.append(packet)
                times.append(arrival)
        if packets:
            self.pipe.push_many(packets, times)

    def _media_packet(self, data: bytes) -> RtpDatagram | None:
        try:
            packet = RtpDatagram.parse(data)
        except ValueError:
            self.stats.garbage += 1
            return None
        if packet.payload_type != self._payload_type:
            self.stats.garbage += 1
            return None
        return packet

    def _unprotect(self, data: bytes, rtcp: bool = False) -> bytes | None:
        assert self._srtp is not None
        try:
            return self._srtp.unprotect_rtcp(data) if rtcp else self._srtp.unprotect(data)
        except (SrtpError, ValueError) as error:
            self._count_unprotect_failure(error)
        return None

    def _count_unprotect_failure(self, error: Exception) -> None:
        if isinstance(error, SrtpError) and is_auth_failure(error):
            self.srtp_auth_failures += 1
        elif isinstance(error, SrtpError) and is_replay(error):
            self.srtp_replays += 1
        else:  # too short to be SRTP, or longer than libsrtp's buffer: not a packet of ours
            self.stats.garbage += 1

    # everybody else
    def _on_rtp_stranger(self, data: bytes, source: Address, arrival: float) -> bool:
        """A datagram on the RTP port from another address than the followed one: taken,
        and its sender followed from now on, only if it is valid media of the offer and
        the followed source (if any) has gone silent."""
        if not self._host_allowed(source):
            return False
        followed = self._rtp.source
        if is_rtcp(data):
            if followed is None:  # muxed RTCP before any media (an early Sender Report)
                return self._take_rtcp(data, self._rtp, source)
            self.stats.foreign += 1
            return False
        last = self.pipe.last_packet
        if followed is not None and last is not None and arrival - last < self._source_silence_s:
            self.stats.foreign += 1
            return False
        clear = self._unprotect(data) if self._srtp is not None else data
        if clear is None:
            return False
        packet = self._media_packet(clear)
        if packet is None:
            return False
        if self.spec.ssrc is not None and packet.ssrc != self.spec.ssrc:
            self.stats.foreign += 1
            return False
        self._rtp.source = source
        if followed is not None:
            self.source_changes += 1
        log.info("rtp_source_followed", kind=self.spec.kind.value, port=self.port,
                 source=f"{source[0]}:{source[1]}", previous=f"{followed[0]}:{followed[1]}" if followed else None)
        self._push(packet, arrival)
        return True

    def _on_rtcp_datagram(self, data: bytes, source: Address, arrival: float) -> bool:  # noqa: ARG002
        followed = self._rtp.source
        if not self._host_allowed(source):
            return False
        if followed is not None and source[0] != followed[0]:
            self.stats.foreign += 1
            return False
        return self._take_rtcp(data, self._rtcp, source)

    def _host_allowed(self, source: Address) -> bool:
        if self._pinned is None or _host(source[0]) == self._pinned:
            return True
        self.stats.foreign += 1
        return False

    def _take_rtcp(self, data: bytes, sock: PolledUdpSocket, source: Address) -> bool:
        if self._srtp is not None:
            clear = self._unprotect(data, rtcp=True)
            if clear is None:
                return False
            data = clear
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            self.stats.garbage += 1
            return False
        self.stats.rtcp += 1
        self._rtcp_reply = (sock, source)
        for packet in packets:
            self.pipe.on_rtcp(packet)
        return True

    def drain_rtcp(self) -> None:
        self._rtcp.drain(_ignore, self._on_rtcp_datagram)

    def tick(self, now: float) -> None:
        """Take in the waiting RTP (and muxed RTCP), release what is due by `now`."""
        self._rtp.drain(self._on_source, self._on_rtp_stranger)
        self.pipe.tick(now)

    def _send_pli(self, ssrc: int, method: str) -> None:  # noqa: ARG002 (always "pli")
        source = self._rtp.source
        if source is None:
            return
        pli = bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._local_ssrc, media_ssrc=ssrc))
        if self._srtp is not None:
            try:
                pli = self._srtp.protect_rtcp(pli)
            except SrtpError:
                return
        reply = self._rtcp_reply
        if reply is not None and reply[1][0] == source[0]:
            reply[0].send(pli, reply[1])
        else:
            self._rtp.send(pli, source)  # no RTCP from the publisher's host yet

    @property
    def last_packet(self) -> float | None:
        return self.pipe.last_packet

    def stats_dict(self) -> dict[str, float]:
        result: dict[str, float] = {f.name: getattr(self.stats, f.name) for f in fields(self.stats)}
        result.update(source_changes=self.source_changes, srtp_auth_failures=self.srtp_auth_failures,
                      srtp_replays=self.srtp_replays)
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

    def next_deadline(self) -> float | None:
        return min((d for r in self.receivers if (d := r.pipe.next_deadline()) is not None), default=None)

    def stats(self) -> dict[str, dict[str, float]]:
        return {r.spec.kind.value: r.stats_dict() for r in self.receivers}

    @property
    def last_packet(self) -> float | None:
        times = [r.last_packet for r in self.receivers if r.last_packet is not None]
        return max(times) if times else None

    def close(self) -> None:
        for receiver in self.receivers:
            receiver.close()
