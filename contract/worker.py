"""Typed, immutable configuration handed from the engine to a worker.

The engine validates API payloads and SDP into these; the worker never re-parses
raw input. They are pickled over the control pipe, so they hold plain values only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.codes import InputKind, MediaKind
from contract.storage import DestinationSpec
from contract.tuning import MediaTuning


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """One announced media track (an SDP m-section)."""

    kind: MediaKind
    codec: str  # "H264", "VP8" or "opus", as in rtpmap
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: tuple[tuple[str, str], ...] = ()
    ssrc: int | None = None  # plain RTP: the offer's a=ssrc, the only SSRC accepted; None: any
    # SRTP (SDES, RFC 4568), plain RTP only: "" when the track is not encrypted. Each key is
    # master key || master salt; the remote one protects what the publisher sends (SRTP,
    # SRTCP Sender Reports), the local one what the worker sends (SRTCP PLIs).
    srtp_suite: str = ""
    srtp_remote_key: bytes = field(default=b"", repr=False)
    srtp_local_key: bytes = field(default=b"", repr=False)
    source_host: str | None = None  # plain RTP: packets only from this host (--rtp-pin-source); None: any

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
    storage: DestinationSpec  # where the objects go (storage_adapters.destination); no credentials
    realtime_playlist: bool = False  # RealtimeUploadFragment
    short_segment_paths: bool = False  # ShortFragmentPath
    snapshot_interval_s: int = 10  # SnapshotInterval: jpg, a picture this often
    skip_mute_audio: bool = False  # mp3: RecordMuteAudio 2, muted audio is left out
    mute_split_s: int | None = None  # mp3: RecordMuteAudioSplitThreshold, a new file after this much mute
    mp4_audio: str = "opus"  # the node's --mp4-audio: Opus kept in MP4, or turned into AAC


@dataclass(frozen=True, slots=True)
class PullSpec:
    """A source the worker subscribes to. RTSP: the worker connects to `url` itself. WHEP:
    the engine talks to the server (the URL stays there), the worker makes the offer and
    connects to what the answer says. The URL may hold credentials: never logged."""

    url: str = field(default="", repr=False)
    transport: str = "tcp"  # RTSP lower transport: "tcp" (interleaved) or "udp"
    open_timeout_s: float = 10.0  # RTSP: connect, DESCRIBE / SETUP / PLAY, the first packets; WHEP: ICE + DTLS
    stall_timeout_s: float = 10.0  # no packet this long: the source is gone


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    stream: StreamSpec
    bind_host: str
    rtp_ports: tuple[int, ...]  # one per track, in stream.tracks order; RTCP on port + 1 (or muxed)
    tuning: MediaTuning = field(default_factory=MediaTuning)
    inactivity_timeout_s: float = 10.0
    log_level: str = "info"
    input_kind: InputKind = InputKind.RTP
    webrtc_hosts: tuple[str, ...] = ("127.0.0.1",)  # ICE host candidates
    webrtc_advertised: str | None = None
    webrtc_ports: tuple[int, int] | None = None
    fast_consent: bool = False  # tests: notice a vanished WebRTC peer in ~3 s instead of ~30 s
    pull: PullSpec | None = None  # InputKind.WHEP / RTSP: what to subscribe to
