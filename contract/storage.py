"""Where a recording's objects go: the validated StorageParams of a task."""

from __future__ import annotations

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
