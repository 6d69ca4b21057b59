"""The S3 family's errors (Amazon S3, Tencent COS, S3-compatible services and
Alibaba OSS, which reuses most of S3's codes): one classification of a bucket's
error answer into our StorageError types, and one call wrapper that translates a
vendor SDK's exceptions at the adapter's boundary."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TypeVar

from storage_adapters.base import (
    ObjectStore,
    StorageAccessDenied,
    StorageError,
    StorageNotFound,
    StorageUnavailable,
    UploadNotFound,
    redact,
)

T = TypeVar("T")

# The credentials are wrong, expired or not allowed this (S3's codes, then OSS's own).
DENIED_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled", "AccountProblem",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "InvalidSecurity", "RequestTimeTooSkewed",
    "InvalidObjectState",
    "SecurityTokenExpired", "InvalidSecurityToken", "UserDisable",
})
# The bucket is busy or failing: the same request may succeed later.
UNAVAILABLE_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "OperationAborted", "RequestLimitExceeded", "ServerBusy",
    "QpsLimitExceeded", "DownloadTrafficRateLimitExceeded",
})


def server_error(where: str, code: str, status: int | None, message: str = "", request_id: str = "") -> StorageError:
    """A bucket's error answer as one of our types. `where` names the store, the
    operation and the key; the vendor's code and HTTP status are kept on the error."""
    text = (f"{where}: {code or 'error'} (HTTP {status})" + (f": {message}" if message else "")
            + (f" [request {request_id}]" if request_id else ""))
    kind: type[StorageError]
    if code == "NoSuchUpload":
        kind = UploadNotFound
    elif code == "NoSuchBucket":
        kind = StorageNotFound
    elif code in DENIED_CODES or status == 403:
        kind = StorageAccessDenied
    elif code in UNAVAILABLE_CODES or (status is not None and (status >= 500 or status == 429)):
        kind = StorageUnavailable
    elif status == 404:
        kind = StorageNotFound
    else:
        kind = StorageError
    translated = kind(text)
    translated.vendor_code = code or None
    translated.http_status = status
    return translated


class VendorStore(ObjectStore):
    """An ObjectStore over a vendor's SDK. Every SDK call goes through `_call`, so
    only our StorageError types leave it, with the credentials redacted."""

    _credentials: tuple[str, ...] = ()  # redacted from every message

    def _call(self, operation: str, key: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as error:
            translated = self._translate(error, f"{self.name}: {operation} {key!r}")
            if translated is None:
                raise
        translated.args = (redact(str(translated), *self._credentials),)
        raise translated from None  # the vendor's exception (and its request) is not kept

    def read(self, key: str, start: int, length: int) -> tuple[bytes, int] | None:
        last = start + max(length, 1) - 1
        try:
            data, content_range = self._call("read", key, lambda: self._get_range(key, start, last))
        except StorageNotFound as missing:
            if missing.vendor_code == "NoSuchBucket":
                raise
            return None
        except StorageError as beyond:
            if beyond.http_status != 416:  # InvalidRange: `start` is at or past the object's end
                raise
            size = self.head(key)
            return None if size is None else (b"", size)
        # a ranged answer names the size ("bytes 0-99/1234"); a whole-object one is the object
        total = (content_range or "").rpartition("/")[2]
        return data[:length], int(total) if total.isdigit() else len(data)

    def _unusable(self, problem: object) -> StorageError:
        """The SDK refused to make a client (a malformed endpoint, say)."""
        return StorageError(redact(f"{self.name}: {problem}", *self._credentials))

    @abc.abstractmethod
    def _get_range(self, key: str, first: int, last: int) -> tuple[bytes, str | None]:
        """The SDK's ranged GET of bytes first..last (inclusive): the body and the
        answer's Content-Range."""

    @abc.abstractmethod
    def _translate(self, error: Exception, where: str) -> StorageError | None:
        """The SDK's `error` as one of ours (`where` starts its message); None for
        anything the SDK does not raise, which then propagates as the bug it is."""
