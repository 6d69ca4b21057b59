"""What StartRecord checks before it creates a task: the bucket and the CallbackUrl."""

from __future__ import annotations

import asyncio

from contract.storage import StorageTarget
from engine import egress, errors, models
from engine.config import NodeConfig
from storage_adapters.base import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from storage_adapters.local import LocalAdapter
from storage_adapters.multipart import probe
from storage_adapters.vendors import LOCAL_DISK, VENDOR_NAMES, adapter_for, supported


async def check_storage(config: NodeConfig, request: models.StartRecordRequest) -> None:
    """Refuse a bucket the node cannot use before answering: not after a recording."""
    vendor = request.storage.vendor
    if vendor == LOCAL_DISK and not config.local_storage_enabled:
        raise errors.InvalidParameter("StorageParams.Vendor 0 (node disk) is disabled on this node")
    if not supported(vendor):
        raise errors.InvalidParameter(
            f"StorageParams.Vendor {vendor} ({VENDOR_NAMES[vendor]}) is not supported yet")
    if vendor == LOCAL_DISK:
        try:
            LocalAdapter(config.storage_root, request.storage.bucket).path_of(
                request.output.output_folder + "probe")
        except StorageError:
            raise errors.InvalidParameter(
                "StorageParams.Bucket / RecordOutputParams.OutputFolder leave the storage root") from None
        return
    target = storage_target(config, request)
    overrides = dict(config.storage_endpoints)
    policy = egress.policy_for_storage(
        egress.endpoint_policy(config.callback_deny, config.storage_endpoint_allow), target, overrides)
    try:
        adapter = adapter_for(target, overrides)  # no I/O: its errors are about the parameters
    except StorageError as error:
        raise _refusal(error) from None
    if policy is not None:
        await egress.check_endpoint(target.endpoint, policy)
    try:
        await asyncio.to_thread(egress.call_enforced, policy, probe, adapter, request.output.output_folder)
    except StorageError as error:
        if policy is not None and not _storage_service_answered(error):
            raise errors.InvalidParameter(egress.ENDPOINT_UNREACHABLE) from None
        raise _refusal(error) from None


def _storage_service_answered(error: StorageError) -> bool:
    """Whether a storage service itself answered (a vendor error code such as
    NoSuchBucket or AccessDenied). Anything else from a caller's EndPoint gets the
    one neutral answer, so the answers cannot tell a closed port from an open one."""
    return bool(error.vendor_code) and not error.vendor_code.isdigit()


def _refusal(error: StorageError) -> errors.InvalidParameter:
    if isinstance(error, StorageAccessDenied):
        return errors.InvalidParameter(
            "StorageParams: the bucket refused the credentials (AccessKeyId / AccessKeySecret)")
    if isinstance(error, StorageNotFound):
        return errors.InvalidParameter("StorageParams.Bucket: no such bucket")
    if isinstance(error, StorageUnavailable):
        return errors.InvalidParameter("StorageParams: the bucket cannot be reached (Region / EndPoint)")
    return errors.InvalidParameter(f"StorageParams: {error}")


def storage_target(config: NodeConfig, request: models.StartRecordRequest) -> StorageTarget:
    s = request.storage
    root = str(config.storage_root) if s.vendor == LOCAL_DISK else None
    return StorageTarget(vendor=s.vendor, bucket=s.bucket, local_root=root, region=s.region,
                         endpoint=s.endpoint, access_key_id=s.access_key_id,
                         access_key_secret=s.access_key_secret)


async def check_callback_url(config: NodeConfig, url: str) -> None:
    """Refuse callbacks into link-local / cloud-metadata networks (configurable)."""
    await egress.check_callback_url(url, egress.callback_policy(config.callback_deny))
