"""The node's uploader: spool entries -> their task's bucket.

Each entry is streamed into a multipart upload while its worker still writes it
(parts are cut as the bytes arrive), completed once the worker closed it and
every byte is acknowledged, checked against the worker's SHA-256, then removed
from the spool. A bucket that cannot be reached is retried with exponential
backoff and jitter for as long as it takes. A bucket that refuses for good
(credentials, no such bucket), or bytes that do not match the worker's SHA-256,
fail the entry: it stays on disk, the media is not thrown away. An entry whose
writer died is uploaded as it is. After a restart an entry is sent again from
its start.

An entry names its task; the node resolves the task to its Destination (the
only holder of its credentials). A result names the recorded file the object
belongs to, so the node settles files without deriving object names.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from storage_adapters.base import ObjectSink, StorageAccessDenied, StorageError, StorageNotFound
from storage_adapters.destination import Destination
from storage_adapters.spool import Spool, SpoolEntry, SpoolMeta

log = structlog.get_logger("uploader")

POLL_S = 0.3
READ_CHUNK = 1 << 20
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
UPLOAD_THREADS = 4
PERMANENT = (StorageAccessDenied, StorageNotFound)


def backoff_s(failures: int) -> float:
    """The wait after `failures` failures in a row, before jitter: 0.5 s doubling up to 30 s."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))


def _jitter() -> float:
    return random.uniform(0.5, 1.5)


@dataclass
class _Progress:
    sink: ObjectSink | None = None
    offset: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    retry_pending: bool = False  # the sink holds bytes a failed call must send again
    failures: int = 0
    next_attempt: float = 0.0


@dataclass(frozen=True)
class UploadResult:
    task_id: str
    file_id: str  # the recorded file the object is (a part of)
    key: str
    ok: bool
    error: str = ""


class UploadObserver(Protocol):
    """Told what the uploader does, by Vendor (None: the entry's task is unknown), for the node's metrics."""

    def sent(self, vendor: int, size: int) -> None: ...

    def uploaded(self, vendor: int) -> None: ...

    def retried(self, vendor: int) -> None: ...

    def failed(self, vendor: int | None) -> None: ...


class _Unobserved:
    def sent(self, vendor: int, size: int) -> None:
        pass

    def uploaded(self, vendor: int) -> None:
        pass

    def retried(self, vendor: int) -> None:
        pass

    def failed(self, vendor: int | None) -> None:
        pass


def _writer_alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


class Uploader:
    """`resolve(task_id)` gives a task's Destination (None: no such task);
    `on_done` gets every entry's result once it is uploaded or failed for good.
    `clock` and `jitter` are injectable so the backoff can be tested without waiting."""

    def __init__(self, spool: Spool, resolve: Callable[[str], Awaitable[Destination | None]],
                 on_done: Callable[[UploadResult], Awaitable[None]], *, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = _jitter, poll_s: float = POLL_S,
                 observer: UploadObserver | None = None):
        self._spool = spool
        self._observer = observer or _Unobserved()
        self._resolve = resolve
        self._on_done = on_done
        self._clock = clock
        self._jitter = jitter
        self._poll_s = poll_s
        self._entries: dict[str, tuple[SpoolEntry, SpoolMeta]] = {}  # by entry id, as last scanned
        self._finished: dict[str, UploadResult] = {}  # entries finished here that a scan may still list
        self._progress: dict[str, _Progress] = {}
        self._busy: set[str] = set()
        self._unreadable: set[str] = set()
        self._scan_lock = asyncio.Lock()
        self._uploads: set[asyncio.Task] = set()
        self._threads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload")
        self._runner: asyncio.Task | None = None

    def start(self) -> None:
        self._spool.ensure()
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        for upload in list(self._uploads):
            upload.cancel()
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def backlog(self) -> int:
        """Entries not uploaded yet (failed ones are not waiting for anything)."""
        return sum(1 for _, meta in self._entries.values() if not meta.failed)

    def spool_bytes(self) -> int:
        """Bytes the spool holds now (blocks: reads the spool's directory)."""
        return self._spool.used_bytes()

    def pending_files(self) -> set[str]:
        """Recorded files with an object still on its way to the bucket."""
        return {meta.file_id for _, meta in self._entries.values() if not meta.failed}

    def failed_files(self) -> set[str]:
        """Recorded files with an object the bucket refused for good (still in the spool)."""
        return {meta.file_id for _, meta in self._entries.values() if meta.failed}

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("upload_poll_failed")
            await asyncio.sleep(self._poll_s)

    async def refresh(self) -> None:
        """Read the spool again (e.g. after a worker closed a file: its last objects are in it now)."""
        async with self._scan_lock:
            found = await asyncio.to_thread(self._scan)
            # A scan that read an entry just before this uploader finished it lists it as it was.
            for entry_id, result in list(self._finished.items()):
                scanned = found.get(entry_id)
                if scanned is None or scanned[1].failed:
                    del self._finished[entry_id]  # the spool shows the outcome itself now
                elif result.ok:
                    del found[entry_id]
                else:
                    scanned[1].failed = result.error
            self._entries = found
            for gone in self._progress.keys() - found.keys() - self._busy:
                del self._progress[gone]

    async def poll(self) -> list[asyncio.Task]:
        """One round: read the spool, start sending every entry that is due; returns those uploads."""
        await self.refresh()
        now = self._clock()
        started = []
        for entry, meta in list(self._entries.values()):
            progress = self._progress.setdefault(entry.id, _Progress())
            if entry.id in self._busy or meta.failed or progress.next_attempt > now:
                continue
            self._busy.add(entry.id)
            upload = asyncio.get_running_loop().create_task(self._upload(entry, meta, progress))
            self._uploads.add(upload)
            upload.add_done_callback(self._uploads.discard)
            started.append(upload)
        return started

    async def _upload(self, entry: SpoolEntry, meta: SpoolMeta, progress: _Progress) -> None:
        try:
            destination = await self._resolve(meta.task_id)
            result = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._step, entry, meta, progress, destination)
        except Exception:
            log.exception("upload_step_failed", key=meta.key)
            self._retry_later(progress)
            return
        finally:
            self._busy.discard(entry.id)
        if result is None:
            return
        self._progress.pop(entry.id, None)
        self._finished[entry.id] = result
        if result.ok:
            self._entries.pop(entry.id, None)
        await self._on_done(result)

    def _step(self, entry: SpoolEntry, meta: SpoolMeta, progress: _Progress,
              destination: Destination | None) -> UploadResult | None:
        """Send what is new in one entry; the result once it is done for good."""
        if destination is None:
            return self._fail(entry, meta, progress, f"its task {meta.task_id!r} is unknown to this node", None)
        with destination.guarded():
            return self._send(entry, meta, progress, destination)

    def _send(self, entry: SpoolEntry, meta: SpoolMeta, progress: _Progress,
              destination: Destination) -> UploadResult | None:
        vendor = destination.spec.target.vendor
        try:
            if progress.sink is None:
                progress.sink = destination.upload_adapter().open_object(meta.key)
            if progress.retry_pending:
                progress.sink.flush()  # type: ignore[attr-defined]
                progress.retry_pending = False
            closed = meta.closed or not _writer_alive(meta.writer_pid)
            self._send_new_bytes(entry, progress, vendor)
            if not closed:
                return None
            if meta.closed and progress.offset < meta.size:
                return None  # not all read yet
            if meta.closed and progress.sha256.hexdigest() != meta.sha256:
                return self._fail(entry, meta, progress, "the spooled bytes do not match the worker's SHA-256", vendor)
            progress.retry_pending = True  # a failed complete is retried by closing again
            info = progress.sink.close()
            entry.remove()
            log.info("object_uploaded", key=meta.key, size=info.size, entry=entry.id)
            self._observer.uploaded(vendor)
            return UploadResult(meta.task_id, meta.file_id, meta.key, True)
        except PERMANENT as error:
            return self._fail(entry, meta, progress, str(error), vendor)
        except StorageError as error:
            delay = self._retry_later(progress)
            self._observer.retried(vendor)
            log.warning("upload_retry", key=meta.key, failures=progress.failures, in_s=round(delay, 2),
                        error=type(error).__name__, retryable=error.retryable)
            return None

    def _retry_later(self, progress: _Progress) -> float:
        progress.failures += 1
        delay = backoff_s(progress.failures) * self._jitter()
        progress.next_attempt = self._clock() + delay
        return delay

    def _send_new_bytes(self, entry: SpoolEntry, progress: _Progress, vendor: int) -> None:
        assert progress.sink is not None
        with open(entry.data_path, "rb") as data:
            data.seek(progress.offset)
            while chunk := data.read(READ_CHUNK):
                # The sink holds what it accepted even when the call raises.
                progress.offset += len(chunk)
                progress.sha256.update(chunk)
                try:
                    progress.sink.write(chunk)
                except StorageError:
                    progress.retry_pending = True
                    raise
                finally:
                    self._observer.sent(vendor, len(chunk))

    def _fail(self, entry: SpoolEntry, meta: SpoolMeta, progress: _Progress, reason: str,
              vendor: int | None) -> UploadResult:
        log.error("upload_failed", key=meta.key, reason=reason)
        self._observer.failed(vendor)
        if progress.sink is not None:
            progress.sink.abort()  # a multipart upload begun for it is dropped (best effort)
        meta.failed = reason
        entry.write_meta(meta)  # kept on disk: the media is not thrown away
        return UploadResult(meta.task_id, meta.file_id, meta.key, False, reason)

    def _scan(self) -> dict[str, tuple[SpoolEntry, SpoolMeta]]:
        found = {}
        for entry in self._spool.entries():
            try:
                meta = entry.read_meta()
            except OSError:
                continue  # removed meanwhile
            except ValueError as error:  # kept on disk, never sent: someone has to look at it
                if entry.id not in self._unreadable:
                    self._unreadable.add(entry.id)
                    log.error("spool_entry_unreadable", entry=entry.id, error=str(error))
                continue
            found[entry.id] = (entry, meta)
        return found
