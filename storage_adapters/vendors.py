"""StorageParams.Vendor code -> adapter."""

from __future__ import annotations

from collections.abc import Callable

from storage_adapters.base import StorageAdapter, StorageError, StorageTarget
from storage_adapters.local import LocalAdapter

LOCAL_DISK = 0

VENDOR_NAMES = {
    0: "node disk",
    1: "Amazon S3",
    2: "Alibaba Cloud OSS",
    3: "Tencent COS",
    4: "Qiniu Kodo",
    5: "Alibaba VOD",
    6: "Tencent VOD",
    7: "Huawei OBS",
    8: "Google Cloud Storage",
    9: "China Mobile EOS",
    10: "S3-compatible",
}


def _local(target: StorageTarget) -> StorageAdapter:
    if not target.local_root:
        raise StorageError("node disk storage has no root directory configured")
    return LocalAdapter(target.local_root, target.bucket)


ADAPTERS: dict[int, Callable[[StorageTarget], StorageAdapter]] = {
    LOCAL_DISK: _local,
}


def supported(vendor: int) -> bool:
    return vendor in ADAPTERS


def adapter_for(target: StorageTarget) -> StorageAdapter:
    factory = ADAPTERS.get(target.vendor)
    if factory is None:
        raise StorageError(f"Vendor {target.vendor} ({VENDOR_NAMES.get(target.vendor, 'unknown')}) is not supported")
    return factory(target)
