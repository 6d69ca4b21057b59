"""Signed links to the node's own recordings (Vendor 0), served by /recordings/.

A file's URL is stored unsigned (`<base>/recordings/<Bucket>/<key>`) and signed
each time it is handed out (DescribeRecordStatus, callbacks, the console):
`?Expires=<unix seconds>&Signature=<hex>`, an HMAC-SHA256 over the expiry, the
bucket and the key with a key derived from the node's ServerSecret (so a link
says nothing about the secret, and rotating the secret revokes every link).
Expiries are rounded up to the minute: links handed out within the same minute
are the same link (players and caches see one URL).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config import NodeConfig

ROUTE = "/recordings/"
EXPIRY_ROUNDING_S = 60
_KEY_LABEL = b"recnode recording links v1"


@dataclass(frozen=True)
class RecordingUrls:
    base_url: str  # the node as clients reach it, no trailing '/'
    secret: str = field(repr=False)
    ttl_s: float
    clock: Callable[[], float] = time.time
    # the base URLs of the fleet's other nodes (engine.fleet): they share the ServerSecret,
    # so a link to a file on another node's disk is signed here as it would be there
    peers: Callable[[], Iterable[str]] = lambda: ()

    @classmethod
    def for_config(cls, config: NodeConfig) -> RecordingUrls:
        return cls(config.base_url, config.server_secret, config.recording_url_ttl_s)

    @property
    def _key(self) -> bytes:
        return hmac.new(self.secret.encode(), _KEY_LABEL, hashlib.sha256).digest()

    def url_of(self, bucket: str, key: str) -> str:
        """The stored (unsigned) URL of an object on the node's disk."""
        return f"{self.base_url}{ROUTE}{urllib.parse.quote(bucket, safe='')}/{urllib.parse.quote(key, safe='/')}"

    def signature(self, bucket: str, key: str, expires: int) -> str:
        message = f"{expires}\n{bucket}\n{key}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def query(self, bucket: str, key: str) -> str:
        """`Expires=..&Signature=..` for one object, valid for the TTL from now."""
        expires = math.ceil((self.clock() + self.ttl_s) / EXPIRY_ROUNDING_S) * EXPIRY_ROUNDING_S
        return urllib.parse.urlencode({"Expires": expires, "Signature": self.signature(bucket, key, expires)})

    def signed(self, url: str) -> str:
        """A URL as handed out: one of this node's recording URLs gets a fresh
        signature; any other (a bucket's FileUrl) is returned as it is."""
        object_ = self.object_of(url)
        if object_ is None:
            return url
        return f"{url}?{self.query(*object_)}"

    def object_of(self, url: str) -> tuple[str, str] | None:
        """(bucket, key) of an unsigned URL of this node's (or a fleet peer's) recordings; None for any other URL."""
        prefix = next((base + ROUTE for base in (self.base_url, *self.peers()) if url.startswith(base + ROUTE)), None)
        if prefix is None or "?" in url:
            return None
        bucket, slash, key = url[len(prefix):].partition("/")
        if not slash or not key:
            return None
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key)

    def allows(self, bucket: str, key: str, query: Mapping[str, str]) -> bool:
        """Whether a request's `Expires` and `Signature` grant `bucket`/`key` now."""
        expires, given = query.get("Expires", ""), query.get("Signature", "")
        if not (expires.isascii() and expires.isdigit()) or len(expires) > 12 or int(expires) < self.clock():
            return False
        return hmac.compare_digest(given.encode(), self.signature(bucket, key, int(expires)).encode())
