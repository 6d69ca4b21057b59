"""A plain-RTP publisher running in its own OS process.

It sends the clip of ``tests.helpers.media.make_test_media`` as H.264 (RFC 6184,
packetization-mode 1, packetized by aiortc) and Opus (RFC 7587, one packet per
RTP packet) over real UDP sockets, paced in real time, with RTCP Sender Reports,
and records everything it did in a *manifest* (a pickled ``Manifest``).

Typical use::

    spec = PublisherSpec(duration_s=3, manifest_path=str(tmp_path / "m.pkl"))
    sdp = offer_sdp(spec)                       # give it to the node under test
    spec = spec.with_targets(parse_answer(answer_sdp))
    proc = start_publisher(spec)
    manifest = wait_manifest(spec.manifest_path, proc=proc)

Timing model: capture time 0 is ``Manifest.t0_wall`` (``time.time()``) /
``Manifest.t0_mono`` (``time.monotonic()``).  Video frame ``i`` is sent at
capture time ``i / fps``; Opus packet ``k`` at its capture time
``media.audio[k].time_s`` (first one at -6.5 ms, see ``tests.helpers.media``)
plus ``audio_delay_s``.  RTP timestamp = base + round(capture_time * clock)
(mod 2**32), clocks 90 kHz / 48 kHz.  Sender Reports are truthful: an SR sent at
wall time W carries NTP(W) and the RTP timestamp of capture time W - t0_wall,
also for a delayed audio track.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import random
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from aiortc.codecs.h264 import H264Encoder
from aiortc.rtp import RtcpByePacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket

from tests.helpers.media import TestMedia, make_test_media, nal_type, split_annexb

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("video", "audio")
CLOCK_RATES = {"video": 90_000, "audio": 48_000}
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
ALL_PACKETS = -1  # packet_index in PublisherSpec.drop meaning "the whole frame"

Target = tuple[str, int]


# --------------------------------------------------------------------------
# Spec


@dataclass(frozen=True)
class PublisherSpec:
    """Everything the publisher process needs; JSON round-trips via
    ``to_json`` / ``from_json``.  A track whose ``*_rtp`` target is None is not
    sent; a track whose ``*_rtcp`` target is None gets no Sender Reports."""

    video_rtp: Target | None = None
    video_rtcp: Target | None = None
    audio_rtp: Target | None = None
    audio_rtcp: Target | None = None
    # media (arguments of make_test_media)
    duration_s: float = 6.0
    fps: int = 30
    keyint: int = 30
    width: int = 320
    height: int = 240
    flash_period_s: float = 1.0
    flash_offset_s: float = 0.5
    # RTP
    video_pt: int = 96
    audio_pt: int = 111
    video_ssrc: int | None = None  # None = random
    audio_ssrc: int | None = None
    video_ts_base: int | None = None  # RTP timestamp of capture time 0
    audio_ts_base: int | None = None
    video_seq_base: int | None = None  # sequence number of the first packet
    audio_seq_base: int | None = None
    ts_wrap_soon: bool = False  # random bases chosen so ts wraps mid-stream
    seq_wrap_soon: bool = False  # likewise for sequence numbers
    # behaviour
    audio_delay_s: float = 0.0  # audio sent this much after capture time
    send_sr: bool = True
    bitrate_kbps: int = 0  # > 0: busy frames at this bitrate (upload volume tests)
    switch_to: tuple[int, int] | None = None  # a resolution change at switch_at_s (a key frame)
    switch_at_s: float = 0.0
    in_band_parameter_sets: bool = True  # False: SPS/PPS only in the SDP (sprop), stripped from the stream
    sr_interval_s: float = 1.0
    send_bye: bool = False  # RTCP BYE per track after its last packet
    # (kind, frame_index, packet_index); packet_index -1 = every packet of it
    drop: tuple[tuple[str, int, int], ...] = ()
    garbage_datagrams: int = 0  # non-RTP junk from the video RTP socket
    foreign_datagrams: int = 0  # RTP with another SSRC from another socket
    # time.time() of capture time 0; None = as soon as ready.  If it is already
    # past when the process is ready, overdue packets go out in a burst.
    start_time: float | None = None
    manifest_path: str | None = None
    # > 0: encode a clip this long and repeat it (each repeat starts on a key frame when it is a
    # whole number of GOPs) up to duration_s, so long runs neither encode nor hold hours of media
    loop_clip_s: float = 0.0
    keep_sent_bytes: bool = True  # False: forget each packet's bytes once sent (long runs: memory)
    seed: int | None = None  # for the random choices; None = os entropy

    def media_kwargs(self) -> dict[str, Any]:
        return dict(
            duration_s=self.duration_s,
            fps=self.fps,
            keyint=self.keyint,
            width=self.width,
            height=self.height,
            flash_period_s=self.flash_period_s,
            flash_offset_s=self.flash_offset_s,
            bitrate_kbps=self.bitrate_kbps,
            switch_to=self.switch_to,
            switch_at_s=self.switch_at_s,
        )

    def media(self) -> TestMedia:
        return make_test_media(**self.media_kwargs())

    @property
    def looped(self) -> bool:
        return 0 < self.loop_clip_s < self.duration_s

    def clip(self) -> TestMedia:
        """The media encoded once: the whole stream, or the clip that is repeated."""
        if not self.looped:
            return self.media()
        return make_test_media(**{**self.media_kwargs(), "duration_s": self.loop_clip_s})

    def rtp_target(self, kind: str) -> Target | None:
        return getattr(self, f"{kind}_rtp")

    def rtcp_target(self, kind: str) -> Target | None:
        return getattr(self, f"{kind}_rtcp")

    def payload_type(self, kind: str) -> int:
        return getattr(self, f"{kind}_pt")

    def kinds(self) -> tuple[str, ...]:
        """Tracks that will be sent."""
        return tuple(k for k in KINDS if self.rtp_target(k) is not None)

    def with_targets(self, targets: dict[str, tuple[str, int, int]]) -> "PublisherSpec":
        """Copy with the targets of ``parse_answer()``; tracks not in it are off."""
        changes: dict[str, Any] = {}
        for kind in KINDS:
            host, rtp, rtcp = targets.get(kind, (None, None, None))
            changes[f"{kind}_rtp"] = (host, rtp) if host else None
            changes[f"{kind}_rtcp"] = (host, rtcp) if host else None
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PublisherSpec":
        raw = json.loads(text)
        for key in ("video_rtp", "video_rtcp", "audio_rtp", "audio_rtcp"):
            if raw.get(key) is not None:
                raw[key] = (str(raw[key][0]), int(raw[key][1]))
        raw["drop"] = tuple((str(k), int(f), int(p)) for k, f, p in raw.get("drop", ()))
        if raw.get("switch_to") is not None:
            raw["switch_to"] = tuple(raw["switch_to"])
        return cls(**raw)


# --------------------------------------------------------------------------
# Manifest


@dataclass
class SentPacket:
    """One planned RTP packet of a track, sent or (simulated) lost."""

    kind: str
    frame_index: int
    packet_index: int  # within the frame's packet list
    capture_time_s: float
    rtp_timestamp: int  # 32-bit, as sent
    sequence_number: int  # 16-bit, as sent
    marker: bool
    payload: bytes
    datagram: bytes  # the whole RTP packet
    dropped: bool
    sent_wall: float | None = None  # time.time() when sent (None if dropped)
    sent_mono: float | None = None


@dataclass
class SentReport:
    """One RTCP Sender Report."""

    kind: str
    ssrc: int
    sent_wall: float
    ntp_timestamp: int  # 64-bit NTP of sent_wall
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    datagram: bytes


@dataclass
class Manifest:
    """What the publisher did.  ``packets`` holds the packets that became due
    (sent or dropped) in processing order; after SIGTERM, ``completed`` is
    False and later packets are missing."""

    spec: PublisherSpec
    ssrcs: dict[str, int]
    ts_bases: dict[str, int]  # RTP timestamp of capture time 0
    seq_bases: dict[str, int]
    clock_rates: dict[str, int]
    t0_wall: float  # time.time() at capture time 0
    t0_mono: float  # time.monotonic() at capture time 0
    local_ports: dict[str, int]  # e.g. "video_rtp" -> local UDP port
    foreign_ssrc: int
    packets: list[SentPacket] = field(default_factory=list)
    sender_reports: list[SentReport] = field(default_factory=list)
    garbage_sent: int = 0
    foreign_sent: int = 0
    # datagrams received on the publisher's sockets: (time.time(), socket name, bytes)
    feedback: list[tuple[float, str, bytes]] = field(default_factory=list)
    completed: bool = False
    end_wall: float | None = None

    def track_packets(self, kind: str, include_dropped: bool = True) -> list[SentPacket]:
        return [
            p for p in self.packets if p.kind == kind and (include_dropped or not p.dropped)
        ]

    def frames(self, kind: str) -> dict[int, list[SentPacket]]:
        """Packets of a track grouped by frame index."""
        grouped: dict[int, list[SentPacket]] = {}
        for p in self.track_packets(kind):
            grouped.setdefault(p.frame_index, []).append(p)
        return grouped

    def capture_wall(self, kind: str, rtp_timestamp: int) -> float:
        """Sender wall-clock capture time of an RTP timestamp (nearest wrap)."""
        delta = (rtp_timestamp - self.ts_bases[kind]) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        return self.t0_wall + delta / self.clock_rates[kind]


# --------------------------------------------------------------------------
# Small helpers


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time."""
    seconds = int(t // 1)
    fraction = int(round((t - seconds) * (1 << 32)))
    return (((seconds + NTP_UNIX_OFFSET) << 32) + fraction) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def packetize_h264(access_unit: bytes) -> list[bytes]:
    """RTP payloads (single NAL / STAP-A / FU-A, at most 1300 bytes) of an
    Annex-B access unit, using aiortc's own H.264 packetizer."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(access_unit))


def _random_bases(
    rng: random.Random, clock: int, duration_s: float, n_packets: int, spec: PublisherSpec
) -> tuple[int, int]:
    """(timestamp base, sequence base) honouring the *_wrap_soon flags."""
    if spec.ts_wrap_soon:
        ts = (1 << 32) - round(clock * duration_s / 2)
    else:
        ts = rng.getrandbits(32)
    seq = (1 << 16) - max(1, n_packets // 2) if spec.seq_wrap_soon else rng.getrandbits(16)
    return ts & 0xFFFFFFFF, seq & 0xFFFF


def _drop_set(spec: PublisherSpec) -> tuple[set[tuple[str, int, int]], set[tuple[str, int]]]:
    packets = {(k, f, p) for k, f, p in spec.drop if p != ALL_PACKETS}
    frames = {(k, f) for k, f, p in spec.drop if p == ALL_PACKETS}
    return packets, frames


def _without_parameter_sets(access_unit: bytes) -> bytes:
    nals = [n for n in split_annexb(access_unit) if nal_type(n) not in (7, 8)]
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def _frame_payloads(media: TestMedia, kind: str, in_band_parameter_sets: bool = True) -> list[tuple[float, list[bytes]]]:
    """(capture time, RTP payloads) for every frame of a track."""
    if kind == "video":
        strip = (lambda au: au) if in_band_parameter_sets else _without_parameter_sets
        return [(au.time_s, packetize_h264(strip(au.data))) for au in media.video]
    return [(p.time_s, [p.data]) for p in media.audio]


def _open_udp(target_host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1" if target_host.startswith("127.") else "", 0))
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------
# Planning: every packet of a track, before anything is sent


@dataclass
class _Track:
    kind: str
    ssrc: int
    ts_base: int
    seq_base: int
    rtp_target: Target
    rtcp_target: Target | None
    rtp_sock: socket.socket
    rtcp_sock: socket.socket | None
    frames: list[tuple[float, list[SentPacket]]]  # (send time, packets)
    packet_count: int = 0
    octet_count: int = 0

    @property
    def clock(self) -> int:
        return CLOCK_RATES[self.kind]

    def rtp_timestamp(self, capture_time_s: float) -> int:
        return (self.ts_base + round(capture_time_s * self.clock)) & 0xFFFFFFFF


def _looped(payloads: list[tuple[float, list[bytes]]], clip_s: float, duration_s: float):
    """The clip's frames repeated every clip_s seconds up to duration_s. Each repeat
    takes the frames captured in [0, clip_s) (the first also those before 0, e.g. Opus
    priming), so repeats neither overlap nor leave a gap."""
    repeats = int(duration_s // clip_s) + 1
    return [(capture + k * clip_s, frame) for k in range(repeats) for capture, frame in payloads
            if capture < clip_s and (k == 0 or capture >= 0) and capture + k * clip_s < duration_s]


def _plan_track(
    kind: str, spec: PublisherSpec, media: TestMedia, rng: random.Random, taken: set[int]
) -> _Track:
    payloads = _frame_payloads(media, kind, spec.in_band_parameter_sets)
    if spec.looped:
        payloads = _looped(payloads, media.duration_s, spec.duration_s)
    n_packets = sum(len(p) for _, p in payloads)
    clock = CLOCK_RATES[kind]
    ts_rand, seq_rand = _random_bases(rng, clock, spec.duration_s if spec.looped else media.duration_s,
                                      n_packets, spec)
    ssrc = getattr(spec, f"{kind}_ssrc") or _new_ssrc(rng, taken)
    taken.add(ssrc)
    ts_base = getattr(spec, f"{kind}_ts_base")
    seq_base = getattr(spec, f"{kind}_seq_base")
    rtp_target = spec.rtp_target(kind)
    rtcp_target = spec.rtcp_target(kind)
    track = _Track(
        kind=kind,
        ssrc=ssrc,
        ts_base=ts_rand if ts_base is None else ts_base,
        seq_base=seq_rand if seq_base is None else seq_base,
        rtp_target=rtp_target,
        rtcp_target=rtcp_target,
        rtp_sock=_open_udp(rtp_target[0]),
        rtcp_sock=_open_udp(rtcp_target[0]) if rtcp_target else None,
        frames=[],
    )
    delay = spec.audio_delay_s if kind == "audio" else 0.0
    seq = track.seq_base
    for index, (capture, frame_payloads) in enumerate(payloads):
        packets = _plan_frame(spec, track, index, capture, frame_payloads, seq)
        seq += len(packets)
        track.frames.append((capture + delay, packets))
    return track


def _plan_frame(
    spec: PublisherSpec,
    track: _Track,
    index: int,
    capture: float,
    payloads: list[bytes],
    first_seq: int,
) -> list[SentPacket]:
    """The RTP packets of one frame.  Marker bit: last packet of a video frame
    (RFC 6184); first packet of the audio stream (start of talkspurt)."""
    drop_packets, drop_frames = _drop_set(spec)
    packets = []
    for j, payload in enumerate(payloads):
        last = j == len(payloads) - 1
        rtp = RtpPacket(
            payload_type=spec.payload_type(track.kind),
            marker=int(last if track.kind == "video" else index == 0),
            sequence_number=(first_seq + j) & 0xFFFF,
            timestamp=track.rtp_timestamp(capture),
            ssrc=track.ssrc,
            payload=payload,
        )
        packets.append(
            SentPacket(
                kind=track.kind,
                frame_index=index,
                packet_index=j,
                capture_time_s=capture,
                rtp_timestamp=rtp.timestamp,
                sequence_number=rtp.sequence_number,
                marker=bool(rtp.marker),
                payload=payload,
                datagram=rtp.serialize(),
                dropped=(track.kind, index, j) in drop_packets
                or (track.kind, index) in drop_frames,
            )
        )
    return packets


def _new_ssrc(rng: random.Random, taken: set[int]) -> int:
    while True:
        ssrc = rng.getrandbits(32)
        if ssrc and ssrc not in taken:
            return ssrc


# --------------------------------------------------------------------------
# Sending


class _Stopped(Exception):
    """Raised by the SIGTERM handler to end the send loop."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Stopped()


class _Publisher:
    def __init__(self, spec: PublisherSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        media = spec.clip()
        taken: set[int] = set()
        self.tracks = {k: _plan_track(k, spec, media, self.rng, taken) for k in spec.kinds()}
        self.duration_s = spec.duration_s if spec.looped else media.duration_s
        host = next((t.rtp_target[0] for t in self.tracks.values()), "127.0.0.1")
        self.foreign_sock = _open_udp(host)
        self.foreign_ssrc = _new_ssrc(self.rng, taken)
        self.foreign_seq = self.rng.getrandbits(16)
        self.sockets = self._named_sockets()
        self.manifest = Manifest(
            spec=spec,
            ssrcs={k: t.ssrc for k, t in self.tracks.items()},
            ts_bases={k: t.ts_base for k, t in self.tracks.items()},
            seq_bases={k: t.seq_base for k, t in self.tracks.items()},
            clock_rates={k: CLOCK_RATES[k] for k in self.tracks},
            t0_wall=0.0,
            t0_mono=0.0,
            local_ports={name: s.getsockname()[1] for name, s in self.sockets.items()},
            foreign_ssrc=self.foreign_ssrc,
        )

    def _named_sockets(self) -> dict[str, socket.socket]:
        named = {"foreign": self.foreign_sock}
        for kind, track in self.tracks.items():
            named[f"{kind}_rtp"] = track.rtp_sock
            if track.rtcp_sock is not None:
                named[f"{kind}_rtcp"] = track.rtcp_sock
        return named

    # -- schedule ----------------------------------------------------------

    def _schedule(self) -> list[tuple[float, int, Callable[[], None]]]:
        """(time relative to capture 0, priority, action), sorted."""
        events: list[tuple[float, int, Callable[[], None]]] = []
        for track in self.tracks.values():
            events += [(t, 1, _bind(self._send_frame, track, pkts)) for t, pkts in track.frames]
            first, last = track.frames[0][0], track.frames[-1][0]
            if self.spec.send_sr and track.rtcp_target:
                t = first
                while t <= last:
                    events.append((t, 0, _bind(self._send_sr, track)))
                    t += self.spec.sr_interval_s
            if self.spec.send_bye and track.rtcp_target:
                events.append((last, 2, _bind(self._send_bye, track)))
        events += self._spread(self.spec.garbage_datagrams, self._send_garbage)
        events += self._spread(self.spec.foreign_datagrams, self._send_foreign)
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def _spread(self, count: int, action: Callable[[], None]) -> list:
        return [((i + 0.5) / count * self.duration_s, 1, action) for i in range(count)]

    # -- actions -----------------------------------------------------------

    def _send_frame(self, track: _Track, packets: list[SentPacket]) -> None:
        for packet in packets:
            self.manifest.packets.append(packet)
            if not packet.dropped:
                track.rtp_sock.sendto(packet.datagram, track.rtp_target)
                packet.sent_wall, packet.sent_mono = time.time(), time.monotonic()
                track.packet_count += 1
                track.octet_count += len(packet.payload)
                if not self.spec.keep_sent_bytes:
                    packet.datagram = packet.payload = b""

    def _send_sr(self, track: _Track) -> None:
        wall = time.time()
        ntp = ntp_from_unix(wall)
        rtp_ts = track.rtp_timestamp(wall - self.manifest.t0_wall)
        sr = RtcpSrPacket(
            ssrc=track.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_ts,
                packet_count=track.packet_count,
                octet_count=track.octet_count,
            ),
        )
        datagram = bytes(sr)
        track.rtcp_sock.sendto(datagram, track.rtcp_target)
        self.manifest.sender_reports.append(
            SentReport(
                track.kind, track.ssrc, wall, ntp, rtp_ts,
                track.packet_count, track.octet_count, datagram,
            )
        )

    def _send_bye(self, track: _Track) -> None:
        track.rtcp_sock.sendto(bytes(RtcpByePacket(sources=[track.ssrc])), track.rtcp_target)

    def _junk_target(self) -> tuple[socket.socket, Target]:
        track = self.tracks.get("video") or next(iter(self.tracks.values()))
        return track.rtp_sock, track.rtp_target

    def _send_garbage(self) -> None:
        sock, target = self._junk_target()
        data = bytearray(self.rng.randbytes(self.rng.randint(1, 300)))
        data[0] &= 0x3F  # RTP version 0: never parses as RTP/RTCP
        sock.sendto(bytes(data), target)
        self.manifest.garbage_sent += 1

    def _send_foreign(self) -> None:
        _, target = self._junk_target()
        packet = RtpPacket(
            payload_type=self.spec.video_pt if "video" in self.tracks else self.spec.audio_pt,
            sequence_number=self.foreign_seq & 0xFFFF,
            timestamp=self.rng.getrandbits(32),
            ssrc=self.foreign_ssrc,
            payload=self.rng.randbytes(self.rng.randint(20, 200)),
        )
        self.foreign_seq += 1
        self.foreign_sock.sendto(packet.serialize(), target)
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
            action()
        self._collect_feedback(0)
        self.manifest.completed = True

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


def _bind(fn: Callable, *args) -> Callable[[], None]:
    return lambda: fn(*args)


def _write_manifest(manifest: Manifest, path: str | None) -> None:
    """Pickle atomically (readers never see a partial file)."""
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(manifest, f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tests.helpers.rtp_publisher <spec-json>``."""
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
            _write_manifest(publisher.manifest, spec.manifest_path)
            publisher.close()
    return 0


# --------------------------------------------------------------------------
# Test-side API


def start_publisher(spec: PublisherSpec, **popen_kwargs) -> subprocess.Popen:
    """Start ``python -m tests.helpers.rtp_publisher <spec-json>`` (any cwd).

    A stale file at ``spec.manifest_path`` is removed first, so that
    ``wait_manifest`` only ever sees this run's manifest.
    """
    if spec.manifest_path:
        Path(spec.manifest_path).unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.rtp_publisher", spec.to_json()],
        cwd=str(REPO_ROOT),
        env=env,
        **popen_kwargs,
    )


def wait_manifest(
    path: str | os.PathLike,
    timeout_s: float = 60.0,
    proc: subprocess.Popen | None = None,
) -> Manifest:
    """Wait for the publisher's manifest and load it.

    With ``proc``, fail fast if the process exits without writing one.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc is not None and proc.poll() is not None and not path.exists():
            raise RuntimeError(f"publisher exited with {proc.returncode} and no manifest")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no manifest at {path} after {timeout_s} s")
        time.sleep(0.02)
    with open(path, "rb") as f:
        return pickle.load(f)


def offer_sdp(
    spec_or_media: Union[PublisherSpec, TestMedia],
    video: bool | None = None,
    audio: bool | None = None,
    sprop: bool = True,
) -> str:
    """SDP offer (CRLF line ends) describing what the publisher sends.

    ``video`` / ``audio`` None (default): from a ``PublisherSpec``, describe the
    tracks that have an RTP target (i.e. are sent); from a ``TestMedia``, both.
    True / False force a section in or out -- e.g. ``offer_sdp(spec, True,
    True)`` for a spec whose targets only come from the answer.
    Payload types come from the spec (96 / 111 for a ``TestMedia``).
    """
    from_spec = isinstance(spec_or_media, PublisherSpec)
    if from_spec:
        spec, media = spec_or_media, spec_or_media.clip()
    else:
        spec, media = PublisherSpec(), spec_or_media
    if video is None:
        video = not from_spec or spec.video_rtp is not None
    if audio is None:
        audio = not from_spec or spec.audio_rtp is not None
    lines = [
        "v=0",
        "o=- 0 0 IN IP4 127.0.0.1",
        "s=recnode test publisher",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
    ]
    if video:
        lines += _video_section(spec.video_pt, media, sprop)
    if audio:
        lines += _audio_section(spec.audio_pt)
    return "\r\n".join(lines) + "\r\n"


def _video_section(pt: int, media: TestMedia, sprop: bool) -> list[str]:
    fmtp = f"a=fmtp:{pt} packetization-mode=1;profile-level-id=42e01f"
    if sprop:
        sets = ",".join(base64.b64encode(n).decode() for n in (media.sps, media.pps))
        fmtp += f";sprop-parameter-sets={sets}"
    return [f"m=video 9 RTP/AVP {pt}", f"a=rtpmap:{pt} H264/90000", fmtp, "a=sendonly"]


def _audio_section(pt: int) -> list[str]:
    return [
        f"m=audio 9 RTP/AVP {pt}",
        f"a=rtpmap:{pt} opus/48000/2",
        f"a=fmtp:{pt} minptime=10;useinbandfec=1",
        "a=sendonly",
    ]


def parse_answer(sdp: str) -> dict[str, tuple[str, int, int]]:
    """Map "video"/"audio" to (host, rtp_port, rtcp_port) from an SDP answer.

    Host from the media-level ``c=`` or else the session-level one; RTCP port
    from ``a=rtcp:<port>``, else the RTP port with ``a=rtcp-mux``, else
    rtp_port + 1.  Rejected sections (port 0) and repeated kinds are skipped.
    """
    session_host: str | None = None
    sections: list[dict[str, Any]] = []
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            kind, port = line[2:].split()[:2]
            sections.append({"kind": kind, "port": int(port.split("/")[0])})
        elif line.startswith("c="):
            host = line.split()[-1].split("/")[0]
            if sections:
                sections[-1]["host"] = host
            else:
                session_host = host
        elif sections and line.startswith("a=rtcp:"):
            sections[-1]["rtcp"] = int(line[len("a=rtcp:") :].split()[0])
        elif sections and line == "a=rtcp-mux":
            sections[-1]["mux"] = True
    result: dict[str, tuple[str, int, int]] = {}
    for s in sections:
        if s["port"] == 0 or s["kind"] in result:
            continue
        host = s.get("host", session_host)
        if host is None:
            raise ValueError(f"no c= line for the {s['kind']} section")
        default_rtcp = s["port"] if s.get("mux") else s["port"] + 1
        result[s["kind"]] = (host, s["port"], s.get("rtcp", default_rtcp))
    return result


if __name__ == "__main__":
    # Run the copy imported under its package name, so that the pickled
    # manifest refers to tests.helpers.rtp_publisher.Manifest, not __main__.
    from tests.helpers import rtp_publisher

    sys.exit(rtp_publisher.main())
