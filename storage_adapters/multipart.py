"""Streaming an object into a bucket as a multipart upload, on any ObjectStore.

Part-size rule
--------------
Part n (from 1) is cut at ``min_part_size * 2 ** ((n - 1) // double_every)``
bytes: 5 MiB for parts 1..2500, 10 MiB for 2501..5000, 20 MiB for 5001..7500,
40 MiB for 7501..10000. That reaches

* 24 h at 8 Mbps (86.4 GB, 80.5 GiB) at part 7,245, with 20 MiB parts;
* 48 h at 8 Mbps at part 9,433;
* at most 183 GiB (24 h at 18 Mbps) in 10,000 parts; writing more raises
  StorageError ("more than 10,000 parts") instead of losing bytes silently.

Recordings shorter than ~3.4 h at 8 Mbps use 5 MiB parts throughout, so the
tail left at StopRecord is at most one part (< 5 MiB for them, <= 20 MiB after
24 h at 8 Mbps).

Small objects: an object that never filled its first part (< 5 MiB in all) is
sent with a single ``put()`` at close; no multipart upload is begun for it.

Retries are not done here (the node's uploader, storage_adapters/uploader.py,
retries with backoff), but the sink never drops bytes it accepted: a part
stays in memory until the bucket acknowledged it, so after a failed
``upload_part`` (the exception propagates out of ``write``), ``flush()`` or
``close()`` upload it again with the same part number; a failed ``put`` or
``complete`` is retried by calling ``close()`` again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass

from storage_adapters.base import (
    InvalidObjectKey,
    ObjectSink,
    ObjectStore,
    StorageAccessDenied,
    StorageAdapter,
    StorageError,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB        # S3's and COS's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum part
MAX_PARTS = 10_000
DOUBLE_EVERY = 2_500
MAX_KEY_BYTES = 1024


def part_size_for(number: int, min_part_size: int = MIN_PART_SIZE, double_every: int = DOUBLE_EVERY) -> int:
    """Size at which part `number` (1-based) is cut."""
    if number < 1:
        raise ValueError("part numbers start at 1")
    return min(min_part_size << ((number - 1) // double_every), MAX_PART_SIZE)


def parts_needed(total_bytes: int, min_part_size: int = MIN_PART_SIZE, double_every: int = DOUBLE_EVERY) -> int:
    """How many parts an object of `total_bytes` is cut into (the last may be short)."""
    number, covered = 0, 0
    while covered < total_bytes:
        number += 1
        covered += part_size_for(number, min_part_size, double_every)
    return max(number, 1)


def check_key(key: str) -> str:
    """Refuse keys no bucket accepts the same way (empty, too long, leading '/', control characters)."""
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"object key must be 1..{MAX_KEY_BYTES} bytes")
    if key.startswith(("/", "\\")) or any(ord(c) < 0x20 or c == "\x7f" for c in key):
        raise InvalidObjectKey(f"object key {key!r} starts with a slash or has control characters")
    return key


class MultipartSink(ObjectSink):
    """Writes an object front to back, uploading a part whenever one is full.

    Not thread-safe: one writer (the node's uploader, one thread at a time).
    `write` and `close` do blocking network I/O through the store.
    """

    def __init__(self, key: str, store: ObjectStore, *, min_part_size: int = MIN_PART_SIZE,
                 double_every: int = DOUBLE_EVERY):
        super().__init__(key)
        self.store = store
        self.min_part_size = min_part_size
        self.double_every = double_every
        self.upload_id: str | None = None
        self.parts: list[tuple[int, str]] = []   # acknowledged (number, etag), ascending
        self.uploaded_bytes = 0                  # bytes the bucket acknowledged
        self.completed = False
        self.aborted = False
        self.abort_error: StorageError | None = None
        self._buffer = bytearray()                     # not yet cut into a part
        self._ready: deque[tuple[int, bytes]] = deque()  # cut, not yet acknowledged
        self._next_number = 1

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by `write` that the bucket has not acknowledged yet."""
        return len(self._buffer) + sum(len(data) for _, data in self._ready)

    def write(self, data: bytes) -> None:
        if self.completed or self.aborted:
            raise StorageError(f"object {self.key!r} is already {'complete' if self.completed else 'aborted'}")
        super().write(data)  # buffers (never fails), counts size and SHA-256
        self._upload_ready()

    def flush(self) -> None:
        """Upload every full part still waiting (e.g. one whose upload failed before)."""
        self._upload_ready()

    def _write(self, data: bytes) -> None:
        self._buffer += data
        while True:
            size = part_size_for(self._next_number, self.min_part_size, self.double_every)
            if len(self._buffer) < size:
                return
            if self._next_number >= MAX_PARTS:
                if len(self._buffer) > size:
                    raise StorageError(f"object {self.key!r} needs more than {MAX_PARTS} parts")
                return  # the last possible part waits for close()
            self._ready.append((self._next_number, bytes(self._buffer[:size])))
            del self._buffer[:size]
            self._next_number += 1

    def _upload_ready(self) -> None:
        while self._ready:
            number, data = self._ready[0]
            if self.upload_id is None:
                self.upload_id = self.store.begin(self.key)
            etag = self.store.upload_part(self.key, self.upload_id, number, data)
            self._ready.popleft()  # only once acknowledged: a failed part can be sent again
            self.parts.append((number, etag))
            self.uploaded_bytes += len(data)

    def _complete(self) -> None:
        if self.completed:
            return
        if self.aborted:
            raise StorageError(f"object {self.key!r} was aborted")
        if self.upload_id is None and not self._ready:
            data = bytes(self._buffer)
            self.store.put(self.key, data)  # never reached one part: a single request
            self._buffer.clear()
            self.uploaded_bytes = len(data)
            self.completed = True
            return
        if self._buffer:
            self._ready.append((self._next_number, bytes(self._buffer)))
            self._next_number += 1
            self._buffer.clear()
        self._upload_ready()
        assert self.upload_id is not None
        self.store.complete(self.key, self.upload_id, list(self.parts))
        self.completed = True

    def abort(self) -> None:
        """Drop the multipart upload (best effort: a failure is kept in `abort_error`,
        not raised, so the caller's clean-up path goes on)."""
        if self.completed or self.aborted:
            return
        self.aborted = True
        self._buffer.clear()
        self._ready.clear()
        if self.upload_id is not None:
            try:
                self.store.abort(self.key, self.upload_id)
            except StorageError as error:
                self.abort_error = error
                log.warning("abort of multipart upload failed: %s", error)


class ObjectStoreAdapter(StorageAdapter):
    """A StorageAdapter over any ObjectStore: objects stream in as MultipartSinks."""

    def __init__(self, store: ObjectStore, *, min_part_size: int = MIN_PART_SIZE, double_every: int = DOUBLE_EVERY):
        if min_part_size < 1:
            raise ValueError("min_part_size must be positive")
        self.store = store
        self.min_part_size = min_part_size
        self.double_every = double_every

    def open_object(self, key: str, part_of: str | None = None) -> MultipartSink:
        return MultipartSink(check_key(key), self.store, min_part_size=self.min_part_size,
                             double_every=self.double_every)

    def object_url(self, key: str) -> str:
        return self.store.url(key)

    def object_size(self, key: str) -> int | None:
        return self.store.head(key)

    def read_range(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        return self.store.read(key, start, length)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"


# StartRecord's probe object: named and worded so that one left behind (a write-only
# key may not delete it) says what it is to whoever finds it in the bucket.
PROBE_NAME_PREFIX = "recnode-probe-"
PROBE_BODY = (b"Written by recnode (a self-hosted cloud recording node) when a recording task started,\n"
              b"to check that it can write to this folder. Safe to delete.\n")


@dataclass(frozen=True)
class ProbeResult:
    key: str
    readable: bool   # head() was allowed
    deleted: bool    # the probe object was removed again


def probe_key(folder: str, now: float | None = None) -> str:
    """`<folder>recnode-probe-<UTC time>-<random>.txt`: in the folder the task's files
    go to (a trailing '/' implied), so it tests the very prefix they are written under."""
    if folder and not folder.endswith("/"):
        folder += "/"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return check_key(f"{folder}{PROBE_NAME_PREFIX}{stamp}-{secrets.token_hex(4)}.txt")


def probe(target: StorageAdapter | ObjectStore, prefix: str = "") -> ProbeResult | None:
    """Check that the bucket is reachable and writable: put a small object in the
    folder `prefix` (the task's OutputFolder), read its size back, delete it.

    The put decides: its translated StorageError (StorageAccessDenied for a wrong
    key or secret, StorageNotFound for a missing bucket, StorageUnavailable for an
    unreachable endpoint) is raised. A write-only key (head or delete denied) is
    accepted: the object is deleted if the key allows that even when it may not
    read it, and the result says what was not allowed (a probe object that stays
    is logged with its key). Adapters that are not object stores (the node's disk)
    are not probed: None.
    """
    store = target.store if isinstance(target, ObjectStoreAdapter) else target
    if not isinstance(store, ObjectStore):
        return None
    key = probe_key(prefix)
    store.put(key, PROBE_BODY)
    readable = deleted = True
    try:
        size = store.head(key)
    except StorageAccessDenied:
        readable = False
    else:
        if size != len(PROBE_BODY):
            raise StorageError(f"{store.name}: probe object {key!r} reads back as {size} bytes, "
                               f"not {len(PROBE_BODY)}")
    try:
        store.delete(key)
    except StorageAccessDenied:
        deleted = False
        log.warning("the key may not delete StartRecord's probe object: %s keeps %r", store.name, key)
    return ProbeResult(key, readable, deleted)
