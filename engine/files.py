"""Recorded files and their storage states: 1 recording -> 2 uploading -> 3 uploaded
(or 5 failed). Fed by worker events and by the uploader; the store holds them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

from contract import protocol
from contract.codes import CallbackEvent
from contract.storage import StorageTarget
from engine.config import NodeConfig
from engine.status import FileStatus
from engine.store import AsyncStore, FileRecord
from engine.uploader import UploadResult
from storage_adapters.base import StorageAdapter, StorageError
from storage_adapters.vendors import LOCAL_DISK, adapter_for

log = structlog.get_logger("files")

SETTLE_POLL_S = 0.1


def belongs_to(key: str, file: FileRecord) -> bool:
    """Whether an object is (part of) a file: the file itself, or one of an HLS playlist's segments."""
    if key == file.file_id:
        return True
    return file.output_format == "hls" and key.startswith(file.file_id.removesuffix(".m3u8") + "_") \
        and key.endswith(".ts")


class FileBook:
    def __init__(self, config: NodeConfig, store: AsyncStore, pending_keys: Callable[[], set[str]],
                 emit: Callable[..., Awaitable[None]]):
        self._config = config
        self._emit = emit
        self._tasks: dict[str, tuple[str, str]] = {}  # task id -> (room id, callback url)
        self._store = store
        self._pending_keys = pending_keys
        self._targets: dict[str, StorageTarget] = {}  # task id -> where its files go
        self._url_adapters: dict[str, StorageAdapter] = {}
        self._recording: dict[str, FileRecord] = {}  # by file id
        self._changed = asyncio.Event()

    def register(self, task_id: str, target: StorageTarget, room_id: str, callback_url: str) -> None:
        self._targets[task_id] = target
        self._tasks[task_id] = (room_id, callback_url)

    def forget(self, task_id: str) -> None:
        """The task ended and every file of it is settled: nothing more comes for it."""
        for table in (self._targets, self._tasks, self._url_adapters):
            table.pop(task_id, None)

    def _remote(self, task_id: str) -> bool:
        target = self._targets.get(task_id)
        return target is not None and target.vendor != LOCAL_DISK

    def _url(self, task_id: str, key: str, worker_url: str) -> str:
        if not self._remote(task_id):
            return worker_url
        try:  # the vendor's public form, never an endpoint override; one client per task
            if task_id not in self._url_adapters:
                self._url_adapters[task_id] = adapter_for(self._targets[task_id])
            return self._url_adapters[task_id].object_url(key)
        except StorageError:
            return ""

    async def _save(self, file: FileRecord) -> None:
        await self._store.upsert_file(file)
        self._changed.set()

    # worker events
    async def opened(self, event: protocol.FileOpened, stream_id: str, user_id: str, user_name: str) -> None:
        file = FileRecord(
            file_id=event.file_id, task_id=event.task_id, stream_id=stream_id, user_id=user_id, user_name=user_name,
            output_format=event.output_format, file_url=self._url(event.task_id, event.file_id, event.file_url),
            media_track_type=event.media_track_type, begin_ms=event.begin_ms, status=FileStatus.RECORDING,
            width=event.width, height=event.height)
        self._recording[file.file_id] = file
        await self._save(file)

    async def progress(self, event: protocol.FileProgress) -> None:
        file = self._recording.get(event.file_id)
        if file is not None:
            self._recording[file.file_id] = replace(file, size=event.size, duration_ms=event.duration_ms)
            await self._save(self._recording[file.file_id])

    async def closed(self, event: protocol.FileClosed) -> None:
        file = self._recording.pop(event.file_id, None)
        if file is not None:
            await self._finish(replace(file, sha256=event.sha256), event.size, event.duration_ms, event.ok)

    async def worker_lost(self, room_streams: Callable[[FileRecord], bool]) -> None:
        """A worker died: its open files keep what it wrote (on disk: what the file
        holds; in the spool: what the uploader will send)."""
        for file in [f for f in self._recording.values() if room_streams(f)]:
            del self._recording[file.file_id]
            await self._finish_unclosed(file)

    async def _finish_unclosed(self, file: FileRecord) -> None:
        """A file whose worker never said it closed: on disk it is what the file holds;
        spooled, the uploader sends what was written."""
        size: int | None = file.size
        if not self._remote(file.task_id):
            size = await asyncio.to_thread(self._stored_size, file)
        await self._finish(file, size if size is not None else file.size, file.duration_ms, ok=size is not None)

    def _stored_size(self, file: FileRecord) -> int | None:
        try:
            return adapter_for(self._targets[file.task_id]).object_size(file.file_id)
        except (StorageError, KeyError):
            return None

    async def _finish(self, file: FileRecord, size: int, duration_ms: int, ok: bool) -> None:
        if not ok:
            status = FileStatus.UPLOAD_FAILED
        elif self._remote(file.task_id):
            status = FileStatus.UPLOADING
        else:
            status = FileStatus.UPLOADED
        await self._save(replace(file, size=size, duration_ms=duration_ms, status=status))
        if status is FileStatus.UPLOADING:
            await self.settle()

    async def playlist_written(self, event: protocol.PlaylistWritten) -> None:
        if not self._remote(event.task_id):  # on the node's disk it is in place now
            await self._playlist_ready(event.file_id)

    async def _playlist_ready(self, file_id: str) -> None:
        file = self._recording.get(file_id)
        if file is None or file.task_id not in self._tasks:
            return
        room_id, url = self._tasks[file.task_id]
        await self._emit(file.task_id, room_id, url, CallbackEvent.PLAYLIST_UPLOADED, "hls playlist uploaded",
                         {"stream_id": file.stream_id, "file_id": file.file_id, "file_url": file.file_url,
                          "media_track_type": file.media_track_type})

    async def reconcile(self, files: list[FileRecord]) -> None:
        """After a restart: a file left recording was finished by its worker when the
        node died (on disk it holds what was written; in the spool it is uploading)."""
        for file in files:
            if file.status is not FileStatus.RECORDING:
                continue
            await self._finish_unclosed(file)
        await self.settle()

    # uploads
    async def object_uploaded(self, result: UploadResult) -> None:
        if result.ok and result.key.endswith(".m3u8"):
            await self._playlist_ready(result.key)
        for file in await self._store.files_with_status((FileStatus.UPLOADING,)):
            if belongs_to(result.key, file) and not result.ok:
                await self._save(replace(file, status=FileStatus.UPLOAD_FAILED))
        await self.settle()

    async def settle(self) -> None:
        """Files whose every object is in the bucket are uploaded."""
        pending = self._pending_keys()
        for file in await self._store.files_with_status((FileStatus.UPLOADING,)):
            if not any(belongs_to(key, file) for key in pending):
                await self._save(replace(file, status=FileStatus.UPLOADED))
                log.info("file_uploaded", file_id=file.file_id, task_id=file.task_id)

    async def wait_settled(self, task_id: str) -> list[FileRecord]:
        """Wait until none of the task's files is recording or uploading; returns them."""
        while True:
            files = await self._store.files_of_task(task_id)
            if all(f.status not in (FileStatus.RECORDING, FileStatus.UPLOADING) for f in files):
                return files
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), SETTLE_POLL_S * 10)
            except TimeoutError:
                await self.settle()
