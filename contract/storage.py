"""Where a recording's objects go: the validated StorageParams of a task, and the
destination built from them once per task."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


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

    def without_credentials(self) -> StorageTarget:
        return replace(self, access_key_id="", access_key_secret="")


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    """One task's destination as plain data. Built only by
    storage_adapters.destination.destination_for (the one place that tells the
    node's disk from a bucket); storage_adapters.destination.Destination gives it
    its behaviour. A worker is handed it without credentials."""

    target: StorageTarget  # local_root is set for the node's disk, None for a bucket
    remote: bool  # a bucket: objects go through the node's spool and its uploader
    endpoint_override: str = ""  # the node's endpoint for this vendor: requests only, never FileUrl
    spool_root: str = ""
    spool_max_bytes: int = 0
    url_prefix: str = ""  # a bucket's: an object's FileUrl is this + its quoted key ("" when it has none)
