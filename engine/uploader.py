"""The node's uploader: spool entries -> the user's bucket.

Each entry is streamed into a multipart upload while its worker still writes it
(parts are cut as the bytes arrive), completed once the worker closed it and
every byte is acknowledged, checked against the worker's SHA-256, then removed
from the spool. A bucket that cannot be reached is retried with exponential
backoff and jitter for as long as it takes; an entry whose writer died is
uploaded as it is. After a restart an entry is sent again from its start.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from engine import egress
from storage_adapters.base import ObjectSink, StorageAccessDenied, StorageError, StorageNotFound, StorageUnavailable
from storage_adapters.spool import Spool, SpoolEntry, SpoolMeta
from storage_adapters.vendors import adapter_for

log = structlog.get_logger("uploader")

POLL_S = 0.3
READ_CHUNK = 1 << 20
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
UPLOAD_THREADS = 4
PERMANENT = (StorageAccessDenied, StorageNotFound)


@dataclass
class _Progress:
    sink: ObjectSink | None = None
    offset: int = 0
    sha256: object = field(default_factory=hashlib.sha256)
    retry_pending: bool = False  # the sink holds bytes a failed call must send again
    failures: int = 0
    next_attempt: float = 0.0


@dataclass(frozen=True)
class UploadResult:
    key: str
    ok: bool
    error: str = ""


def _writer_alive(pid: int) -> bool:
    return pid > 0 and Path(f"/proc/{pid}").exists()


class Uploader:
    def __init__(self, spool: Spool, endpoint_overrides: Mapping[int, str],
                 on_done: Callable[[UploadResult], Awaitable[None]],
                 endpoint_policy: egress.EgressPolicy | None = None):
        self._spool = spool
        self._overrides = dict(endpoint_overrides)
        self._endpoint_policy = endpoint_policy  # a caller's EndPoint is connected to under it
        self._on_done = on_done
        self._progress: dict[str, _Progress] = {}
        self._busy: set[str] = set()
        self._keys: dict[str, str] = {}  # entry id -> object key, of entries not yet done
        self._threads = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload")
        self._runner: asyncio.Task | None = None

    def start(self) -> None:
        self._spool.ensure()
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def pending_keys(self) -> set[str]:
        return set(self._keys.values())

    @property
    def backlog(self) -> int:
        return len(self._keys)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            entries = await asyncio.to_thread(self._scan)
            now = time.monotonic()
            for entry, meta in entries:
                progress = self._progress.setdefault(entry.id, _Progress())
                if entry.id in self._busy or progress.next_attempt > now or meta.failed:
                    continue
                self._busy.add(entry.id)
                future = loop.run_in_executor(self._threads, self._step, entry, meta, progress)
                future.add_done_callback(lambda f, e=entry: self._stepped(e, f))
            await asyncio.sleep(POLL_S)

    def _scan(self) -> list[tuple[SpoolEntry, SpoolMeta]]:
        found = []
        for entry in self._spool.entries():
            try:
                meta = entry.read_meta()
            except (OSError, ValueError):
                continue  # being created or removed
            found.append((entry, meta))
        self._keys = {entry.id: meta.key for entry, meta in found if not meta.failed}
        return found

    def _stepped(self, entry: SpoolEntry, future: asyncio.Future) -> None:
        self._busy.discard(entry.id)
        result = future.result()
        if result is not None:
            self._progress.pop(entry.id, None)
            self._keys.pop(entry.id, None)
            asyncio.get_running_loop().create_task(self._on_done(result))

    def _step(self, entry: SpoolEntry, meta: SpoolMeta, progress: _Progress) -> UploadResult | None:
        """Send what is new in one entry; the result once it is done for good."""
        policy = egress.policy_for_storage(self._endpoint_policy, meta.target, self._overrides)
        return egress.call_enforced(policy, self._send, entry, meta, progress)

    def _send(self, entry: SpoolEntry, meta: SpoolMeta, progress: _Progress) -> UploadResult | None:
        try:
            if progress.sink is None:
                progress.sink = adapter_for(meta.target, self._overrides).open_object(meta.key)
            if progress.retry_pending:
                progress.sink.flush()  # type: ignore[attr-defined]
                progress.retry_pending = False
            closed = meta.closed or not _writer_alive(meta.writer_pid)
            self._send_new_bytes(entry, progress)
            if not closed:
                return None
            if meta.closed and progress.offset < meta.size:
                return None  # not all read yet
            if meta.closed and progress.sha256.hexdigest() != meta.sha256:  # type: ignore[attr-defined]
                return self._fail(entry, meta, "the spooled bytes do not match the worker's SHA-256")
            progress.retry_pending = True  # a failed complete is retried by closing again
            info = progress.sink.close()
            entry.remove()
            log.info("object_uploaded", key=meta.key, size=info.size, entry=entry.id)
            return UploadResult(meta.key, True)
        except PERMANENT as error:
            return self._fail(entry, meta, str(error))
        except StorageError as error:
            progress.failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (progress.failures - 1))
            progress.next_attempt = time.monotonic() + delay * random.uniform(0.5, 1.5)
            log.warning("upload_retry", key=meta.key, failures=progress.failures, in_s=round(delay, 2),
                        error=type(error).__name__, retryable=isinstance(error, StorageUnavailable))
            return None

    def _send_new_bytes(self, entry: SpoolEntry, progress: _Progress) -> None:
        assert progress.sink is not None
        with open(entry.data_path, "rb") as data:
            data.seek(progress.offset)
            while chunk := data.read(READ_CHUNK):
                # The sink holds what it accepted even when the call raises.
                progress.offset += len(chunk)
                progress.sha256.update(chunk)  # type: ignore[attr-defined]
                try:
                    progress.sink.write(chunk)
                except StorageError:
                    progress.retry_pending = True
                    raise

    def _fail(self, entry: SpoolEntry, meta: SpoolMeta, reason: str) -> UploadResult:
        log.error("upload_failed", key=meta.key, reason=reason)
        meta.failed = reason
        entry.write_meta(meta)  # kept on disk: the media is not thrown away
        return UploadResult(meta.key, False, reason)
