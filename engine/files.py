"""Recorded files and their storage states: 1 recording -> 2 uploading -> 3 uploaded
(or 5 failed). Fed by worker events and by the uploader's results; the store holds
them. Each task's Destination says where its files go.

A file whose worker never said it closed (the worker was killed, or the node under
it) is `unsettled`: its last FileProgress is stale. Once its worker has exited and
every object of it is where it ends up, engine.settle reads what is stored (off the
event loop, a few files at a time, within a byte budget) for its FileSize and
Duration, and rewrites an HLS playlist its worker could not finish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import structlog

from contract import protocol
from contract.codes import CallbackEvent
from engine import checks, defaults, metrics, models, settle, views
from engine.config import NodeConfig
from engine.finalize import FinalizeError, finalize
from engine.signed_urls import RecordingUrls
from engine.status import FileStatus
from engine.store import AsyncStore, FileRecord
from storage_adapters.base import StorageError
from storage_adapters.destination import Destination
from storage_adapters.uploader import Uploader, UploadResult, backoff_s

log = structlog.get_logger("files")

SETTLE_POLL_S = 0.1
WRITER_POLL_S = 0.1


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has finished writing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def writer_exited(pid: int, timeout_s: float) -> bool:
    """Wait (at most `timeout_s`) until the worker `pid` of a previous run has finished
    its files: a node killed under its workers leaves them writing their last bytes."""
    deadline = time.monotonic() + timeout_s
    while pid > 0 and _running(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(WRITER_POLL_S)
    return True


class TaskDestinations:
    """Each task's Destination, built once from its StorageParams and this node's
    storage options. The task's row in the store is the only copy of its
    credentials: spool entries name their task, and workers get none."""

    def __init__(self, config: NodeConfig, store: AsyncStore):
        self._config = config
        self._store = store
        self._by_task: dict[str, Destination] = {}
        self.urls = RecordingUrls.for_config(config)  # the node's disk, served over HTTP
        self.finalize_mp4 = config.finalize_mp4

    def of(self, task_id: str, storage: models.Storage) -> Destination:
        destination = self._by_task.get(task_id)
        if destination is None:
            destination = self._by_task[task_id] = checks.storage_destination(self._config, storage)
        return destination

    def known(self, task_id: str) -> Destination | None:
        return self._by_task.get(task_id)

    async def file_url(self, task_id: str, key: str, worker_url: str) -> str:
        """An object's FileUrl as stored: where its task's Destination says it is (a bucket's
        built by its SDK, off the loop; the node's disk: its link on the node), else the worker's."""
        destination = self.known(task_id)
        if destination is None:
            return worker_url
        return await asyncio.to_thread(destination.public_url, key, self.urls.url_of)

    async def resolve(self, task_id: str) -> Destination | None:
        """The uploader's question, also about a task this run has not met (its
        spool entries outlived the previous run); None for no such task."""
        destination = self._by_task.get(task_id)
        if destination is not None:
            return destination
        record = await self._store.get_task(task_id)
        if record is None:
            return None
        try:
            return self.of(task_id, record.request.storage)
        except StorageError:
            return None

    async def forget(self, task_id: str) -> None:
        """The task has ended and nothing more goes to its bucket: its credentials go."""
        self._by_task.pop(task_id, None)
        await self._store.forget_credentials(task_id)


class FileBook:
    def __init__(self, store: AsyncStore, destinations: TaskDestinations, uploads: Uploader,
                 emit: Callable[..., Awaitable[None]],
                 readback: Callable[[str], Awaitable[Destination | None]] | None = None):
        """`readback(task_id)`: where an unsettled file's objects are read back from
        (the uploader's view of the task's Destination; by default `destinations`)."""
        self._emit = emit
        self._tasks: dict[str, tuple[str, str]] = {}  # task id -> (room id, callback url)
        self._full_segment_urls: set[str] = set()  # tasks whose HLS playlists name segments by URL
        self._store = store
        self._destinations = destinations
        self._readback = readback or destinations.resolve
        self._uploads = uploads
        self._recording: dict[str, FileRecord] = {}  # by file id
        self._changed = asyncio.Event()
        self._measuring: dict[str, asyncio.Task] = {}  # unsettled files being read back, by file id
        self._measure_slots = asyncio.Semaphore(defaults.SETTLE_PARALLEL_FILES)

    def destination(self, task_id: str, storage: models.Storage) -> Destination:
        """Where the task's files go (built on first use)."""
        return self._destinations.of(task_id, storage)

    def register(self, task_id: str, storage: models.Storage, room_id: str, callback_url: str,
                 full_segment_urls: bool = False) -> None:
        self._destinations.of(task_id, storage)
        self._tasks[task_id] = (room_id, callback_url)
        if full_segment_urls:
            self._full_segment_urls.add(task_id)

    async def forget(self, task_id: str) -> None:
        """The task ended and every file of it is settled: nothing more comes for it."""
        self._tasks.pop(task_id, None)
        self._full_segment_urls.discard(task_id)
        await self._destinations.forget(task_id)

    def _remote(self, task_id: str) -> bool:
        destination = self._destinations.known(task_id)
        return destination is not None and destination.is_remote

    def signed_url(self, url: str) -> str:
        """A FileUrl as handed out: the node's own recordings get a fresh signed link."""
        return self._destinations.urls.signed(url)

    async def _save(self, file: FileRecord) -> None:
        await self._store.upsert_file(file)
        self._changed.set()

    # worker events
    async def opened(self, event: protocol.FileOpened, stream_id: str, user_id: str, user_name: str,
                     writer_pid: int = 0) -> None:
        url = await self._destinations.file_url(event.task_id, event.file_id, event.file_url)
        file = FileRecord(
            file_id=event.file_id, task_id=event.task_id, stream_id=stream_id, user_id=user_id, user_name=user_name,
            output_format=event.output_format, file_url=url,
            media_track_type=event.media_track_type, begin_ms=event.begin_ms, status=FileStatus.RECORDING,
            width=event.width, height=event.height, writer_pid=writer_pid)
        self._recording[file.file_id] = file
        await self._save(file)

    def _count_written(self, file: FileRecord, size: int) -> None:
        destination = self._destinations.known(file.task_id)
        if destination is not None and size > file.size:
            metrics.STORAGE_WRITTEN.labels(metrics.vendor_label(destination.spec.target.vendor)).inc(size - file.size)

    async def progress(self, event: protocol.FileProgress) -> None:
        file = self._recording.get(event.file_id)
        if file is not None:
            self._count_written(file, event.size)
            self._recording[file.file_id] = replace(file, size=event.size, duration_ms=event.duration_ms)
            await self._save(self._recording[file.file_id])

    async def closed(self, event: protocol.FileClosed) -> None:
        file = self._recording.pop(event.file_id, None)
        if file is not None:
            self._count_written(file, event.size)
            await self._finish(replace(file, sha256=event.sha256), event.size, event.duration_ms, event.ok)

    async def worker_lost(self, room_streams: Callable[[FileRecord], bool]) -> None:
        """A worker died: its open files keep what it wrote (on disk: what the file
        holds; in the spool: what the uploader will send)."""
        for file in [f for f in self._recording.values() if room_streams(f)]:
            del self._recording[file.file_id]
            await self._finish_unclosed(replace(file, writer_pid=0))  # it has exited: nothing to wait for

    async def _finish_unclosed(self, file: FileRecord, in_background: bool = False) -> None:
        """A file whose worker never said it closed. On the node's disk it is read back
        once its worker has exited; in a bucket once the uploader has sent every object
        the worker spooled (`settle`)."""
        file = replace(file, unsettled=True)
        if self._remote(file.task_id):
            await self._save(replace(file, status=FileStatus.UPLOADING))
            await self._uploads.refresh()  # the worker spooled the file's last objects before it died
            await self.settle()
        else:
            await self._save(file)
            task = self._measure_later(file)
            if not in_background:
                await task

    def _measure_later(self, file: FileRecord) -> asyncio.Task:
        task = self._measuring.get(file.file_id)
        if task is None:
            task = self._measuring[file.file_id] = asyncio.get_running_loop().create_task(self._measure(file))
            task.add_done_callback(lambda _: self._measuring.pop(file.file_id, None))
        return task

    async def _measure(self, file: FileRecord) -> None:
        """Read an unsettled file back and settle it: uploaded with what is stored,
        failed when nothing is. A bucket that does not answer is asked again later."""
        if not await writer_exited(file.writer_pid, defaults.WORKER_STOP_TIMEOUT_S):
            log.warning("writer_still_running", file_id=file.file_id, pid=file.writer_pid)
        if self._remote(file.task_id):
            await self._uploads.refresh()  # what the worker spooled on its way out
            if file.file_id in self._uploads.pending_files() | self._uploads.failed_files():
                return  # `settle` comes back once the uploader is done with it
        stored = await self._read_back(file)
        if stored is None:
            await self._save(replace(file, status=FileStatus.UPLOAD_FAILED, unsettled=False))
            log.warning("file_not_stored", file_id=file.file_id, task_id=file.task_id)
            return
        await self._save(replace(file, size=stored.size, duration_ms=stored.duration_ms or file.duration_ms,
                                 sha256=stored.sha256 or file.sha256, status=FileStatus.UPLOADED, unsettled=False))
        log.info("file_settled", file_id=file.file_id, task_id=file.task_id, size=stored.size,
                 duration_ms=stored.duration_ms, reported_size=file.size, reported_duration_ms=file.duration_ms)

    async def _read_back(self, file: FileRecord) -> settle.Stored | None:
        """settle.measure, asked again (with the uploader's backoff) while the bucket
        does not answer; what the worker last reported when it cannot be read back."""
        failures = 0
        while True:
            try:
                destination = await self._readback(file.task_id)
                if destination is None:
                    return None
                async with self._measure_slots:
                    return await asyncio.to_thread(settle.measure, destination, file.file_id, file.output_format,
                                                   full_segment_urls=file.task_id in self._full_segment_urls,
                                                   budget_bytes=defaults.SETTLE_READ_MAX_BYTES)
            except StorageError as error:
                if not error.retryable:
                    log.warning("file_not_read_back", file_id=file.file_id, error=str(error))
                    return settle.Stored(file.size, None)
                failures += 1
                await asyncio.sleep(backoff_s(failures))
            except Exception:  # a bug here must not leave the file unsettled for good
                log.exception("file_not_read_back", file_id=file.file_id)
                return settle.Stored(file.size, None)

    async def _finish(self, file: FileRecord, size: int, duration_ms: int, ok: bool) -> None:
        if not ok:
            status = FileStatus.UPLOAD_FAILED
        elif self._remote(file.task_id):
            status = FileStatus.UPLOADING
        else:
            status = FileStatus.UPLOADED
            if self._destinations.finalize_mp4 and file.output_format == "mp4":
                file, size = await self._finalized(file, size)
        await self._save(replace(file, size=size, duration_ms=duration_ms, status=status))
        if status is FileStatus.UPLOADING:
            await self._uploads.refresh()  # the worker spooled the file's last objects before it said so
            await self.settle()

    async def _finalized(self, file: FileRecord, size: int) -> tuple[FileRecord, int]:
        """--finalize-mp4: a finished MP4 on the node's disk rewritten faststart (moov
        first) in place; its size is the new one (and its SHA-256 no longer the worker's)."""
        destination = self._destinations.known(file.task_id)
        if destination is None:
            return file, size
        try:
            path = destination.upload_adapter().path_of(file.file_id)  # type: ignore[attr-defined]
            await asyncio.to_thread(finalize, path, path)
            size = await asyncio.to_thread(lambda: path.stat().st_size)
        except (FinalizeError, OSError, StorageError) as error:
            log.warning("finalize_failed", file_id=file.file_id, task_id=file.task_id, error=str(error))
            return file, size
        return replace(file, sha256=""), size

    async def playlist_written(self, event: protocol.PlaylistWritten) -> None:
        if not self._remote(event.task_id):  # on the node's disk it is in place now
            await self._playlist_ready(event.file_id)

    async def _playlist_ready(self, file_id: str) -> None:
        file = self._recording.get(file_id)
        if file is None or file.output_format != "hls" or file.task_id not in self._tasks:
            return
        room_id, url = self._tasks[file.task_id]
        await self._emit(file.task_id, room_id, url, CallbackEvent.PLAYLIST_UPLOADED, "hls playlist uploaded",
                         {"stream_id": file.stream_id, "file_id": views.file_name(file),
                          "file_url": self.signed_url(file.file_url),
                          "media_track_type": file.media_track_type})

    async def reconcile(self, files: list[FileRecord]) -> None:
        """After a restart: a file left recording was finished by its worker when the
        node died (on disk it holds what was written; in the spool it is uploading);
        it is read back in the background once that worker has exited. Tasks that
        ended with every file settled keep no credentials."""
        for file in files:
            if file.status is FileStatus.RECORDING:  # in the background while its writer still runs
                await self._finish_unclosed(file, in_background=_running(file.writer_pid))
        await self._uploads.refresh()
        await self.settle()
        await self._store.forget_credentials()

    # uploads
    async def object_uploaded(self, result: UploadResult) -> None:
        if result.ok and result.key == result.file_id:  # an HLS file's realtime playlist while it records
            await self._playlist_ready(result.file_id)
        await self.settle()

    async def settle(self) -> None:
        """Uploading files whose every object is in the bucket are uploaded; one with
        an object the bucket refused for good is failed."""
        pending, failed = self._uploads.pending_files(), self._uploads.failed_files()
        for file in await self._store.files_with_status((FileStatus.UPLOADING,)):
            if file.file_id in failed:
                await self._save(replace(file, status=FileStatus.UPLOAD_FAILED, unsettled=False))
                log.warning("file_upload_failed", file_id=file.file_id, task_id=file.task_id)
            elif file.file_id in pending:
                continue
            elif file.unsettled:
                self._measure_later(file)
            else:
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
