"""Where one task's objects go, decided once.

`destination_for` turns a task's validated StorageParams and the node's storage
options into a Destination; it is the only place that tells the node's disk
(Vendor 0) from a bucket. The Destination answers every storage question the
engine and the worker ask: whether it is remote, what a worker writes through
(the node's disk in place, or the spool), what the uploader sends through (the
vendor's adapter, on the node's endpoint override), an object's FileUrl (the
vendor's public form, never the override) and StartRecord's probe.

Its data is a contract.storage.DestinationSpec. A worker is handed that spec
without the credentials (`for_worker`): it writes to the node's disk or to the
spool and never speaks to a bucket.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from contract.storage import DestinationSpec, StorageTarget
from storage_adapters.base import StorageAdapter
from storage_adapters.endpoints import quote_key
from storage_adapters.local import LocalAdapter
from storage_adapters.multipart import ProbeResult, probe
from storage_adapters.spool import Spool, SpoolAdapter
from storage_adapters.vendor_codes import LOCAL_DISK
from storage_adapters.vendors import adapter_for, require_supported, url_prefix_for

# The engine's outbound-address policy for a caller's EndPoint (engine.egress), as a
# context manager every connection to the bucket is made inside of.
ConnectionGuard = Callable[[], AbstractContextManager[None]]
PROBE_NAME = "probe"  # the node's disk: a key under OutputFolder that must stay inside the bucket


def destination_for(target: StorageTarget, endpoint_overrides: Mapping[int, str] | None,
                    storage_root: Path | str, spool_root: Path | str, spool_max_bytes: int,
                    guard: ConnectionGuard = contextlib.nullcontext) -> Destination:
    """The Destination of a task writing to `target`: on the node's disk under
    `storage_root`, or a bucket reached through the spool at `spool_root` (and the
    node's endpoint override for the vendor, if any), its connections made inside
    `guard`. Raises StorageError for a vendor this node does not support; no I/O."""
    require_supported(target.vendor)
    if target.vendor == LOCAL_DISK:
        return Destination(DestinationSpec(replace(target, local_root=str(storage_root)), remote=False))
    return Destination(DestinationSpec(
        replace(target, local_root=None), remote=True,
        endpoint_override=(endpoint_overrides or {}).get(target.vendor, ""),
        spool_root=str(spool_root), spool_max_bytes=spool_max_bytes, url_prefix=url_prefix_for(target)), guard)


class Destination:
    """A DestinationSpec with its behaviour. Picklable (as its spec); repr shows no credentials."""

    def __init__(self, spec: DestinationSpec, guard: ConnectionGuard = contextlib.nullcontext):
        self.spec = spec
        self.guarded = guard  # every connection to where the objects end up is made inside it

    def __reduce__(self):
        return Destination, (self.spec,)

    def __repr__(self) -> str:
        return f"Destination({self.spec!r})"

    @property
    def is_remote(self) -> bool:
        """A bucket (objects go through the spool and the node's uploader), not the node's disk."""
        return self.spec.remote

    def for_worker(self) -> DestinationSpec:
        """What a worker is handed: all it needs to write, and no credentials."""
        return replace(self.spec, target=self.spec.target.without_credentials())

    def writer_adapter(self, task_id: str) -> StorageAdapter:
        """What a worker writes `task_id`'s objects through: the node's disk in
        place, or the spool (whose entries name the task, for the uploader)."""
        if self.is_remote:
            return SpoolAdapter(Spool(self.spec.spool_root, self.spec.spool_max_bytes), task_id, self.spec.url_prefix)
        return adapter_for(self.spec.target)

    def upload_adapter(self) -> StorageAdapter:
        """Where the objects end up, as the uploader reaches it: the bucket through
        the node's endpoint override (if any), or the node's disk."""
        return adapter_for(self.spec.target, self.spec.endpoint_override or None)

    def public_url(self, key: str, node_url: Callable[[str, str], str] | None = None) -> str:
        """FileUrl: the vendor's public form of the object's URL (never the
        endpoint override), or "" when the target cannot name one. On the node's
        disk, `node_url(bucket, key)` names it when given (the node serves it over HTTP)."""
        if self.is_remote:
            return self.spec.url_prefix + quote_key(key) if self.spec.url_prefix else ""
        if node_url is not None:
            return node_url(self.spec.target.bucket, key)
        return adapter_for(self.spec.target).object_url(key)

    def stored_size(self, key: str) -> int | None:
        """Bytes stored under `key` where the objects end up (None: no such object). Blocks."""
        with self.guarded():
            return self.upload_adapter().object_size(key)

    def probe(self, folder: str) -> ProbeResult | None:
        """StartRecord's check, raising StorageError. The node's disk: that objects
        under `folder` stay inside the bucket (no I/O). A bucket: a small object is
        put, read back and deleted through the uploader's adapter (blocks)."""
        adapter = self.upload_adapter()
        if isinstance(adapter, LocalAdapter):
            adapter.path_of(folder + PROBE_NAME)
            return None
        with self.guarded():
            return probe(adapter, folder)
