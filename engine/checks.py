"""What StartRecord checks before it creates a task: the bucket and the CallbackUrl."""

from __future__ import annotations

import asyncio
import ipaddress
import urllib.parse

from contract.storage import StorageTarget
from engine import errors, models
from engine.config import NodeConfig
from storage_adapters.base import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
)
from storage_adapters.destination import Destination, destination_for
from storage_adapters.vendors import VENDOR_NAMES, supported


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
    try:
        await asyncio.to_thread(destination.probe, request.output.output_folder)
    except StorageError as error:
        raise errors.InvalidParameter(_refusal(destination, error)) from None


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


def storage_destination(config: NodeConfig, storage: models.Storage) -> Destination:
    """Where a task with these StorageParams writes on this node (no I/O)."""
    target = StorageTarget(vendor=storage.vendor, bucket=storage.bucket, region=storage.region,
                           endpoint=storage.endpoint, access_key_id=storage.access_key_id,
                           access_key_secret=storage.access_key_secret)
    return destination_for(target, dict(config.storage_endpoints), config.storage_root, config.spool_root,
                           config.spool_max_bytes)


async def check_callback_url(config: NodeConfig, url: str) -> None:
    """Refuse callbacks into link-local / cloud-metadata networks (configurable)."""
    host = urllib.parse.urlsplit(url).hostname if url else None
    if not host or not config.callback_deny:
        return
    denied = [ipaddress.ip_network(n, strict=False) for n in config.callback_deny]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}
    except (OSError, ValueError):
        return  # unresolvable now: delivery will fail and be retried, nothing is reached
    if any(address in network for address in addresses for network in denied):
        raise errors.InvalidParameter("RecordOutputParams.CallbackUrl points into a network this node refuses")
