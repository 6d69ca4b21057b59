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
from storage_adapters.destination import Destination, destination_for
from storage_adapters.vendor_codes import VENDOR_NAMES
from storage_adapters.vendors import supported


async def check_storage(config: NodeConfig, request: models.StartRecordRequest) -> None:
    """Refuse a bucket the node cannot use before answering: not after a recording."""
    vendor = request.storage.vendor
    if not supported(vendor):
        raise errors.InvalidParameter(
            f"StorageParams.Vendor {vendor} ({VENDOR_NAMES[vendor]}) is not supported yet")
    destination = storage_destination(config, request.storage)
    if not destination.is_remote and not config.local_storage_enabled:
        raise errors.InvalidParameter(
            f"StorageParams.Vendor {vendor} ({VENDOR_NAMES[vendor]}) is disabled on this node")
    policy = _storage_policy(config, destination.spec.target) if destination.is_remote else None
    if policy is not None:
        await egress.check_endpoint(destination.spec.target.endpoint, policy)
    try:
        await asyncio.to_thread(destination.probe, request.output.output_folder)
    except StorageError as error:
        if policy is not None and not _storage_service_answered(error):
            raise errors.InvalidParameter(egress.ENDPOINT_UNREACHABLE) from None
        raise errors.InvalidParameter(_refusal(destination, error)) from None


def _storage_service_answered(error: StorageError) -> bool:
    """Whether a storage service itself answered (a vendor error code such as
    NoSuchBucket or AccessDenied). Anything else from a caller's EndPoint gets the
    one neutral answer, so the answers cannot tell a closed port from an open one."""
    return bool(error.vendor_code) and not error.vendor_code.isdigit()


def _refusal(destination: Destination, error: StorageError) -> str:
    if not destination.is_remote:
        return "StorageParams.Bucket / RecordOutputParams.OutputFolder leave the storage root"
    if isinstance(error, StorageAccessDenied):
        return "StorageParams: the bucket refused the credentials (AccessKeyId / AccessKeySecret)"
    if isinstance(error, StorageNotFound):
        return "StorageParams.Bucket: no such bucket"
    if isinstance(error, StorageUnavailable):
        return "StorageParams: the bucket cannot be reached (Region / EndPoint)"
    return f"StorageParams: {error}"


def _storage_policy(config: NodeConfig, target: StorageTarget) -> egress.EgressPolicy | None:
    """The policy for a bucket reached at the caller's EndPoint; None for a vendor's
    own host (from Region) or the operator's --storage-endpoint."""
    return egress.policy_for_storage(egress.endpoint_policy(config.callback_deny, config.storage_endpoint_allow),
                                     target, dict(config.storage_endpoints))


def storage_destination(config: NodeConfig, storage: models.Storage) -> Destination:
    """Where a task with these StorageParams writes on this node (no I/O); every
    connection to a caller's EndPoint is made under the node's egress policy."""
    target = StorageTarget(vendor=storage.vendor, bucket=storage.bucket, region=storage.region,
                           endpoint=storage.endpoint, access_key_id=storage.access_key_id,
                           access_key_secret=storage.access_key_secret)
    policy = _storage_policy(config, target)
    return destination_for(target, dict(config.storage_endpoints), config.storage_root, config.spool_root,
                           config.spool_max_bytes, guard=lambda: egress.enforced(policy))


async def check_callback_url(config: NodeConfig, url: str) -> None:
    """Refuse callbacks into link-local / cloud-metadata networks (configurable)."""
    await egress.check_callback_url(url, egress.callback_policy(config.callback_deny))
