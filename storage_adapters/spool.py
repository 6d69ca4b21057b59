"""The spool: objects for a remote bucket are first written to the node's disk.

A worker writes each object into a spool entry (`<root>/<id>/data` plus a
`meta.json` of mode 0600 that names the object's key, its task and the recorded
file it belongs to); the node's uploader (uploader.py) sends entries to the
task's bucket while they grow and deletes them once the bucket holds the whole
object. Bytes therefore stay on the node until the bucket acknowledges them: an
outage delays uploads, a restart resumes them. No credentials are written here:
the uploader asks the node for the task's destination.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from storage_adapters.base import ObjectSink, StorageAdapter, StorageError, StorageFull
from storage_adapters.endpoints import quote_key

META = "meta.json"
DATA = "data"
CAP_CHECK_BYTES = 1 << 20  # look at the spool's size again after this much is written


@dataclass
class SpoolMeta:
    key: str
    task_id: str  # whose destination the entry goes to
    file_id: str  # the recorded file it is (a part of): `key` itself, or an HLS segment's playlist
    created: float
    closed: bool = False
    size: int = 0
    sha256: str = ""
    failed: str = ""  # set when the bucket refused it for good
    writer_pid: int = 0  # the worker writing it; a dead writer's entry is uploaded as it is

    def to_json(self) -> str:
        raw = dataclasses.asdict(self)
        return json.dumps(raw)

    @classmethod
    def from_json(cls, text: str) -> SpoolMeta:
        raw = json.loads(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(raw, dict) or not {"key", "task_id", "file_id", "created"} <= raw.keys():
            raise ValueError("not a spool entry of this node's format")
        return cls(**{name: value for name, value in raw.items() if name in fields})


class SpoolEntry:
    def __init__(self, path: Path):
        self.path = path
        self.id = path.name

    @property
    def data_path(self) -> Path:
        return self.path / DATA

    def read_meta(self) -> SpoolMeta:
        return SpoolMeta.from_json((self.path / META).read_text())

    def write_meta(self, meta: SpoolMeta) -> None:
        temporary = self.path / (META + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(meta.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path / META)

    def remove(self) -> None:
        for child in self.path.iterdir():
            child.unlink()
        self.path.rmdir()


class Spool:
    def __init__(self, root: Path | str, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def entries(self) -> list[SpoolEntry]:
        if not self.root.exists():
            return []
        found = [SpoolEntry(p) for p in self.root.iterdir() if (p / META).exists()]
        return sorted(found, key=lambda e: e.id)

    def used_bytes(self) -> int:
        total = 0
        for entry in self.entries():
            try:
                total += entry.data_path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def create(self, key: str, task_id: str, file_id: str) -> SpoolEntry:
        self.ensure()
        # ordered by creation, so the uploader sends older objects first
        entry = SpoolEntry(self.root / f"{time.time_ns():020d}-{secrets.token_hex(4)}")
        entry.path.mkdir(mode=0o700)
        entry.data_path.touch(mode=0o600)
        entry.write_meta(SpoolMeta(key=key, task_id=task_id, file_id=file_id, created=time.time(),
                                   writer_pid=os.getpid()))
        return entry


class SpoolSink(ObjectSink):
    """Written by a worker; the uploader reads behind it."""

    def __init__(self, key: str, spool: Spool, task_id: str, file_id: str):
        super().__init__(key)
        self._spool = spool
        try:
            if spool.used_bytes() >= spool.max_bytes:
                raise StorageFull(f"the spool is full ({spool.max_bytes} bytes)")
            self.entry = spool.create(key, task_id, file_id)
            self._fd = os.open(self.entry.data_path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise StorageError(f"cannot create a spool entry: {error.strerror}") from None
        self._since_check = 0
        self._sha = hashlib.sha256()

    def _write(self, data: bytes) -> None:
        self._since_check += len(data)
        if self._since_check >= CAP_CHECK_BYTES:
            self._since_check = 0
            if self._spool.used_bytes() + len(data) > self._spool.max_bytes:
                raise StorageFull(f"the spool is full ({self._spool.max_bytes} bytes)")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as error:
            raise (StorageFull if error.errno == 28 else StorageError)(f"spool write failed: {error.strerror}") from None
        self._sha.update(data)

    def _complete(self) -> None:
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            meta = self.entry.read_meta()
            meta.closed, meta.size, meta.sha256 = True, self.size, self._sha.hexdigest()
            self.entry.write_meta(meta)
        except OSError as error:
            raise StorageError(f"cannot close the spool entry: {error.strerror}") from None

    def abort(self) -> None:
        # What was written is the user's media: it is closed and uploaded as it is.
        try:
            self._complete()
        except StorageError:
            pass


class SpoolAdapter(StorageAdapter):
    """What a worker writes one task's bucket objects through."""

    def __init__(self, spool: Spool, task_id: str, url_prefix: str = ""):
        self._spool = spool
        self._task_id = task_id
        self._url_prefix = url_prefix  # the bucket's (DestinationSpec.url_prefix): no vendor SDK in workers

    def open_object(self, key: str, part_of: str | None = None) -> SpoolSink:
        return SpoolSink(key, self._spool, self._task_id, part_of or key)

    def object_url(self, key: str) -> str:
        return self._url_prefix + quote_key(key) if self._url_prefix else ""
