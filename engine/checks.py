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
    try:
        adapter = adapter_for(storage_target(config, request), dict(config.storage_endpoints))
        await asyncio.to_thread(probe, adapter, request.output.output_folder)
    except StorageAccessDenied:
        raise errors.InvalidParameter(
            "StorageParams: the bucket refused the credentials (AccessKeyId / AccessKeySecret)") from None
    except StorageNotFound:
        raise errors.InvalidParameter("StorageParams.Bucket: no such bucket") from None
    except StorageUnavailable:
        raise errors.InvalidParameter(
            "StorageParams: the bucket cannot be reached (Region / EndPoint)") from None
    except StorageError as error:
        raise errors.InvalidParameter(f"StorageParams: {error}") from None


def storage_target(config: NodeConfig, request: models.StartRecordRequest) -> StorageTarget:
    s = request.storage
    root = str(config.storage_root) if s.vendor == LOCAL_DISK else None
    return StorageTarget(vendor=s.vendor, bucket=s.bucket, local_root=root, region=s.region,
                         endpoint=s.endpoint, access_key_id=s.access_key_id,
                         access_key_secret=s.access_key_secret)


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
