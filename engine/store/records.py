"""What the store keeps, as frozen records (the rows' shapes, whichever database holds them)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from engine import models
from engine.status import FileStatus, TaskStatus


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    client_task_id: str | None
    room_id: str
    status: TaskStatus
    request: models.StartRecordRequest
    created_ms: int
    begin_ms: int | None = None
    end_ms: int | None = None
    end_reason: str | None = None
    node_id: str = ""  # its owner: the node that sends its room events (the creator, or one that took it over)


@dataclass(frozen=True)
class FileRecord:
    file_id: str  # the object key
    task_id: str
    stream_id: str
    user_id: str
    user_name: str
    output_format: str
    file_url: str
    media_track_type: int
    begin_ms: int
    status: FileStatus
    size: int = 0
    duration_ms: int = 0
    width: int = 0
    height: int = 0
    sha256: str = ""  # of all the bytes the worker wrote (for HLS: of the playlist)
    writer_pid: int = 0  # the worker process that wrote it
    unsettled: bool = False  # its worker never said it closed: its size and duration are to be read from storage


@dataclass(frozen=True)
class StreamRecord:
    resource_id: str
    room_id: str
    stream_id: str
    user_id: str
    user_name: str
    offer: str
    ports: tuple[int, ...]
    published_ms: int
    source_host: str = ""  # --rtp-pin-source: the announcer, the stream's only source host
    kind: str = "rtp"  # contract.codes.InputKind: only plain RTP is listened for again after a restart


@dataclass(frozen=True)
class NodeRecord:
    """A member of the fleet, as its last lease renewal described it."""
    node_id: str
    url: str  # its advertised base URL
    state: str  # engine.admission.NodeState
    free_streams: int
    free_tasks: int
    started_ms: int
    renewed_ms: int
    lease_until_ms: int


@dataclass(frozen=True)
class CallbackRecord:
    id: int
    task_id: str
    sequence: int
    event_type: int
    url: str
    body: dict
    attempts: int


def request_to_json(request: models.StartRecordRequest) -> str:
    return json.dumps(dataclasses.asdict(request))


def request_from_json(text: str) -> models.StartRecordRequest:
    raw = json.loads(text)
    raw["input"]["record_streams"] = tuple(raw["input"]["record_streams"])
    return models.StartRecordRequest(
        room_id=raw["room_id"],
        input=models.RecordInput(**raw["input"]),
        output=models.RecordOutput(**raw["output"]),
        storage=models.Storage(**raw["storage"]),
        client_task_id=raw["client_task_id"],
    )
