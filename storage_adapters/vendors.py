"""StorageParams.Vendor code -> adapter.

``adapter_for(target, endpoint_override)``: `endpoint_override` is an endpoint
URL that replaces the vendor's own (a node option per vendor, for tests and
gateways; path-style addressing there). FileUrl keeps the vendor's public form
whatever the override. The node reaches this through its tasks' Destinations
(storage_adapters/destination.py), never directly.

Every object store is served: 0 the node's disk, 2 OSS by its own protocol, the
others (1, 3, 4, 7, 8, 9, 10) by the S3 adapter. 5 and 6 are video-on-demand
services, not object stores: they are refused, naming the vendor.
"""

from __future__ import annotations

from collections.abc import Callable

from contract.storage import StorageTarget
from storage_adapters.base import StorageAdapter, StorageError
from storage_adapters.local import LocalAdapter
from storage_adapters.multipart import ObjectStoreAdapter
from storage_adapters.vendor_codes import (
    ALIBABA_OSS,
    AMAZON_S3,
    CHINA_MOBILE_EOS,
    GOOGLE_CLOUD_STORAGE,
    HUAWEI_OBS,
    LOCAL_DISK,
    QINIU_KODO,
    S3_COMPATIBLE,
    TENCENT_COS,
    VENDOR_NAMES,
)


def _local(target: StorageTarget, endpoint_override: str | None = None) -> StorageAdapter:
    if not target.local_root:
        raise StorageError("node disk storage has no root directory configured")
    return LocalAdapter(target.local_root, target.bucket)


def _s3(target: StorageTarget, endpoint_override: str | None = None) -> StorageAdapter:
    from storage_adapters.s3 import s3_store

    return ObjectStoreAdapter(s3_store(target, endpoint_override))


def _s3_vendor(target: StorageTarget, endpoint_override: str | None = None) -> StorageAdapter:
    from storage_adapters.s3 import vendor_store

    return ObjectStoreAdapter(vendor_store(target, endpoint_override))


def _oss(target: StorageTarget, endpoint_override: str | None = None) -> StorageAdapter:
    from storage_adapters.oss import oss_store

    return ObjectStoreAdapter(oss_store(target, endpoint_override))


# vendor -> factory(target, endpoint_override); boto3 / oss2 are imported on first use
ADAPTERS: dict[int, Callable[[StorageTarget, str | None], StorageAdapter]] = {
    LOCAL_DISK: _local,
    AMAZON_S3: _s3,
    ALIBABA_OSS: _oss,
    TENCENT_COS: _s3_vendor,
    QINIU_KODO: _s3_vendor,
    HUAWEI_OBS: _s3_vendor,
    GOOGLE_CLOUD_STORAGE: _s3_vendor,
    CHINA_MOBILE_EOS: _s3_vendor,
    S3_COMPATIBLE: _s3,
}


def _s3_prefix(target: StorageTarget) -> str:
    from storage_adapters.s3 import s3_url_prefix

    return s3_url_prefix(target)


def _s3_vendor_prefix(target: StorageTarget) -> str:
    from storage_adapters.s3 import vendor_url_prefix

    return vendor_url_prefix(target)


def _oss_prefix(target: StorageTarget) -> str:
    from storage_adapters.oss import oss_url_prefix

    return oss_url_prefix(target)


# bucket vendor -> FileUrl prefix of its keys (an object's URL is it + the quoted key)
URL_PREFIXES: dict[int, Callable[[StorageTarget], str]] = {
    AMAZON_S3: _s3_prefix, ALIBABA_OSS: _oss_prefix, S3_COMPATIBLE: _s3_prefix,
    **dict.fromkeys((TENCENT_COS, QINIU_KODO, HUAWEI_OBS, GOOGLE_CLOUD_STORAGE, CHINA_MOBILE_EOS), _s3_vendor_prefix),
}


def url_prefix_for(target: StorageTarget) -> str:
    """The public URL of a bucket's keys less the quoted key, in the vendor's usual form
    (what FileUrl shows; never an endpoint override); "" when the target names none
    (its parameters are incomplete: the upload says why). No I/O."""
    try:
        return URL_PREFIXES[target.vendor](target)
    except (KeyError, StorageError):
        return ""


def supported(vendor: int) -> bool:
    return vendor in ADAPTERS


def require_supported(vendor: int) -> None:
    if vendor not in ADAPTERS:
        raise StorageError(f"Vendor {vendor} ({VENDOR_NAMES.get(vendor, 'unknown')}) is not supported")


def adapter_for(target: StorageTarget, endpoint_override: str | None = None) -> StorageAdapter:
    """The adapter for `target`. Raises StorageError for an unsupported vendor or
    incomplete parameters (e.g. Vendor 10 without EndPoint); no network I/O."""
    require_supported(target.vendor)
    return ADAPTERS[target.vendor](target, endpoint_override or None)
