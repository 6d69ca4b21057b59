"""The in-memory twins, for unit tests: MemoryAdapter (a StorageAdapter whose
objects are visible while written) and MemoryStore (an ObjectStore with S3's
multipart rules; wrap it in multipart.ObjectStoreAdapter to get the adapter the
node uses for buckets)."""

from __future__ import annotations

import hashlib
import threading
import uuid

from storage_adapters.base import (
    ObjectSink,
    ObjectStore,
    StorageAdapter,
    StorageError,
    StorageNotFound,
    UploadNotFound,
)


class MemorySink(ObjectSink):
    def __init__(self, key: str, adapter: MemoryAdapter):
        super().__init__(key)
        self._adapter = adapter
        self._buffer = bytearray()
        adapter.partial[key] = self._buffer

    def _write(self, data: bytes) -> None:
        if self._adapter.fail_writes:
            raise StorageError("memory adapter told to fail")
        self._buffer += data

    def _complete(self) -> None:
        self._adapter.objects[self.key] = bytes(self._buffer)
        self._adapter.partial.pop(self.key, None)

    def abort(self) -> None:
        self._adapter.partial.pop(self.key, None)


class MemoryAdapter(StorageAdapter):
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.partial: dict[str, bytearray] = {}
        self.fail_writes = False

    def open_object(self, key: str, part_of: str | None = None) -> MemorySink:
        return MemorySink(key, self)

    def object_url(self, key: str) -> str:
        return f"memory://{key}"

    def object_size(self, key: str) -> int | None:
        if key in self.objects:
            return len(self.objects[key])
        if key in self.partial:
            return len(self.partial[key])
        return None

    def read_range(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        data = self.objects.get(key)
        if data is None:
            partial = self.partial.get(key)
            data = bytes(partial) if partial is not None else None
        return None if data is None else (data[start:start + length], len(data))


class MemoryStore(ObjectStore):
    """The in-memory twin of a bucket at the ObjectStore level (S3's rules:
    part numbers 1..10000, every part but the last >= `min_part_size`, ETags
    checked at complete). `fail_next(op, error)` makes the next call of `op`
    ("begin", "upload_part", "complete", "abort", "put", "head", "read", "delete")
    raise `error`; `calls` records every call as (op, key, detail)."""

    name = "memory bucket"

    def __init__(self, bucket: str = "bucket", *, min_part_size: int = 5 * 1024 * 1024):
        self.bucket = bucket
        self.min_part_size = min_part_size
        self.objects: dict[str, bytes] = {}
        self.uploads: dict[str, tuple[str, dict[int, tuple[bytes, str]]]] = {}
        self.calls: list[tuple[str, str, object]] = []
        self.bucket_exists = True
        self._failures: dict[str, list[StorageError]] = {}
        self._lock = threading.Lock()

    def fail_next(self, op: str, error: StorageError) -> None:
        self._failures.setdefault(op, []).append(error)

    def _enter(self, op: str, key: str, detail: object = None) -> None:
        self.calls.append((op, key, detail))
        queued = self._failures.get(op)
        if queued:
            raise queued.pop(0)
        if not self.bucket_exists:
            raise StorageNotFound(f"{self.name} {self.bucket!r} does not exist")

    def _upload(self, key: str, upload_id: str) -> dict[int, tuple[bytes, str]]:
        entry = self.uploads.get(upload_id)
        if entry is None or entry[0] != key:
            raise UploadNotFound(f"no multipart upload {upload_id!r} of {key!r}")
        return entry[1]

    def begin(self, key: str) -> str:
        self._enter("begin", key)
        upload_id = uuid.uuid4().hex
        with self._lock:
            self.uploads[upload_id] = (key, {})
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        self._enter("upload_part", key, (number, len(data)))
        if not 1 <= number <= 10_000:
            raise StorageError(f"part number {number} outside 1..10000")
        etag = '"%s"' % hashlib.md5(data).hexdigest()
        with self._lock:
            self._upload(key, upload_id)[number] = (bytes(data), etag)
        return etag

    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self._enter("complete", key, [number for number, _ in parts])
        with self._lock:
            stored = self._upload(key, upload_id)
            if not parts:
                raise StorageError("a multipart upload needs at least one part")
            numbers = [number for number, _ in parts]
            if numbers != sorted(set(numbers)):
                raise StorageError("InvalidPartOrder: parts must be ascending and unique")
            body = bytearray()
            for index, (number, etag) in enumerate(parts):
                if number not in stored or stored[number][1] != etag:
                    raise StorageError(f"InvalidPart: part {number} with ETag {etag} was not uploaded")
                data = stored[number][0]
                if index < len(parts) - 1 and len(data) < self.min_part_size:
                    raise StorageError(f"EntityTooSmall: part {number} is {len(data)} bytes")
                body += data
            self.objects[key] = bytes(body)
            del self.uploads[upload_id]

    def abort(self, key: str, upload_id: str) -> None:
        self._enter("abort", key)
        with self._lock:
            self._upload(key, upload_id)
            del self.uploads[upload_id]

    def put(self, key: str, data: bytes) -> None:
        self._enter("put", key, len(data))
        self.objects[key] = bytes(data)

    def head(self, key: str) -> int | None:
        self._enter("head", key)
        data = self.objects.get(key)
        return None if data is None else len(data)

    def read(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        self._enter("read", key, (start, length))
        data = self.objects.get(key)
        return None if data is None else (data[start:start + length], len(data))

    def delete(self, key: str) -> None:
        self._enter("delete", key)
        self.objects.pop(key, None)

    def url(self, key: str) -> str:
        return f"memory://{self.bucket}/{key}"

    def pending_uploads(self) -> list[str]:
        return [key for key, _ in self.uploads.values()]
