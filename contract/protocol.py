"""Messages on a worker's control pipe (pickled dataclasses).

Requests go down from the supervisor and are answered by a Reply with the same
request_id; events go up on the worker's own initiative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.codes import OfferRefusal, QuitReason
from contract.worker import RecordingSpec, StreamSpec, TrackSpec


# supervisor -> worker
@dataclass(frozen=True)
class StartRecording:
    request_id: int
    spec: RecordingSpec


@dataclass(frozen=True)
class StopRecording:
    request_id: int
    task_id: str


@dataclass(frozen=True)
class PauseRecording:
    request_id: int
    task_id: str


@dataclass(frozen=True)
class ResumeRecording:
    request_id: int
    task_id: str


@dataclass(frozen=True)
class TakeSnapshot:
    """A JPEG of the stream now, for this task (TakeSnapshot). Replies ok when the task
    records video of the stream; the picture follows as a SnapshotTaken event."""

    request_id: int
    task_id: str


@dataclass(frozen=True)
class StopInput:
    """The stream left the room: close the input, keep the recordings (FillBlank)."""

    request_id: int


@dataclass(frozen=True)
class StartInput:
    """The stream came back: receive it again, continuing the kept recordings."""

    request_id: int
    stream: StreamSpec
    rtp_ports: tuple[int, ...]


@dataclass(frozen=True)
class AcceptOffer:
    """WHIP: answer this SDP offer with a new peer connection (replacing any input).
    The Reply's payload is an OfferAnswer, or an OfferRefused with the reason in `error`."""

    request_id: int
    sdp: str


@dataclass(frozen=True)
class MakeOffer:
    """WHEP: make a receive-only offer (ICE gathered) for the engine to send to the server,
    replacing any offer not answered yet. The Reply's payload is an OfferMade."""

    request_id: int


@dataclass(frozen=True)
class AcceptAnswer:
    """WHEP: the server's answer to the last offer. Replied (PullConnected) once ICE and
    DTLS are up and the peer connection replaced any input; refused with the reason."""

    request_id: int
    sdp: str


@dataclass(frozen=True)
class OpenSource:
    """RTSP: connect to `WorkerConfig.pull` and receive it, replacing any input.
    Replied (PullConnected) once the source's tracks are known; refused with the reason."""

    request_id: int


@dataclass(frozen=True)
class StopStream:
    """Finalize every recording and exit."""

    request_id: int


@dataclass(frozen=True)
class GetStats:
    request_id: int


Request = (StartRecording | StopRecording | PauseRecording | ResumeRecording | TakeSnapshot | StopInput | StartInput
           | AcceptOffer | MakeOffer | AcceptAnswer | OpenSource | StopStream | GetStats)


# worker -> supervisor
@dataclass(frozen=True)
class OfferAnswer:
    answer: str  # SDP
    tracks: tuple[TrackSpec, ...]  # as negotiated


@dataclass(frozen=True)
class OfferRefused:
    refusal: OfferRefusal


@dataclass(frozen=True)
class OfferMade:
    offer: str  # SDP


@dataclass(frozen=True)
class PullConnected:
    """A pulled source is connected: the tracks it sends that are recorded, and what it
    offered that is not (e.g. an audio codec we cannot take beside a recordable video)."""

    tracks: tuple[TrackSpec, ...]
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputBound:
    """StartInput's answer: the ports the new input listens on (or tried to)."""

    rtp_ports: tuple[int, ...]


@dataclass(frozen=True)
class StreamStats:
    tracks: dict[str, dict[str, float]] = field(default_factory=dict)
    recordings: tuple[str, ...] = ()


ReplyPayload = OfferAnswer | OfferRefused | OfferMade | PullConnected | InputBound | StreamStats


@dataclass(frozen=True)
class Reply:
    request_id: int
    ok: bool
    payload: ReplyPayload | None = None
    error: str = ""


@dataclass(frozen=True)
class Ready:
    pid: int
    rtp_ports: tuple[int, ...]


@dataclass(frozen=True)
class StartFailed:
    reason: str
    ports_in_use: tuple[int, ...] = ()


@dataclass(frozen=True)
class FileOpened:
    task_id: str
    file_id: str  # object key
    file_url: str
    output_format: str
    media_track_type: int
    begin_ms: int
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class FileProgress:
    task_id: str
    file_id: str
    size: int  # bytes acknowledged by storage
    duration_ms: int


@dataclass(frozen=True)
class FileClosed:
    task_id: str
    file_id: str
    size: int
    duration_ms: int
    ok: bool
    sha256: str = ""
    error: str = ""


@dataclass(frozen=True)
class PlaylistWritten:
    """A realtime HLS playlist was written while recording (RealtimeUploadFragment)."""

    task_id: str
    file_id: str


@dataclass(frozen=True)
class SnapshotTaken:
    """One picture (jpg tasks, TakeSnapshot), stored whole: on the node's disk it is in
    place, in the spool it is on its way to the bucket. No file row: a callback of its own."""

    task_id: str
    file_id: str  # object key
    file_url: str
    taken_ms: int  # wall-clock time of the frame it shows
    width: int
    height: int
    size: int
    ok: bool
    error: str = ""


@dataclass(frozen=True)
class RecordingFailed:
    """The worker cannot go on recording for a task; quit_reason is the API's."""

    task_id: str
    quit_reason: QuitReason
    message: str


@dataclass(frozen=True)
class StreamInactive:
    """The publisher is gone: no media for the configured time, or its peer connection ended."""

    idle_s: float
    reason: str = "no media"



Event = (Ready | StartFailed | FileOpened | FileProgress | FileClosed | PlaylistWritten | SnapshotTaken
         | RecordingFailed | StreamInactive)
