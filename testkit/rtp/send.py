"""The publisher process: it sends a ``plan`` over real UDP sockets, paced in real
time, with RTCP Sender Reports (and BYE, junk and foreign datagrams when asked),
collects what comes back, and writes its ``Manifest`` when it is done or stopped
by SIGTERM. ``start_publisher`` is the side of the test or harness that starts it."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiortc.rtp import RtcpByePacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket

from testkit.process import start_module
from testkit.rtp.manifest import Manifest, SentPacket, SentReport, write_manifest
from testkit.rtp.plan import PlannedTrack, plan
from testkit.rtp.spec import CLOCK_RATES, PublisherSpec, Target
from testkit.sender_reports import hostile_reports

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

Action = Callable[[], None]


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    seconds = int(t // 1)
    fraction = int(round((t - seconds) * (1 << 32)))
    return (((seconds + NTP_UNIX_OFFSET) << 32) + fraction) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def _open_udp(target_host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1" if target_host.startswith("127.") else "", 0))
    sock.setblocking(False)
    return sock


@dataclass
class _Wire:
    """A planned track on its way out: its sockets and what it has sent so far."""

    track: PlannedTrack
    rtp_target: Target
    rtcp_target: Target | None
    rtp_sock: socket.socket
    rtcp_sock: socket.socket | None
    packet_count: int = 0
    octet_count: int = 0


class _Stopped(Exception):
    """Raised by the SIGTERM handler to end the send loop."""


# Python runs a signal's handler between bytecodes, possibly well after the signal came
# (even inside a region the signal was blocked for at the OS level): an action in progress
# is finished first, so no packet is ever noted without being sent or sent without being noted.
_acting = {"now": False, "stop": False}


def _on_sigterm(signum, frame):  # noqa: ARG001
    if _acting["now"]:
        _acting["stop"] = True
        return
    raise _Stopped()


class _Publisher:
    def __init__(self, spec: PublisherSpec) -> None:
        self.spec = spec
        self.plan = plan(spec)
        self.rng = self.plan.rng
        self.wires: dict[str, _Wire] = {}
        for kind, track in self.plan.tracks.items():
            rtp, rtcp = spec.track(kind).rtp, spec.track(kind).rtcp
            self.wires[kind] = _Wire(track, rtp, rtcp, _open_udp(rtp[0]), _open_udp(rtcp[0]) if rtcp else None)
        host = next((w.rtp_target[0] for w in self.wires.values()), "127.0.0.1")
        self.foreign_sock = _open_udp(host)
        self.foreign_seq = self.plan.foreign_seq
        self.sockets = self._named_sockets()
        tracks = self.plan.tracks
        self.manifest = Manifest(
            spec=spec,
            ssrcs={k: t.ssrc for k, t in tracks.items()},
            ts_bases={k: t.ts_base for k, t in tracks.items()},
            seq_bases={k: t.seq_base for k, t in tracks.items()},
            clock_rates={k: CLOCK_RATES[k] for k in tracks},
            t0_wall=0.0,
            t0_mono=0.0,
            local_ports={name: s.getsockname()[1] for name, s in self.sockets.items()},
            foreign_ssrc=self.plan.foreign_ssrc,
        )

    def _named_sockets(self) -> dict[str, socket.socket]:
        named = {"foreign": self.foreign_sock}
        for kind, wire in self.wires.items():
            named[f"{kind}_rtp"] = wire.rtp_sock
            if wire.rtcp_sock is not None:
                named[f"{kind}_rtcp"] = wire.rtcp_sock
        return named

    # -- schedule ----------------------------------------------------------

    def _schedule(self) -> list[tuple[float, int, Action]]:
        """(time relative to capture 0, priority, action), sorted."""
        rtcp = self.spec.rtcp
        events: list[tuple[float, int, Action]] = []
        for wire in self.wires.values():
            frames = wire.track.frames
            events += [(t, 1, _bind(self._send_frame, wire, pkts)) for t, pkts in frames]
            first, last = frames[0][0], frames[-1][0]
            if rtcp.sender_reports and wire.rtcp_target:
                t = first
                while t <= last:
                    events.append((t, 0, _bind(self._send_sr, wire)))
                    t += rtcp.sr_interval_s
            if rtcp.bye and wire.rtcp_target:
                events.append((last, 2, _bind(self._send_bye, wire)))
        events += self._spread(self.spec.quirks.garbage_datagrams, self._send_garbage)
        events += self._spread(self.spec.quirks.foreign_datagrams, self._send_foreign)
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def _spread(self, count: int, action: Action) -> list:
        return [((i + 0.5) / count * self.plan.duration_s, 1, action) for i in range(count)]

    # -- actions -----------------------------------------------------------

    def _send_frame(self, wire: _Wire, packets: list[SentPacket]) -> None:
        for packet in packets:
            self.manifest.packets.append(packet)
            if not packet.dropped:
                wire.rtp_sock.sendto(packet.datagram, wire.rtp_target)
                packet.sent_wall, packet.sent_mono = time.time(), time.monotonic()
                wire.packet_count += 1
                wire.octet_count += len(packet.payload)
                if not self.spec.keep_sent_bytes:
                    packet.datagram = packet.payload = b""

    def _send_sr(self, wire: _Wire) -> None:
        wall = time.time()
        ntp = ntp_from_unix(wall)
        rtp_ts = wire.track.rtp_timestamp(wall - self.manifest.t0_wall)
        sr = RtcpSrPacket(
            ssrc=wire.track.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_ts,
                packet_count=wire.packet_count,
                octet_count=wire.octet_count,
            ),
        )
        datagram = bytes(sr)
        wire.rtcp_sock.sendto(datagram, wire.rtcp_target)
        if self.spec.quirks.hostile_sender_reports:
            for hostile in hostile_reports(sr):
                wire.rtcp_sock.sendto(bytes(hostile), wire.rtcp_target)
        self.manifest.sender_reports.append(
            SentReport(wire.track.kind, wire.track.ssrc, wall, ntp, rtp_ts, wire.packet_count, wire.octet_count,
                       datagram)
        )

    def _send_bye(self, wire: _Wire) -> None:
        wire.rtcp_sock.sendto(bytes(RtcpByePacket(sources=[wire.track.ssrc])), wire.rtcp_target)

    def _junk_wire(self) -> _Wire:
        return self.wires.get("video") or next(iter(self.wires.values()))

    def _send_garbage(self) -> None:
        wire = self._junk_wire()
        data = bytearray(self.rng.randbytes(self.rng.randint(1, 300)))
        data[0] &= 0x3F  # RTP version 0: never parses as RTP/RTCP
        wire.rtp_sock.sendto(bytes(data), wire.rtp_target)
        self.manifest.garbage_sent += 1

    def _send_foreign(self) -> None:
        wire = self._junk_wire()
        packet = RtpPacket(
            payload_type=self.spec.track(wire.track.kind).payload_type,
            sequence_number=self.foreign_seq & 0xFFFF,
            timestamp=self.rng.getrandbits(32),
            ssrc=self.plan.foreign_ssrc,
            payload=self.rng.randbytes(self.rng.randint(20, 200)),
        )
        self.foreign_seq += 1
        self.foreign_sock.sendto(packet.serialize(), wire.rtp_target)
        self.manifest.foreign_sent += 1

    # -- loop --------------------------------------------------------------

    def _collect_feedback(self, timeout: float) -> None:
        ready, _, _ = select.select(list(self.sockets.values()), [], [], max(0.0, timeout))
        for name, sock in self.sockets.items():
            if sock in ready:
                self._drain(name, sock)

    def _drain(self, name: str, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                return
            self.manifest.feedback.append((time.time(), name, data))

    def _wait_until(self, deadline_mono: float) -> None:
        while (remaining := deadline_mono - time.monotonic()) > 0:
            self._collect_feedback(remaining)

    def _set_clock_origin(self) -> None:
        now_wall, now_mono = time.time(), time.monotonic()
        start = self.spec.start_time if self.spec.start_time is not None else now_wall
        self.manifest.t0_wall = start
        self.manifest.t0_mono = now_mono + (start - now_wall)

    def run(self) -> None:
        events = self._schedule()
        self._set_clock_origin()
        for t, _priority, action in events:
            self._wait_until(self.manifest.t0_mono + t)
            _acting["now"] = True  # a SIGTERM lands between actions (_on_sigterm)
            action()
            _acting["now"] = False
            if _acting["stop"]:
                raise _Stopped()
        self._collect_feedback(0)
        self.manifest.completed = True

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


def _bind(fn: Callable, *args) -> Action:
    return lambda: fn(*args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m testkit.rtp <spec-json>``."""
    argv = sys.argv[1:] if argv is None else argv
    spec = PublisherSpec.from_json(argv[0])
    signal.signal(signal.SIGTERM, _on_sigterm)
    publisher = None
    try:
        # A SIGTERM during set-up is held back until a manifest can be written.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        publisher = _Publisher(spec)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        publisher.run()
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if publisher is not None:
            publisher.manifest.end_wall = time.time()
            write_manifest(publisher.manifest, spec.manifest_path)
            publisher.close()
    return 0


def start_publisher(spec: PublisherSpec, **popen_kwargs) -> subprocess.Popen:
    """Start ``python -m testkit.rtp <spec-json>``.

    A stale file at ``spec.manifest_path`` is removed first, so that
    ``wait_manifest`` only ever sees this run's manifest.
    """
    if spec.manifest_path:
        Path(spec.manifest_path).unlink(missing_ok=True)
    return start_module("testkit.rtp", spec.to_json(), **popen_kwargs)
