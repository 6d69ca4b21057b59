"""Vendor 2: Alibaba Cloud OSS, with oss2 (signature V1, oss2's default Auth).

Endpoint: an override (node option) > StorageParams.EndPoint >
``https://oss-<Region>.aliyuncs.com`` (Region given as ``cn-hangzhou`` or
``oss-cn-hangzhou``). oss2 addresses a bucket virtual-hosted
(``<bucket>.<endpoint host>``) except on an IP or localhost endpoint, where it
uses path style (``<endpoint>/<bucket>/<key>``); an override is always path
style.

FileUrl: ``https://<bucket>.oss-<region>.aliyuncs.com/<key>`` when Region is
given, else virtual-hosted on EndPoint; never the override.

oss2 checks the CRC-64 the server returns for put and each part. Timeouts:
5 s to connect, 30 s per read; oss2 does not retry single requests.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import oss2
import oss2.exceptions as oss_errors
import requests

from contract.storage import StorageTarget
from storage_adapters.base import (
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
    content_type_for,
)
from storage_adapters.errors import VendorStore, server_error
from storage_adapters.s3 import normalize_endpoint, quote_key

TIMEOUT = (5, 30)  # requests' (connect, read); oss2 hands it through
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema)


class OssStore(VendorStore):
    def __init__(self, bucket: str, *, endpoint: str, access_key_id: str, access_key_secret: str,
                 url_prefix: str, is_path_style: bool = False):
        self.name = f"Alibaba Cloud OSS bucket {bucket!r}"
        if not access_key_id or not access_key_secret:
            raise StorageAccessDenied(f"{self.name}: AccessKeyId and AccessKeySecret are required")
        self.bucket_name = bucket
        self.endpoint = endpoint
        self._url_prefix = url_prefix
        self._credentials = (access_key_secret, access_key_id)
        try:
            self._bucket = oss2.Bucket(oss2.Auth(access_key_id, access_key_secret), endpoint, bucket,
                                       connect_timeout=TIMEOUT, is_path_style=is_path_style,
                                       session=oss2.Session(), enable_crc=True)
        except oss_errors.OssError as error:
            raise self._unusable(error.body or error) from None

    def __repr__(self) -> str:
        return f"OssStore({self.name} at {self.endpoint})"

    def _translate(self, error: Exception, where: str) -> StorageError | None:
        if isinstance(error, oss_errors.RequestError):
            return self._transport_error(error.exception, where)
        if isinstance(error, (requests.exceptions.RequestException, OSError)):  # raised while oss2 reads a response
            return self._transport_error(error, where)
        if isinstance(error, oss_errors.InconsistentError):
            return StorageUnavailable(f"{where}: {error.body}")
        if isinstance(error, oss_errors.ClientError):
            return StorageError(f"{where}: {error.body}")
        if isinstance(error, oss_errors.OssError):  # ServerError and everything the server answered
            return server_error(where, error.code or "", error.status, error.message or "", error.request_id or "")
        return None

    @staticmethod
    def _transport_error(cause: BaseException, where: str) -> StorageError:
        kind = StorageError if isinstance(cause, _BAD_URL) else StorageUnavailable
        return kind(f"{where}: {type(cause).__name__}: {cause}")

    # ObjectStore
    def begin(self, key: str) -> str:
        result = self._call("begin multipart upload of", key, lambda: self._bucket.init_multipart_upload(
            key, headers={"Content-Type": content_type_for(key)}))
        return result.upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        result = self._call(f"upload part {number} of", key,
                            lambda: self._bucket.upload_part(key, upload_id, number, bytes(data)))
        return result.etag

    def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        infos = [oss2.models.PartInfo(number, etag) for number, etag in parts]
        self._call("complete multipart upload of", key,
                   lambda: self._bucket.complete_multipart_upload(key, upload_id, infos))

    def abort(self, key: str, upload_id: str) -> None:
        self._call("abort multipart upload of", key, lambda: self._bucket.abort_multipart_upload(key, upload_id))

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self._bucket.put_object(
            key, bytes(data), headers={"Content-Type": content_type_for(key)}))

    def head(self, key: str) -> int | None:
        try:
            result = self._call("head", key, lambda: self._bucket.head_object(key))
        except StorageNotFound as missing:
            if missing.vendor_code == "NoSuchBucket":
                raise
            return None  # OSS names the missing thing (x-oss-err): NoSuchKey
        return int(result.content_length)

    def _get_range(self, key: str, first: int, last: int) -> tuple[bytes, str | None]:
        # "standard": a range past the end is refused (416), not answered with the whole object
        result = self._bucket.get_object(key, byte_range=(first, last), headers={"x-oss-range-behavior": "standard"})
        return result.read(), result.headers.get("Content-Range")

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self._bucket.delete_object(key))

    def url(self, key: str) -> str:
        return self._url_prefix + quote_key(key)


def _is_ip(host: str) -> bool:
    return bool(re.match(r"^[0-9.]+$", host)) or host.startswith("[") or host == "localhost"


def _oss_endpoint(target: StorageTarget) -> tuple[str, str]:
    """(the endpoint requests go to, the region or "")."""
    region = target.region.strip().removeprefix("oss-")
    if region and not _REGION.match(region):
        raise StorageError(f"Alibaba Cloud OSS: Region {target.region!r} is not a region name")
    if target.endpoint:
        return normalize_endpoint(target.endpoint), region
    if region:
        return f"https://oss-{region}.aliyuncs.com", region
    raise StorageError("Vendor 2 (Alibaba Cloud OSS) needs Region (e.g. cn-hangzhou) or EndPoint")


def _url_prefix(bucket: str, endpoint: str, region: str) -> str:
    if region:
        return f"https://{bucket}.oss-{region}.aliyuncs.com/"
    parts = urlsplit(endpoint)
    return (f"{endpoint}/{quote_key(bucket)}/" if _is_ip(parts.hostname or "")
            else f"{parts.scheme}://{bucket}.{parts.netloc}/")


def oss_url_prefix(target: StorageTarget) -> str:
    """FileUrl of a key is this + the quoted key (no I/O)."""
    return _url_prefix(target.bucket, *_oss_endpoint(target))


def oss_store(target: StorageTarget, endpoint_override: str | None = None) -> OssStore:
    endpoint, region = _oss_endpoint(target)
    url_prefix = _url_prefix(target.bucket, endpoint, region)
    if endpoint_override:
        return OssStore(target.bucket, endpoint=normalize_endpoint(endpoint_override), is_path_style=True,
                        url_prefix=url_prefix, access_key_id=target.access_key_id,
                        access_key_secret=target.access_key_secret)
    return OssStore(target.bucket, endpoint=endpoint, url_prefix=url_prefix, access_key_id=target.access_key_id,
                    access_key_secret=target.access_key_secret)
