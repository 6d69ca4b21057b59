"""The storage extension point: one method opens an object for streaming writes.

Vendor exceptions never leave an adapter: each is translated into one of the
StorageError types below at the boundary.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass


class StorageError(Exception):
    """Base of every storage failure.

    Adapters that translate a vendor's error also set `vendor_code` (the
    vendor's error code, e.g. "NoSuchBucket") and `http_status` when known.
    `retryable` says whether the same request may succeed later.
    """

    retryable = False
    vendor_code: str | None = None
    http_status: int | None = None

class StorageUnavailable(StorageError):
    """The bucket could not be reached (network, 5xx); retrying may help."""

    retryable = True

class StorageAccessDenied(StorageError):
    pass

class StorageNotFound(StorageError):
    pass

class UploadNotFound(StorageNotFound):
    """The multipart upload id is unknown to the bucket (aborted or expired):
    the object has to be sent again from its first byte."""

class StorageFull(StorageError):
    pass

class InvalidObjectKey(StorageError):
    pass

@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str

class ObjectSink(abc.ABC):
    """An object being written front to back. Not thread-safe: one writer."""

    def __init__(self, key: str):
        self.key = key
        self.size = 0
        self._sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._write(data)
        self.size += len(data)
        self._sha256.update(data)

    def close(self) -> ObjectInfo:
        self._complete()
        return ObjectInfo(self.key, self.size, self._sha256.hexdigest())

    @abc.abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _complete(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None:
        """Give up on the object, keeping nothing half-written where that is possible."""

class StorageAdapter(abc.ABC):
    # The objects are files the node itself serves over HTTP (the node's disk): an HLS
    # playlist lists its segments by name (relative to it) and is kept current while recording.
    served_by_node = False

    @abc.abstractmethod
    def open_object(self, key: str, part_of: str | None = None) -> ObjectSink:
        """Begin writing the object `key` (a bucket-relative key). `part_of` is the
        key of the recorded file the object belongs to when it is not that file
        itself (an HLS segment: its playlist); the spool keeps it, so the uploader
        says which file each finished object completes."""

    def object_url(self, key: str) -> str:
        return key

    def object_size(self, key: str) -> int | None:
        """Bytes stored under `key` so far, or None when there is no such object."""
        return None

    def read_range(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        """Up to `length` bytes of `key` from byte `start` (fewer at its end), and
        the object's size; None when there is no such object."""
        raise StorageError(f"{type(self).__name__} cannot read objects back")


class ObjectStore(abc.ABC):
    """One bucket, spoken to at the level of a multipart upload.

    Every method blocks (it runs on one of the node's uploader threads) and
    raises only StorageError types: each vendor's exceptions are translated inside the
    implementation, and no message carries the AccessKeySecret.
    """

    #: shown in error messages, e.g. "S3 bucket 'recordings'"
    name: str = "object store"

    @abc.abstractmethod
    def begin(self, key: str) -> str:
        """Start a multipart upload of `key`; returns its upload id."""

    @abc.abstractmethod
    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Upload part `number` (1..10000); returns its ETag. Uploading the same
        number again replaces the part, so a failed part may simply be retried."""

    @abc.abstractmethod
    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Join the parts, given as (number, etag) in ascending order, into the object."""

    @abc.abstractmethod
    def abort(self, key: str, upload_id: str) -> None:
        """Drop the upload and every part uploaded so far."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store a (small) object in one request."""

    @abc.abstractmethod
    def head(self, key: str) -> int | None:
        """The object's size, or None when there is no such object.
        A missing bucket raises StorageNotFound."""

    @abc.abstractmethod
    def read(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        """Up to `length` bytes of the object from byte `start` (one ranged GET),
        and the object's size; None when there is no such object."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; removing an absent object is not an error."""

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """The object's URL in the vendor's usual form (what FileUrl shows)."""


def redact(text: str, *secrets: str) -> str:
    """`text` with every occurrence of each non-empty secret replaced (longest first)."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


_CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".flv": "video/x-flv",
    ".aac": "audio/aac",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".jpg": "image/jpeg",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


def content_type_for(key: str) -> str:
    """The Content-Type an object gets from its key's extension (so FileUrl plays in a browser)."""
    dot = key.rfind(".")
    return _CONTENT_TYPES.get(key[dot:].lower(), "application/octet-stream") if dot >= 0 else "application/octet-stream"
