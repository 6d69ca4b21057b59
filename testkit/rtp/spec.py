"""What a plain-RTP publisher process is told to do: ``PublisherSpec``, grouped into
the clip it encodes, one ``TrackSpec`` per track, its RTCP and the quirks that make
the stream hard to receive. It round-trips through JSON (the process's argument)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from testkit.media import TestMedia, make_test_media

KINDS = ("video", "audio")
CLOCK_RATES = {"video": 90_000, "audio": 48_000}
ALL_PACKETS = -1  # packet_index in Quirks.drop meaning "the whole frame"

Target = tuple[str, int]


@dataclass(frozen=True)
class ClipSpec:
    """What ``make_test_media`` encodes, besides its length (its arguments)."""

    fps: int = 30
    keyint: int = 30
    width: int = 320
    height: int = 240
    flash_period_s: float = 1.0
    flash_offset_s: float = 0.5
    bitrate_kbps: int = 0  # > 0: busy frames at this bitrate (upload volume tests)
    switch_to: tuple[int, int] | None = None  # a resolution change at switch_at_s (a key frame)
    switch_at_s: float = 0.0


@dataclass(frozen=True)
class TrackSpec:
    """One RTP track. Not sent while ``rtp`` is None; no Sender Reports or BYE while
    ``rtcp`` is None. ``ssrc``, ``ts_base`` (the RTP timestamp of capture time 0) and
    ``seq_base`` (the first sequence number): None = random."""

    payload_type: int
    rtp: Target | None = None
    rtcp: Target | None = None
    ssrc: int | None = None
    ts_base: int | None = None
    seq_base: int | None = None


@dataclass(frozen=True)
class RtcpSpec:
    sender_reports: bool = True
    sr_interval_s: float = 1.0
    bye: bool = False  # an RTCP BYE per track after its last packet


@dataclass(frozen=True)
class Quirks:
    """What makes the stream hard to receive."""

    # (kind, frame_index, packet_index) not sent; packet_index ALL_PACKETS = the whole frame
    drop: tuple[tuple[str, int, int], ...] = ()
    garbage_datagrams: int = 0  # non-RTP junk from the video RTP socket
    foreign_datagrams: int = 0  # RTP with another SSRC from another socket
    ts_wrap_soon: bool = False  # random timestamp bases chosen so that they wrap mid-stream
    seq_wrap_soon: bool = False  # likewise for sequence numbers
    audio_delay_s: float = 0.0  # audio sent this much after its capture time (its SRs stay truthful)
    # each Sender Report followed by testkit.sender_reports.hostile_reports (NTP 0, far past and
    # future, RTP off the media, another SSRC)
    hostile_sender_reports: bool = False
    in_band_parameter_sets: bool = True  # False: SPS/PPS only in the SDP (sprop), stripped from the stream


@dataclass(frozen=True)
class PublisherSpec:
    """Everything the publisher process needs."""

    duration_s: float = 6.0  # of the stream
    clip: ClipSpec = ClipSpec()
    video: TrackSpec = TrackSpec(payload_type=96)
    audio: TrackSpec = TrackSpec(payload_type=111)
    rtcp: RtcpSpec = RtcpSpec()
    quirks: Quirks = Quirks()
    # time.time() of capture time 0; None = as soon as ready.  If it is already
    # past when the process is ready, overdue packets go out in a burst.
    start_time: float | None = None
    manifest_path: str | None = None
    # > 0: encode a clip this long and repeat it (each repeat starts on a key frame when it is a
    # whole number of GOPs) up to duration_s, so long runs neither encode nor hold hours of media
    loop_clip_s: float = 0.0
    keep_sent_bytes: bool = True  # False: forget each packet's bytes once sent (long runs: memory)
    seed: int | None = None  # for the random choices; None = os entropy

    def media(self) -> TestMedia:
        """The whole stream's media (as if it were not looped)."""
        return make_test_media(duration_s=self.duration_s, **dataclasses.asdict(self.clip))

    @property
    def looped(self) -> bool:
        return 0 < self.loop_clip_s < self.duration_s

    def clip_media(self) -> TestMedia:
        """The media encoded once: the whole stream, or the clip that is repeated."""
        if not self.looped:
            return self.media()
        return make_test_media(duration_s=self.loop_clip_s, **dataclasses.asdict(self.clip))

    def track(self, kind: str) -> TrackSpec:
        return {"video": self.video, "audio": self.audio}[kind]

    def kinds(self) -> tuple[str, ...]:
        """Tracks that will be sent."""
        return tuple(k for k in KINDS if self.track(k).rtp is not None)

    def with_targets(self, targets: dict[str, tuple[str, int, int]]) -> PublisherSpec:
        """Copy aimed at ``parse_answer()``'s (host, RTP port, RTCP port) per kind
        (RTCP port None: no RTCP); tracks not in it are off."""
        changes: dict[str, Any] = {}
        for kind in KINDS:
            host, rtp, rtcp = targets.get(kind, (None, None, None))
            changes[kind] = dataclasses.replace(self.track(kind), rtp=(host, rtp) if host else None,
                                                rtcp=(host, rtcp) if host and rtcp is not None else None)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PublisherSpec:
        return _from_dict(cls, json.loads(text))


def _from_dict(cls, raw: dict):
    """A spec dataclass from its ``asdict`` form: nested specs rebuilt, JSON lists as tuples."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            nested = dataclasses.is_dataclass(f.default)
            values[f.name] = _from_dict(type(f.default), raw[f.name]) if nested else _tuples(raw[f.name])
    return cls(**values)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
