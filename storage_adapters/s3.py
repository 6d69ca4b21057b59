"""Vendor 1 Amazon S3, Vendor 10 any S3-protocol service, and Vendors 3 (Tencent
COS), 4 (Qiniu Kodo), 7 (Huawei OBS), 8 (Google Cloud Storage) and 9 (China
Mobile EOS) through their S3 endpoints, all with boto3.

Endpoints and addressing
------------------------
* Vendor 1: the region's AWS endpoint (virtual-hosted addressing, boto3's
  defaults, AWS's flexible checksums). A user EndPoint replaces it.
* Vendor 10: EndPoint is required; path-style addressing, except where the
  EndPoint needs the bucket in the host name (storage_adapters/endpoints.py:
  an OSS or COS domain, or a Region `oss-...` as in the hosted service's example).
* Vendors 3, 4, 7, 8, 9: the endpoint each vendor publishes for a Region, and its
  addressing and signing region (the table in storage_adapters/endpoints.py);
  a user EndPoint replaces the endpoint.
* An endpoint override (a node option, per vendor, for tests and gateways)
  replaces all of these and uses path-style addressing.
* Every endpoint that is not AWS's own gets ``request_checksum_calculation`` and
  ``response_checksum_validation`` = "when_required": S3-compatible servers
  reject boto3's default trailing checksums.

FileUrl (``url()``) is the vendor's public form and never shows an override:
``https://<bucket>.s3.<region>.amazonaws.com/<key>`` (path-style when the bucket
has a dot), ``<EndPoint>/<bucket>/<key>`` for Vendor 10 (and Vendor 1 with its
own EndPoint; ``https://<bucket>.<EndPoint host>/<key>`` where virtual-hosted),
and for the other vendors their bucket URL (e.g.
``https://<bucket>.cos.<region>.myqcloud.com/<key>``,
``https://storage.googleapis.com/<bucket>/<key>``).

Retries: one attempt per call; the node's uploader (storage_adapters/uploader.py)
retries with backoff. Timeouts: 5 s to connect, 30 s per read.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config

from contract.storage import StorageTarget
from storage_adapters.base import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
    content_type_for,
)
from storage_adapters.endpoints import (
    REGION,
    VENDORS,
    Addressing,
    addressing,
    needs_virtual_host,
    normalize_endpoint,
    public_prefix,
    quote_key,
)
from storage_adapters.errors import VendorStore, server_error
from storage_adapters.vendor_codes import S3_COMPATIBLE

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
MAX_ATTEMPTS = 1  # total attempts per call: no retry in this layer

_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def _client(**kwargs):
    """A new S3 client from one shared session (clients are thread-safe, the
    session's client() is not; sharing it loads the service model once)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client("s3", **kwargs)


class S3Store(VendorStore):
    def __init__(self, bucket: str, *, region: str, access_key_id: str, access_key_secret: str,
                 endpoint_url: str | None = None, addressing_style: str = "auto", aws_checksums: bool = True,
                 url_prefix: str, name: str = "S3"):
        if not access_key_id or not access_key_secret:
            raise StorageAccessDenied(f"{name}: AccessKeyId and AccessKeySecret are required")
        if not bucket:
            raise StorageNotFound(f"{name}: Bucket is empty")
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.name = f"{name} bucket {bucket!r}"
        self._url_prefix = url_prefix
        self._credentials = (access_key_secret, access_key_id)
        checksums = "when_supported" if aws_checksums else "when_required"
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},  # the uploader retries
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
            ignore_configured_endpoint_urls=True,  # AWS_ENDPOINT_URL* must not redirect users' data
            tcp_keepalive=True,
        )
        try:
            self._s3 = _client(region_name=region, endpoint_url=endpoint_url, aws_access_key_id=access_key_id,
                               aws_secret_access_key=access_key_secret, aws_session_token=None, config=config)
        except (boto_errors.BotoCoreError, ValueError) as error:
            raise self._unusable(f"cannot create client: {error}") from None

    def __repr__(self) -> str:
        return f"S3Store({self.name} at {self.endpoint_url or 'AWS ' + self.region})"

    def _translate(self, error: Exception, where: str) -> StorageError | None:
        if isinstance(error, boto_errors.ClientError):
            details = error.response.get("Error", {}) or {}
            return server_error(where, str(details.get("Code", "") or ""),
                                error.response.get("ResponseMetadata", {}).get("HTTPStatusCode"),
                                str(details.get("Message", "") or ""))
        if isinstance(error, (boto_errors.ConnectionError, boto_errors.HTTPClientError,
                              boto_errors.IncompleteReadError)):
            return StorageUnavailable(f"{where}: {type(error).__name__}: {error}")
        if isinstance(error, (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError)):
            return StorageAccessDenied(f"{where}: {error}")
        if isinstance(error, boto_errors.ParamValidationError):
            return StorageError(f"{where}: invalid parameter: {error}")
        if isinstance(error, boto_errors.BotoCoreError):
            return StorageError(f"{where}: {type(error).__name__}: {error}")
        return None

    # ObjectStore
    def begin(self, key: str) -> str:
        response = self._call("begin multipart upload of", key,
                              lambda: self._s3.create_multipart_upload(
                                  Bucket=self.bucket, Key=key, ContentType=content_type_for(key)))
        return response["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        response = self._call(f"upload part {number} of", key, lambda: self._s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(data)))
        return response["ETag"]

    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        listing = {"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in parts]}
        self._call("complete multipart upload of", key, lambda: self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload=listing))

    def abort(self, key: str, upload_id: str) -> None:
        self._call("abort multipart upload of", key, lambda: self._s3.abort_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id))

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self._s3.put_object(Bucket=self.bucket, Key=key, Body=bytes(data),
                                                           ContentType=content_type_for(key)))

    def head(self, key: str) -> int | None:
        try:
            response = self._call("head", key, lambda: self._s3.head_object(Bucket=self.bucket, Key=key))
        except StorageNotFound as missing:
            if missing.vendor_code == "NoSuchBucket":
                raise
            # HEAD answers a missing key and a missing bucket alike (404, no body): ask the bucket
            try:
                self._call("head bucket of", key, lambda: self._s3.head_bucket(Bucket=self.bucket))
            except StorageAccessDenied:
                pass  # not allowed to list: the key is what is missing
            except StorageNotFound as no_bucket:
                raise StorageNotFound(f"{self.name} does not exist ({no_bucket})") from None
            return None
        return int(response["ContentLength"])

    def _get_range(self, key: str, first: int, last: int) -> tuple[bytes, str | None]:
        response = self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={first}-{last}")
        return response["Body"].read(), response.get("ContentRange")

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self._s3.delete_object(Bucket=self.bucket, Key=key))

    def url(self, key: str) -> str:
        return self._url_prefix + quote_key(key)


def _check_region(region: str, vendor_name: str) -> str:
    if not REGION.match(region):
        raise StorageError(f"{vendor_name}: Region {region!r} is not a region name")
    return region


def s3_addressing(target: StorageTarget, endpoint_override: str | None = None) -> tuple[Addressing, bool]:
    """Vendors 1 (Amazon S3) and 10 (any S3-protocol service, EndPoint required): where
    requests go (None: AWS's own endpoint for the region), how, signed for what, the
    FileUrl prefix; and whether AWS's checksums apply. No I/O."""
    if target.vendor == S3_COMPATIBLE:
        if not target.endpoint:
            raise StorageError("Vendor 10 (S3-compatible) needs EndPoint")
        endpoint = normalize_endpoint(target.endpoint)
        region = target.region.strip() or "us-east-1"
        virtual = needs_virtual_host(endpoint, region)
        style = "path" if endpoint_override or not virtual else "virtual"
        return Addressing(normalize_endpoint(endpoint_override or endpoint), style, region,
                          public_prefix(endpoint, target.bucket, virtual)), False
    region = _check_region(target.region.strip() or "us-east-1", "Amazon S3")
    if target.endpoint:
        endpoint = normalize_endpoint(target.endpoint)
        aws = urlsplit(endpoint).hostname.endswith(".amazonaws.com")
        url_prefix = (f"https://{target.bucket}.{urlsplit(endpoint).netloc}/" if aws and "." not in target.bucket
                      else f"{endpoint}/{quote_key(target.bucket)}/")
    else:
        endpoint, aws = None, True
        url_prefix = (f"https://s3.{region}.amazonaws.com/{quote_key(target.bucket)}/" if "." in target.bucket
                      else f"https://{target.bucket}.s3.{region}.amazonaws.com/")
    if endpoint_override:
        return Addressing(normalize_endpoint(endpoint_override), "path", region, url_prefix), False
    return Addressing(endpoint, "auto" if aws else "path", region, url_prefix), aws


def s3_url_prefix(target: StorageTarget) -> str:
    """Vendors 1 and 10: FileUrl of a key is this + the quoted key (no I/O)."""
    return s3_addressing(target)[0].url_prefix


def s3_store(target: StorageTarget, endpoint_override: str | None = None) -> S3Store:
    """Vendor 1 (Amazon S3) and Vendor 10 (any S3-protocol service, EndPoint required)."""
    where, aws_checksums = s3_addressing(target, endpoint_override)
    return S3Store(target.bucket, region=where.region, endpoint_url=where.endpoint_url, addressing_style=where.style,
                   aws_checksums=aws_checksums, url_prefix=where.url_prefix,
                   name="S3-compatible" if target.vendor == S3_COMPATIBLE else "Amazon S3",
                   access_key_id=target.access_key_id, access_key_secret=target.access_key_secret)


def vendor_url_prefix(target: StorageTarget) -> str:
    """Vendors 3, 4, 7, 8 and 9: FileUrl of a key is this + the quoted key (no I/O)."""
    return addressing(VENDORS[target.vendor], target, None).url_prefix


def vendor_store(target: StorageTarget, endpoint_override: str | None = None) -> S3Store:
    """Vendors 3, 4, 7, 8 and 9 through their S3 endpoints (storage_adapters/endpoints.py)."""
    vendor = VENDORS[target.vendor]
    where = addressing(vendor, target, endpoint_override)
    return S3Store(target.bucket, region=where.region, endpoint_url=where.endpoint_url, addressing_style=where.style,
                   aws_checksums=False, url_prefix=where.url_prefix, name=vendor.name,
                   access_key_id=target.access_key_id, access_key_secret=target.access_key_secret)
