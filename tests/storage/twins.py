"""A Destination whose bucket is the in-memory twin, and a clock the test moves:
the uploader and FileBook run on them without sockets and without waiting."""

from __future__ import annotations

from contract.storage import DestinationSpec, StorageTarget
from storage_adapters.destination import Destination
from storage_adapters.memory import MemoryStore
from storage_adapters.multipart import ObjectStoreAdapter

PART = 4  # bytes: tiny multipart parts, so a few bytes already make a multipart upload


class TwinDestination(Destination):
    """A bucket destination that uploads into `bucket` (a MemoryStore)."""

    def __init__(self, spec: DestinationSpec, bucket: MemoryStore):
        super().__init__(spec)
        self.bucket = bucket

    def upload_adapter(self) -> ObjectStoreAdapter:
        return ObjectStoreAdapter(self.bucket, min_part_size=PART)


def twin_destination(spool_root, bucket: MemoryStore) -> TwinDestination:
    target = StorageTarget(1, bucket.bucket, region="us-east-1", access_key_id="AKID", access_key_secret="SECRET")
    return TwinDestination(DestinationSpec(target, remote=True, spool_root=str(spool_root), spool_max_bytes=1 << 30),
                           bucket)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
