"""The storage extension point: one method opens an object for streaming writes.

Vendor exceptions never leave an adapter: each is translated into one of the
StorageError types below at the boundary.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass, field

@dataclass(frozen=True, slots=True)
class StorageTarget:
    """Where a recording's objects go. Credentials never show in repr."""

    vendor: int
    bucket: str
    local_root: str | None = None  # vendor 0: the node's storage directory
    region: str = ""
    endpoint: str = ""
    access_key_id: str = field(default="", repr=False)
    access_key_secret: str = field(default="", repr=False)

class StorageError(Exception):
    """Base of every storage failure."""

class StorageUnavailable(StorageError):
    """The bucket could not be reached (network, 5xx); retrying may help."""

class StorageAccessDenied(StorageError):
    pass

class StorageNotFound(StorageError):
    pass

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
    @abc.abstractmethod
    def open_object(self, key: str) -> ObjectSink:
        """Begin writing the object `key` (a bucket-relative key)."""

    def object_url(self, key: str) -> str:
        return key

    def object_size(self, key: str) -> int | None:
        """Bytes stored under `key` so far, or None when there is no such object."""
        return None
