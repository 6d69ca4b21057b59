"""Pictures (jpg tasks, TakeSnapshot): one event-1 callback each, as the hosted
service sends, once the picture is where it goes. They are not files: no row in
the store and no RecordFiles entry (the hosted DescribeRecordStatus lists none).

On the node's disk a picture is in place when its worker reports it; bound for a
bucket it is in the spool then, and its callback waits for the uploader's result.
A picture spooled when the node stopped is still uploaded after a restart, but
its callback is not sent (nothing remembers it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from contract import protocol
from contract.codes import CallbackEvent
from engine import views
from engine.files import TaskDestinations
from engine.status import FileStatus
from engine.store import FileRecord
from storage_adapters.uploader import UploadResult

log = structlog.get_logger("snapshots")

PICTURE_EXTENSION = ".jpg"  # no other object a worker writes ends so


class SnapshotBook:
    def __init__(self, destinations: TaskDestinations, emit: Callable[..., Awaitable[None]]):
        self._destinations = destinations
        self._emit = emit
        self._tasks: dict[str, tuple[str, str]] = {}  # task id -> (room id, callback url)
        self._waiting: dict[str, FileRecord] = {}  # spooled pictures by key, until uploaded
        self._results: dict[str, UploadResult] = {}  # uploads that finished before their picture was reported
        self._settled = asyncio.Event()

    def register(self, task_id: str, room_id: str, callback_url: str) -> None:
        self._tasks[task_id] = (room_id, callback_url)

    def forget(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)
        for key in [k for k, f in self._waiting.items() if f.task_id == task_id]:
            del self._waiting[key]
        for key in [k for k, r in self._results.items() if r.task_id == task_id]:
            del self._results[key]

    async def taken(self, event: protocol.SnapshotTaken, stream_id: str, user_id: str, user_name: str) -> None:
        destination = self._destinations.known(event.task_id)
        remote = destination is not None and destination.is_remote
        url = await self._destinations.file_url(event.task_id, event.file_id, event.file_url)
        picture = FileRecord(file_id=event.file_id, task_id=event.task_id, stream_id=stream_id, user_id=user_id,
                             user_name=user_name, output_format="jpg", file_url=url, media_track_type=2,
                             begin_ms=event.taken_ms, status=FileStatus.UPLOADING, size=event.size,
                             width=event.width, height=event.height)
        if not event.ok or not remote:
            await self._announce(picture, event.ok)
        elif event.file_id in self._results:
            await self._announce(picture, self._results.pop(event.file_id).ok)
        else:
            self._waiting[event.file_id] = picture

    async def object_uploaded(self, result: UploadResult) -> None:
        if not result.key.endswith(PICTURE_EXTENSION):
            return
        picture = self._waiting.pop(result.key, None)
        if picture is None:
            self._results[result.key] = result  # its SnapshotTaken is still on its way
        else:
            await self._announce(picture, result.ok)

    async def wait_settled(self, task_id: str) -> None:
        """Until every picture of the task reported so far has reached its bucket (or failed)."""
        while any(f.task_id == task_id for f in self._waiting.values()):
            self._settled.clear()
            await self._settled.wait()

    async def _announce(self, picture: FileRecord, ok: bool) -> None:
        picture = replace(picture, status=FileStatus.UPLOADED if ok else FileStatus.UPLOAD_FAILED)
        self._settled.set()
        task = self._tasks.get(picture.task_id)
        if task is None:
            log.warning("snapshot_of_unknown_task", task_id=picture.task_id, file_id=picture.file_id)
            return
        room_id, callback_url = task
        await self._emit(picture.task_id, room_id, callback_url, CallbackEvent.UPLOADED,
                         "upload finished" if ok else "upload failed",
                         {"upload_status": 1 if ok else 2, "file_info": [views.file_info(picture, self._destinations.urls.signed)]})
