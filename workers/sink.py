"""The uploader side of a worker: what a muxer writes is handed, in order, to a
storage sink on a background thread, so storage I/O never blocks the media loop."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from storage_adapters.base import ObjectInfo, ObjectSink, StorageError


class StreamingObject:
    """A write-only, non-seekable file object for a muxer.

    `write` only buffers; `pump` hands the buffered bytes to the uploader thread.
    `durable_bytes` counts what the storage sink has accepted.
    """

    def __init__(self, sink: ObjectSink, uploader: ThreadPoolExecutor):
        self.key = sink.key
        self._sink = sink
        self._uploader = uploader
        self._pending = bytearray()
        self._lock = threading.Lock()
        self.written_bytes = 0
        self.durable_bytes = 0
        self.error: StorageError | None = None
        self._closed: Future[ObjectInfo | None] | None = None

    # the file-object protocol PyAV uses
    def write(self, data: bytes) -> int:
        self._pending += data
        self.written_bytes += len(data)
        return len(data)

    def flush(self) -> None:
        self.pump()

    def seekable(self) -> bool:
        return False

    def pump(self) -> None:
        if not self._pending or self._closed is not None:
            return
        chunk = bytes(self._pending)
        self._pending.clear()
        self._uploader.submit(self._upload, chunk)

    def _upload(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._sink.write(chunk)
        except StorageError as error:
            self.error = error
            return
        with self._lock:
            self.durable_bytes += len(chunk)

    def _complete(self) -> ObjectInfo | None:
        if self.error is not None:
            self._sink.abort()
            return None
        try:
            return self._sink.close()
        except StorageError as error:
            self.error = error
            return None

    def close(self) -> Future[ObjectInfo | None]:
        """Queue the remaining bytes and the completion; the future resolves when durable."""
        if self._closed is None:
            self.pump()
            self._closed = self._uploader.submit(self._complete)
        return self._closed
