"""Vendor 0: the node's own disk, objects at <root>/<bucket>/<key>."""

from __future__ import annotations

import os
from pathlib import Path

from storage_adapters.base import (
    InvalidObjectKey,
    ObjectSink,
    StorageAdapter,
    StorageError,
    StorageFull,
)


def _translate(error: OSError) -> StorageError:
    import errno

    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(str(error))
    return StorageError(f"{type(error).__name__}: {error}")


class LocalFileSink(ObjectSink):
    def __init__(self, key: str, path: Path):
        super().__init__(key)
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as error:
            raise _translate(error) from error

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as error:
            raise _translate(error) from error

    def _complete(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as error:
            raise _translate(error) from error
        finally:
            os.close(self._fd)

    def abort(self) -> None:
        # What was written stays: on the node's disk a partial recording is
        # still the user's media, never thrown away.
        try:
            os.close(self._fd)
        except OSError:
            pass


class LocalAdapter(StorageAdapter):
    served_by_node = True

    def __init__(self, root: Path | str, bucket: str):
        self.bucket_root = (Path(root) / bucket).resolve()
        if not self.bucket_root.is_relative_to(Path(root).resolve()):
            raise InvalidObjectKey(f"bucket {bucket!r} leaves the storage root")

    def path_of(self, key: str) -> Path:
        path = (self.bucket_root / key).resolve()
        if not path.is_relative_to(self.bucket_root) or path == self.bucket_root:
            raise InvalidObjectKey(f"object key {key!r} leaves the bucket")
        return path

    def open_object(self, key: str, part_of: str | None = None) -> LocalFileSink:
        return LocalFileSink(key, self.path_of(key))

    def object_url(self, key: str) -> str:
        return self.path_of(key).as_uri()

    def object_size(self, key: str) -> int | None:
        try:
            return self.path_of(key).stat().st_size
        except FileNotFoundError:
            return None

    def read_range(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        try:
            with open(self.path_of(key), "rb") as f:
                f.seek(start)
                return f.read(length), os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _translate(error) from error
