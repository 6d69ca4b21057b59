"""A whole node on in-memory twins: the real store (SQLite in tmp_path), tasks,
stream registry, event pipe, files and callback outbox, with fake workers, a fake
clock and a fake callback transport. No sockets, no processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from engine import models
from engine.config import NodeConfig
from engine.node import RecordingNode
from tests.engine.fakes import FakeClock, FakeSupervisor, FakeTransport
from tests.engine.test_sdp import OFFER  # H.264 + Opus

__all__ = ["OFFER", "PORTS", "Twins", "eventually", "start_request", "start_twins", "unit_config"]

PORTS = (41000, 41099)


def unit_config(data_dir: Path, **changes) -> NodeConfig:
    # cpu_cap above 1: the machine's real CPU load (other tests) must not refuse work here
    settings = {"rtp_port_range": PORTS, "callback_url": "http://127.0.0.1:9/callbacks", "cpu_cap": 2.0, **changes}
    return NodeConfig(data_dir=data_dir, app_id=1, server_secret="unit-secret", **settings)


def start_request(room_id: str = "room", **inputs) -> models.StartRecordRequest:
    """A StartRecord body (Vendor 0), validated as the API does; `inputs` are RecordInputParams."""
    client_task_id = inputs.pop("ClientTaskId", None)
    body = {"RoomId": room_id, "RecordInputParams": {"RecordMode": 1, **inputs},
            "RecordOutputParams": {"OutputFileFormat": "mp4", "OutputFolder": "rec/"},
            "StorageParams": {"Vendor": 0, "Bucket": "unit"}}
    if client_task_id is not None:
        body["ClientTaskId"] = client_task_id
    return models.parse_start_record(body)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    """Wait until `check()` holds: what the node does in its background tasks."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {check.__name__}")
        await asyncio.sleep(0.005)


@dataclass
class Twins:
    node: RecordingNode
    supervisor: FakeSupervisor
    clock: FakeClock
    transport: FakeTransport

    async def events(self, task_id: str) -> list[int]:
        """The callback events of a task in the store's outbox, in order."""
        return await self.node.store.events_of_task(task_id)

    async def status(self, task_id: str) -> dict:
        return await self.node.describe_record_status(task_id)

    async def until_events(self, task_id: str, expected: list[int]) -> None:
        async def outbox_holds_them() -> bool:
            return await self.events(task_id) == expected

        await eventually(outbox_holds_them)

    async def until_streams(self, count: int) -> None:
        async def published() -> bool:
            return self.node.streams.count == count

        await eventually(published)

    async def delivered(self, task_id: str, event_type: int) -> dict:
        """The `detail` of a callback, once the transport has had it."""
        def posted() -> list[dict]:
            return [b["detail"] for b in self.transport.posts
                    if (b["task_id"], b["event_type"]) == (task_id, event_type)]

        async def was_posted() -> bool:
            return bool(posted())

        await eventually(was_posted)
        return posted()[0]

    async def until_workers(self, count: int) -> None:
        async def started() -> bool:
            return len(self.supervisor.started) == count

        await eventually(started)


async def start_twins(data_dir: Path, transport: FakeTransport | None = None, **config) -> Twins:
    supervisor, clock, transport = FakeSupervisor(), FakeClock(), transport or FakeTransport()
    node = await RecordingNode.create(unit_config(data_dir, **config), spawner=supervisor, clock=clock,
                                      callback_transport=transport)
    return Twins(node, supervisor, clock, transport)
