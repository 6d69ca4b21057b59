"""The uploader side of a worker: what a muxer writes is handed, in order, to a
storage sink on a background thread, so storage I/O never blocks the media loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from storage_adapters.base import ObjectInfo, ObjectSink, StorageAdapter, StorageError


class StreamingObject:
    """A write-only, non-seekable file object for a muxer.

    `write` only buffers; `pump` hands the buffered bytes to the uploader thread,
    which also opens the storage object first, so opening, writing and closing an
    object happen in order there, never on the media loop. `durable_bytes`
    counts what the storage sink has accepted.
    """

    def __init__(self, key: str, open_sink: Callable[[], ObjectSink], uploader: ThreadPoolExecutor):
        self.key = key
        self._sink: ObjectSink | None = None
        self._uploader = uploader
        self._uploader.submit(self._open, open_sink)
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

    def _open(self, open_sink: Callable[[], ObjectSink]) -> None:
        try:
            self._sink = open_sink()
        except StorageError as error:
            self.error = error

    def _upload(self, chunk: bytes) -> None:
        if self.error is not None or self._sink is None:
            return
        try:
            self._sink.write(chunk)
        except StorageError as error:
            self.error = error
            return
        with self._lock:
            self.durable_bytes += len(chunk)

    def _complete(self) -> ObjectInfo | None:
        if self._sink is None:
            return None
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


class FileObjects:
    """Every object one recorded file writes: one for mp4/flv/aac, the segments and
    the playlist for HLS. Counts what storage holds of them and their first error."""

    def __init__(self, adapter: StorageAdapter, folder: str, uploader: ThreadPoolExecutor):
        self._adapter = adapter
        self._folder = folder
        self._uploader = uploader
        self._objects: dict[str, StreamingObject] = {}  # by key, latest wins
        self._closed: list[Future[ObjectInfo | None]] = []

    def key(self, name: str) -> str:
        return f"{self._folder}{name}"

    def url(self, name: str) -> str:
        return self._adapter.object_url(self.key(name))

    @property
    def served_by_node(self) -> bool:
        """The node serves these objects itself (storage_adapters.base.StorageAdapter.served_by_node)."""
        return self._adapter.served_by_node

    def open(self, name: str, part_of: str | None = None) -> StreamingObject:
        """Begin the object `name`; `part_of` names the file it belongs to when it
        is not that file itself (an HLS segment: its playlist's name)."""
        key = self.key(name)
        file_id = self.key(part_of) if part_of is not None else None
        stream = StreamingObject(key, lambda: self._adapter.open_object(key, part_of=file_id), self._uploader)
        self._objects[stream.key] = stream
        return stream

    def put(self, name: str, data: bytes) -> Future[ObjectInfo | None]:
        """Write a small object whole (e.g. a playlist, replacing the previous one)."""
        stream = self.open(name)
        stream.write(data)
        future = stream.close()
        self._closed.append(future)
        return future

    def pump(self) -> None:
        for stream in self._objects.values():
            stream.pump()

    @property
    def durable_bytes(self) -> int:
        return sum(s.durable_bytes for s in self._objects.values())

    @property
    def error(self) -> StorageError | None:
        return next((s.error for s in self._objects.values() if s.error is not None), None)

    def close(self) -> list[Future[ObjectInfo | None]]:
        """Close what is still open; futures for every object, resolved when durable."""
        return self._closed + [s.close() for s in self._objects.values()]

    def info(self, name: str) -> ObjectInfo | None:
        stream = self._objects.get(self.key(name))
        closed = stream.close() if stream is not None else None
        return closed.result() if closed is not None and closed.done() else None
