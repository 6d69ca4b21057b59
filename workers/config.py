"""Typed, immutable configuration handed from the engine to a worker.

These types are the whole contract between the control plane and a worker: the
engine validates API payloads and SDP into them, the worker never re-parses raw
input. They are pickled over the control pipe, so they hold plain values only.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage_adapters.base import StorageTarget
from workers.frames import MediaKind


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One announced media track (an SDP m-section)."""

    kind: MediaKind
    codec: str  # "H264", "VP8" or "opus", as in rtpmap
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: tuple[tuple[str, str], ...] = ()

    def fmtp_value(self, name: str) -> str | None:
        for key, value in self.fmtp:
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True, slots=True)
class StreamSpec:
    room_id: str
    stream_id: str
    user_id: str
    tracks: tuple[TrackSpec, ...]

    def track(self, kind: MediaKind) -> TrackSpec | None:
        return next((t for t in self.tracks if t.kind == kind), None)


@dataclass(frozen=True, slots=True)
class RecordingSpec:
    """What one task asks of one stream: the validated output side of StartRecord."""

    task_id: str
    stream_type: int
    output_format: str
    output_folder: str
    file_rule: int
    fragment_seconds: int
    storage: StorageTarget
    realtime_playlist: bool = False  # RealtimeUploadFragment
    short_segment_paths: bool = False  # ShortFragmentPath
    spool_root: str = ""  # remote buckets: objects are spooled here first
    spool_max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    stream: StreamSpec
    bind_host: str
    rtp_ports: tuple[int, ...]  # one per track, in stream.tracks order; RTCP on port + 1 (or muxed)
    jitter_max_wait_s: float
    sync_wait_for_sr_s: float
    inactivity_timeout_s: float = 10.0
    log_level: str = "info"
    input_kind: str = "rtp"  # "rtp" (ports bound at start) or "whip" (a peer connection per offer)
    webrtc_hosts: tuple[str, ...] = ("127.0.0.1",)  # ICE host candidates
    webrtc_advertised: str | None = None
    webrtc_ports: tuple[int, int] | None = None
    fast_consent: bool = False  # tests: notice a vanished WebRTC peer in ~3 s instead of ~30 s
