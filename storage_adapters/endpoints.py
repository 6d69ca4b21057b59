"""Where the buckets of the S3-protocol vendors are: the object stores besides
Amazon S3 that the S3 adapter (storage_adapters/s3.py) serves, with where each
one's endpoint is, how buckets are addressed on it and which region requests are
signed for (SigV4, which all of them accept); and the rule that puts Vendor 10's
bucket in the host name where its EndPoint needs that.

| Vendor | endpoint from Region (published pattern) | addressing | signed for |
|---|---|---|---|
| 3 Tencent COS | `cos.<Region>.myqcloud.com` | virtual-hosted | Region |
| 4 Qiniu Kodo | `s3.<Region>.qiniucs.com` (`cn-east-1`; zone ids `z0` ... `as0` too) | virtual-hosted | Region |
| 7 Huawei OBS | `obs.<Region>.myhuaweicloud.com` | virtual-hosted | Region |
| 8 Google Cloud Storage | `storage.googleapis.com` (XML API, HMAC keys; Region not needed) | path | `auto` |
| 9 China Mobile EOS | `eos-<Region>.cmecloud.cn` (`wuxi-1`, or its location name `wuxi1`) | path | `us-east-1` |

EOS signs as rclone's ChinaMobile provider does (it names no region); GCS takes
`auto` for the HMAC/SigV4 scope. A bucket name with a dot is addressed by path
on every vendor (a dotted host name breaks the TLS certificate's wildcard).

A caller's EndPoint replaces the endpoint made from Region (a region the table
does not know, a private or accelerated domain) and keeps the vendor's
addressing. The node's endpoint override (a test server, a gateway) routes the
requests only, path-style; FileUrl keeps the vendor's public form. None of these
vendors accept boto3's default trailing checksums: they are sent only when an
operation requires them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from contract.storage import StorageTarget
from storage_adapters.base import StorageError

REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def normalize_endpoint(endpoint: str) -> str:
    """`https://` added when no scheme is given; no trailing slash."""
    endpoint = endpoint.strip().rstrip("/")
    if "://" not in endpoint:
        endpoint = "https://" + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StorageError(f"EndPoint {endpoint!r} is not an http(s) URL")
    return endpoint


def quote_key(key: str) -> str:
    return quote(key, safe="/~-._")


@dataclass(frozen=True)
class S3Vendor:
    code: int
    name: str
    host: Callable[[str], str]  # the endpoint's host for a (normalized) Region
    virtual_hosted: bool  # the bucket in the host name (else in the path)
    region_example: str = ""  # "": Region is not needed
    normalize_region: Callable[[str], str] = lambda region: region
    signing_region: Callable[[str], str] = lambda region: region

    def region(self, given: str) -> str:
        """The Region as this vendor names it; StorageError naming the vendor when it is
        needed and missing, or is not a region name."""
        region = self.normalize_region(given.strip().lower())
        if not region and self.region_example:
            raise StorageError(f"Vendor {self.code} ({self.name}) needs Region, e.g. {self.region_example}")
        if region and not REGION.match(region):
            raise StorageError(f"{self.name}: Region {given!r} is not a region name")
        return region


# Kodo's zone ids (its native SDKs' names) -> its S3 region ids
KODO_ZONES = {"z0": "cn-east-1", "z1": "cn-north-1", "z2": "cn-south-1", "na0": "us-north-1",
              "as0": "ap-southeast-1"}


def _eos_region(region: str) -> str:
    """`wuxi1` (EOS's location name) and `eos-wuxi-1` are `wuxi-1`; `yunnan` stays."""
    region = region.removeprefix("eos-")
    return re.sub(r"^([a-z]+)(\d+)$", r"\1-\2", region)


VENDORS: dict[int, S3Vendor] = {
    3: S3Vendor(3, "Tencent COS", lambda r: f"cos.{r}.myqcloud.com", True, "ap-guangzhou",
                normalize_region=lambda r: r.removeprefix("cos.")),
    4: S3Vendor(4, "Qiniu Kodo", lambda r: f"s3.{r}.qiniucs.com", True, "cn-east-1",
                normalize_region=lambda r: KODO_ZONES.get(r, r)),
    7: S3Vendor(7, "Huawei OBS", lambda r: f"obs.{r}.myhuaweicloud.com", True, "cn-north-4"),
    8: S3Vendor(8, "Google Cloud Storage", lambda r: "storage.googleapis.com", False,
                signing_region=lambda r: "auto"),
    9: S3Vendor(9, "China Mobile EOS", lambda r: f"eos-{r}.cmecloud.cn", False, "wuxi-1",
                normalize_region=_eos_region, signing_region=lambda r: "us-east-1"),
}


# Vendor 10: EndPoint domains whose services take only virtual-hosted requests (the
# bucket in the host name). Alibaba Cloud OSS answers path-style ones with
# SecondLevelDomainForbidden; Tencent COS refuses them for buckets made since 2020.
VIRTUAL_HOSTED_DOMAINS = ("aliyuncs.com", "myqcloud.com")
# The hosted service's example of Vendor 10 on OSS names its Region `oss-<region>`.
OSS_REGION_PREFIX = "oss-"


def needs_virtual_host(endpoint: str, region: str) -> bool:
    """Whether a Vendor 10 bucket must be addressed in the host name: its EndPoint is
    under a domain that requires that, or its Region names an OSS region."""
    host = (urlsplit(endpoint).hostname or "").lower()
    return (any(host == domain or host.endswith("." + domain) for domain in VIRTUAL_HOSTED_DOMAINS)
            or region.strip().lower().startswith(OSS_REGION_PREFIX))


@dataclass(frozen=True)
class Addressing:
    """How the S3 adapter reaches one bucket of one of these vendors."""

    endpoint_url: str | None  # where requests go (None: the SDK's own endpoint for the region)
    style: str  # boto3's addressing_style: "virtual" or "path"
    region: str  # signed for
    url_prefix: str  # FileUrl of a key is this + the quoted key


def public_prefix(endpoint: str, bucket: str, virtual: bool) -> str:
    """An object's URL without its key, on `endpoint` (an http(s) URL without a trailing '/')."""
    if virtual:
        parts = urlsplit(endpoint)
        return f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}/"
    return f"{endpoint}/{quote_key(bucket)}/"


def addressing(vendor: S3Vendor, target: StorageTarget, endpoint_override: str | None) -> Addressing:
    """Where requests for `target` go, how, signed for what, and its FileUrl prefix."""
    region = vendor.region(target.region)
    endpoint = normalize_endpoint(target.endpoint) if target.endpoint else f"https://{vendor.host(region)}"
    virtual = vendor.virtual_hosted and "." not in target.bucket
    url_prefix = public_prefix(endpoint, target.bucket, virtual)
    if endpoint_override:
        return Addressing(normalize_endpoint(endpoint_override), "path", vendor.signing_region(region), url_prefix)
    return Addressing(endpoint, "virtual" if virtual else "path", vendor.signing_region(region), url_prefix)
