"""Request signatures: md5(AppId + SignatureNonce + ServerSecret + Timestamp), a
10-minute clock window, and a cache of nonces already used inside that window.

The nonce cache lives in memory (the check on the API's hot path) and is written
through to the store before the request is served, so a replay is refused after a
restart too: the store's entries are loaded when the API starts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from typing import Protocol

from engine import defaults, errors

# ASCII only: str.isdigit() and int() also take '²', '١' or '1_0'.
_APP_ID = re.compile(r"[0-9]{1,10}")
_TIMESTAMP = re.compile(r"[0-9]{1,%d}" % defaults.TIMESTAMP_MAX_DIGITS)
_NONCE = re.compile(r"[0-9A-Za-z]{1,64}")
_SIGNATURE = re.compile(r"[0-9A-Fa-f]{32}")
_UINT32_MAX = 2**32 - 1


def sign(app_id: int | str, nonce: str, secret: str, timestamp: int | str) -> str:
    return hashlib.md5(f"{app_id}{nonce}{secret}{timestamp}".encode()).hexdigest()


def signed_params(action: str, app_id: int, secret: str, timestamp: int | None = None,
                  nonce: str | None = None) -> dict[str, str]:
    """The query parameters of a signed API call, as a client sends them."""
    nonce = nonce or secrets.token_hex(8)
    timestamp = int(time.time() if timestamp is None else timestamp)
    return {"Action": action, "AppId": str(app_id), "SignatureNonce": nonce, "Timestamp": str(timestamp),
            "Signature": sign(app_id, nonce, secret, timestamp), "SignatureVersion": defaults.SIGNATURE_VERSION}


def signed_query(action: str, app_id: int, secret: str, timestamp: int | None = None) -> str:
    return urllib.parse.urlencode(signed_params(action, app_id, secret, timestamp))


class NonceStore(Protocol):
    """Where used nonces outlive the process (engine.store.AsyncStore)."""

    async def claim_nonce(self, nonce: str, seen_s: float, horizon_s: float) -> bool: ...

    async def nonces_since(self, since_s: float) -> list[tuple[str, float]]: ...

    async def forget_nonces_before(self, before_s: float) -> None: ...


class NonceCache:
    """Nonces seen within the signature window; a replay inside it is refused.

    Entries are kept twice the window: a timestamp may be up to one window in the
    future, so its nonce must stay remembered that much longer.
    """

    def __init__(self, window_s: int = defaults.SIGNATURE_WINDOW_S, max_entries: int = defaults.NONCE_CACHE_MAX,
                 store: NonceStore | None = None):
        self._window_s = window_s
        self._max_entries = max_entries
        self._store = store
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._pruned_at = float("-inf")

    async def load(self, now: float) -> None:
        """Take the nonces a previous run of the node used and still remembers."""
        if self._store is None:
            return
        for nonce, seen_at in await self._store.nonces_since(now - 2 * self._window_s):
            self._seen.setdefault(nonce, seen_at)
        await self._prune_store(now)

    def check_and_add(self, nonce: str, now: float) -> bool:
        self._expire(now)
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        if len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return True

    async def claim(self, nonce: str, now: float) -> bool:
        """False for a nonce already used, here or (with a store a fleet shares) on
        another node; otherwise it is remembered (durably, with a store) before this
        returns, so the request it signs can be served."""
        if not self.check_and_add(nonce, now):
            return False
        if self._store is not None:
            if not await self._store.claim_nonce(nonce, now, now - 2 * self._window_s):
                return False
            if now - self._pruned_at >= defaults.NONCE_PRUNE_INTERVAL_S:
                await self._prune_store(now)
        return True

    async def _prune_store(self, now: float) -> None:
        assert self._store is not None
        self._pruned_at = now
        await self._store.forget_nonces_before(now - 2 * self._window_s)

    def _expire(self, now: float) -> None:
        horizon = now - 2 * self._window_s
        while self._seen:
            nonce, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            self._seen.popitem(last=False)


class Authenticator:
    def __init__(self, app_id: int, secret: str, nonces: NonceCache | None = None, clock=time.time):
        self._app_id = app_id
        self._secret = secret
        self.nonces = nonces or NonceCache()
        self._clock = clock

    async def verify(self, query: Mapping[str, str]) -> None:
        """Raise the ApiError matching the first problem of the query's signature
        fields; a request that passes has used up its nonce."""
        now = self._clock()
        nonce = self.check(query, now)
        if not await self.nonces.claim(nonce, now):
            raise errors.SignatureInvalid("SignatureNonce already used")

    def check(self, query: Mapping[str, str], now: float) -> str:
        """Every check but the nonce's novelty; returns the nonce."""
        app_id_text = query.get("AppId", "")
        if not _APP_ID.fullmatch(app_id_text) or int(app_id_text) > _UINT32_MAX:
            raise errors.AppIdMalformed(f"AppId malformed: {app_id_text[:16]!r}")
        nonce = query.get("SignatureNonce", "")
        if not nonce:
            raise errors.NonceEmpty()
        timestamp_text = query.get("Timestamp", "")
        if not timestamp_text:
            raise errors.TimestampEmpty()
        if not _TIMESTAMP.fullmatch(timestamp_text):
            raise errors.TimestampMalformed("Timestamp malformed: must be Unix seconds in digits 0-9")
        signature = query.get("Signature", "")
        if not signature:
            raise errors.SignatureEmpty()
        version = query.get("SignatureVersion", "")
        if not version:
            raise errors.SignatureVersionEmpty()
        if version != defaults.SIGNATURE_VERSION:
            raise errors.SignatureVersionNotSupported(f"SignatureVersion {version[:16]!r} not supported")
        if abs(now - int(timestamp_text)) > defaults.SIGNATURE_WINDOW_S:
            raise errors.SignatureExpired()
        if not _NONCE.fullmatch(nonce):
            raise errors.SignatureInvalid("SignatureNonce malformed")
        if not _SIGNATURE.fullmatch(signature):
            raise errors.SignatureInvalid("Signature malformed: must be 32 hex digits")
        expected = sign(app_id_text, nonce, self._secret, timestamp_text)
        if int(app_id_text) != self._app_id or not hmac.compare_digest(expected, signature.lower()):
            raise errors.SignatureInvalid()
        return nonce
