"""What a plain-RTP publisher sends and when, decided before anything is sent: every
RTP packet of every track (H.264 packetized by aiortc, RFC 6184 packetization-mode 1;
one Opus packet per RTP packet, RFC 7587), its capture and send time, its RTP
timestamp and sequence number, and whether it is (deliberately) lost."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aiortc.codecs.h264 import H264Encoder
from aiortc.rtp import RtpPacket

from testkit.bitstream import without_parameter_sets
from testkit.media import TestMedia
from testkit.rtp.manifest import SentPacket
from testkit.rtp.spec import ALL_PACKETS, CLOCK_RATES, PublisherSpec

Frame = tuple[float, list[SentPacket]]  # (send time relative to capture time 0, its packets)


@dataclass
class PlannedTrack:
    kind: str
    ssrc: int
    ts_base: int  # RTP timestamp of capture time 0
    seq_base: int
    frames: list[Frame] = field(default_factory=list)

    @property
    def clock(self) -> int:
        return CLOCK_RATES[self.kind]

    def rtp_timestamp(self, capture_time_s: float) -> int:
        return (self.ts_base + round(capture_time_s * self.clock)) & 0xFFFFFFFF


@dataclass
class Plan:
    tracks: dict[str, PlannedTrack]  # the tracks that are sent
    duration_s: float
    foreign_ssrc: int  # of the foreign datagrams (never one of the tracks')
    foreign_seq: int  # their first sequence number
    rng: random.Random  # for what is drawn while sending (junk)


def plan(spec: PublisherSpec) -> Plan:
    rng = random.Random(spec.seed)
    media = spec.clip_media()
    taken: set[int] = set()
    tracks = {kind: _plan_track(kind, spec, media, rng, taken) for kind in spec.kinds()}
    duration_s = spec.duration_s if spec.looped else media.duration_s
    foreign_ssrc = new_ssrc(rng, taken)
    return Plan(tracks, duration_s, foreign_ssrc, rng.getrandbits(16), rng)


def packetize_h264(access_unit: bytes) -> list[bytes]:
    """RTP payloads (single NAL / STAP-A / FU-A, at most 1300 bytes) of an
    Annex-B access unit, using aiortc's own H.264 packetizer."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(access_unit))


def new_ssrc(rng: random.Random, taken: set[int]) -> int:
    while True:
        ssrc = rng.getrandbits(32)
        if ssrc and ssrc not in taken:
            return ssrc


def _random_bases(rng: random.Random, clock: int, duration_s: float, n_packets: int,
                  spec: PublisherSpec) -> tuple[int, int]:
    """(timestamp base, sequence base) honouring the *_wrap_soon quirks."""
    if spec.quirks.ts_wrap_soon:
        ts = (1 << 32) - round(clock * duration_s / 2)
    else:
        ts = rng.getrandbits(32)
    seq = (1 << 16) - max(1, n_packets // 2) if spec.quirks.seq_wrap_soon else rng.getrandbits(16)
    return ts & 0xFFFFFFFF, seq & 0xFFFF


def _frame_payloads(media: TestMedia, kind: str, in_band_parameter_sets: bool) -> list[tuple[float, list[bytes]]]:
    """(capture time, RTP payloads) for every frame of a track."""
    if kind == "video":
        strip = (lambda au: au) if in_band_parameter_sets else without_parameter_sets
        return [(au.time_s, packetize_h264(strip(au.data))) for au in media.video]
    return [(p.time_s, [p.data]) for p in media.audio]


def _looped(payloads: list[tuple[float, list[bytes]]], clip_s: float, duration_s: float):
    """The clip's frames repeated every clip_s seconds up to duration_s. Each repeat
    takes the frames captured in [0, clip_s) (the first also those before 0, e.g. Opus
    priming), so repeats neither overlap nor leave a gap."""
    repeats = int(duration_s // clip_s) + 1
    return [(capture + k * clip_s, frame) for k in range(repeats) for capture, frame in payloads
            if capture < clip_s and (k == 0 or capture >= 0) and capture + k * clip_s < duration_s]


def _plan_track(kind: str, spec: PublisherSpec, media: TestMedia, rng: random.Random,
                taken: set[int]) -> PlannedTrack:
    payloads = _frame_payloads(media, kind, spec.quirks.in_band_parameter_sets)
    if spec.looped:
        payloads = _looped(payloads, media.duration_s, spec.duration_s)
    n_packets = sum(len(p) for _, p in payloads)
    ts_rand, seq_rand = _random_bases(rng, CLOCK_RATES[kind], spec.duration_s if spec.looped else media.duration_s,
                                      n_packets, spec)
    wanted = spec.track(kind)
    ssrc = wanted.ssrc or new_ssrc(rng, taken)
    taken.add(ssrc)
    track = PlannedTrack(
        kind=kind,
        ssrc=ssrc,
        ts_base=ts_rand if wanted.ts_base is None else wanted.ts_base,
        seq_base=seq_rand if wanted.seq_base is None else wanted.seq_base,
    )
    delay = spec.quirks.audio_delay_s if kind == "audio" else 0.0
    dropped = _Drops(spec)
    seq = track.seq_base
    for index, (capture, frame_payloads) in enumerate(payloads):
        packets = _plan_frame(track, wanted.payload_type, index, capture, frame_payloads, seq, dropped)
        seq += len(packets)
        track.frames.append((capture + delay, packets))
    return track


class _Drops:
    def __init__(self, spec: PublisherSpec) -> None:
        drop = spec.quirks.drop
        self.packets = {(k, f, p) for k, f, p in drop if p != ALL_PACKETS}
        self.frames = {(k, f) for k, f, p in drop if p == ALL_PACKETS}

    def __call__(self, kind: str, frame_index: int, packet_index: int) -> bool:
        return (kind, frame_index, packet_index) in self.packets or (kind, frame_index) in self.frames


def _plan_frame(track: PlannedTrack, payload_type: int, index: int, capture: float, payloads: list[bytes],
                first_seq: int, dropped: _Drops) -> list[SentPacket]:
    """The RTP packets of one frame.  Marker bit: last packet of a video frame
    (RFC 6184); first packet of the audio stream (start of talkspurt)."""
    packets = []
    for j, payload in enumerate(payloads):
        last = j == len(payloads) - 1
        rtp = RtpPacket(
            payload_type=payload_type,
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
                dropped=dropped(track.kind, index, j),
            )
        )
    return packets
