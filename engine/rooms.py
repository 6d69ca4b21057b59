"""Which streams each room has right now."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from contract import protocol
from contract.codes import InputKind
from contract.worker import StreamSpec
from engine.sdp import RtpOffer


class StreamWorker(Protocol):
    """A stream's worker as the control plane talks to it (engine.supervisor.WorkerHandle;
    the unit tests' fake worker)."""

    stopping: bool  # asked to stop: its exit is not a death

    @property
    def pid(self) -> int | None: ...

    async def request(self, make: Callable[[int], protocol.Request], timeout: float = ...) -> protocol.Reply: ...

    async def stop(self) -> None:
        """Finish every file and exit."""


@dataclass(eq=False)
class PublishedStream:
    spec: StreamSpec
    offer: RtpOffer | None  # None for WHIP: the worker's peer connection negotiated it
    user_name: str
    offer_text: str
    published_ms: int
    resource_id: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    ports: tuple[int, ...] = ()
    answer: str = ""
    worker: StreamWorker | None = None
    restarts: deque[float] = field(default_factory=deque)
    unpublished: bool = False
    kind: InputKind = InputKind.RTP

    @property
    def room_id(self) -> str:
        return self.spec.room_id

    @property
    def stream_id(self) -> str:
        return self.spec.stream_id


class Rooms:
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, PublishedStream]] = {}
        self._resources: dict[str, PublishedStream] = {}
        # Streams that left but whose worker keeps recordings open (FillBlank).
        self._lingering: dict[tuple[str, str], PublishedStream] = {}

    def get(self, room_id: str, stream_id: str) -> PublishedStream | None:
        return self._rooms.get(room_id, {}).get(stream_id)

    def by_resource(self, resource_id: str) -> PublishedStream | None:
        return self._resources.get(resource_id)

    def streams(self, room_id: str) -> list[PublishedStream]:
        return list(self._rooms.get(room_id, {}).values())

    def all(self) -> list[PublishedStream]:
        return list(self._resources.values())

    def recording_streams(self, room_id: str) -> list[PublishedStream]:
        """Published streams and departed ones whose recordings are kept open."""
        lingering = [s for (room, _), s in self._lingering.items() if room == room_id]
        return self.streams(room_id) + lingering

    def linger(self, stream: PublishedStream) -> None:
        self._lingering[(stream.room_id, stream.stream_id)] = stream

    def take_lingering(self, room_id: str, stream_id: str) -> PublishedStream | None:
        return self._lingering.pop((room_id, stream_id), None)

    def lingering(self) -> list[PublishedStream]:
        return list(self._lingering.values())

    def add(self, stream: PublishedStream) -> None:
        self._rooms.setdefault(stream.room_id, {})[stream.stream_id] = stream
        self._resources[stream.resource_id] = stream

    def remove(self, stream: PublishedStream) -> None:
        room = self._rooms.get(stream.room_id, {})
        if room.get(stream.stream_id) is stream:
            del room[stream.stream_id]
            if not room:
                del self._rooms[stream.room_id]
        self._resources.pop(stream.resource_id, None)
